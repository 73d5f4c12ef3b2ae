"""How fast does the outbox send, against a plain aiosmtplib loop sending the same bytes?

    .venv/bin/python bench/outbound.py [--mails N] [--connections C] [--runs R] [--postgres [URL]]

Queues N order confirmations (default 5,000: N orders through
`orders.create_order`, untimed), then in the same run:

1. **ordermail**: `outbox.send_due` drains the outbox to an aiosmtpd sink —
   claim, render (templates, Babel, MIME), send over `--connections`
   connections, mark sent; every byte it sends is recorded.
2. **plain loop**: one aiosmtplib connection sending the recorded bytes, one
   `sendmail` after the other — the floor any sender pays for SMTP alone.

The store is a fresh SQLite file, or with --postgres a temporary schema on
that server (default postgresql://postgres@127.0.0.1:5432/test), dropped
afterwards. The sink runs in its own process (a no-op handler answering 250), so the
client side has a core to itself. With --runs R each side runs R times over
fresh rows (the best run counts). Prints a table and one JSON line
(`BENCH_JSON {...}`); the goal is ordermail ≥ 0.5× the plain loop.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import aiosmtplib  # noqa: E402

from daemon.orders import service as orders  # noqa: E402
from daemon.outbound import outbox, transports
from daemon.config import settings_from_dict  # noqa: E402
from daemon.store.models import OutboxMessage
from daemon.store.database import open_store
from daemonproc import free_port  # noqa: E402

GOAL = 0.5


def run_sink(port: int, ready) -> None:
    """aiosmtpd answering 250 to everything (its own process)."""
    from aiosmtpd.controller import Controller

    class NoOp:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    controller = Controller(NoOp(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


def queue_orders(store, settings, count: int, offset: int) -> None:
    for n in range(count):
        orders.create_order(store, settings, {
            "number": str(100000 + offset + n),
            "customer": {"name": f"Kundin Nummer {n} Müller", "email": f"kunde{offset + n}@example.org"},
            "items": [{"sku": "TK-1", "name": "Teekanne „Ostfriesland“", "quantity": 1, "unit_price": "24.90"},
                      {"sku": "TS-2", "name": "Teesieb", "quantity": 2, "unit_price": "4.50"}],
            "total": "33.90", "currency": "EUR", "payment_method": "bank_transfer", "locale": "de"})


def time_ordermail(store, settings, recorded: list) -> tuple[float, int, dict]:
    """Drain the outbox; returns (seconds, mails sent, seconds per phase)."""
    phases = {"claim": 0.0, "render": 0.0, "send": 0.0, "mark": 0.0}
    originals = {name: getattr(outbox, name) for name in ("claim_due", "prepare", "finish")}
    original_deliver = transports.SmtpTransport.deliver

    def timed(name, phase):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return originals[name](*args, **kwargs)
            finally:
                phases[phase] += time.perf_counter() - started
        return wrapper

    async def deliver(self, items):
        recorded.extend((mail.envelope_from, mail.recipient, mail.raw) for _, mail in items)
        started = time.perf_counter()
        try:
            return await original_deliver(self, items)
        finally:
            phases["send"] += time.perf_counter() - started

    outbox.claim_due, outbox.prepare, outbox.finish = (timed("claim_due", "claim"), timed("prepare", "render"),
                                                       timed("finish", "mark"))
    transports.SmtpTransport.deliver = deliver
    try:
        started = time.perf_counter()
        sent = outbox.send_due(store, settings)
        return time.perf_counter() - started, sent, phases
    finally:
        for name, function in originals.items():
            setattr(outbox, name, function)
        transports.SmtpTransport.deliver = original_deliver


async def plain_loop(port: int, mails: list) -> float:
    """One connection, one sendmail after the other: SMTP and nothing else."""
    started = time.perf_counter()
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, local_hostname="shop.example")
    await smtp.connect()
    for sender, recipient, raw in mails:
        await smtp.sendmail(sender, [recipient], raw)
    await smtp.quit()
    return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--postgres", nargs="?", const="postgresql://postgres@127.0.0.1:5432/test", default="",
                        metavar="URL", help="run on a temporary schema of this PostgreSQL server")
    args = parser.parse_args(argv)
    if args.postgres:
        with temporary_schema(args.postgres) as url:
            return bench(args, url)
    return bench(args, "")


@contextlib.contextmanager
def temporary_schema(server: str):
    import psycopg2
    schema = f"bench_outbound_{secrets.token_hex(4)}"

    def run(sql: str) -> None:
        conn = psycopg2.connect(server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()
    run(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server}{'&' if '?' in server else '?'}options={quote(f'-c search_path={schema}')}"
    finally:
        run(f"DROP SCHEMA {schema} CASCADE")


def bench(args, url: str) -> int:

    port = free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=run_sink, args=(port, ready), daemon=True)
    sink.start()
    ready.wait(10)
    folder = tempfile.mkdtemp(prefix="ordermail-bench-")
    url = url or f"sqlite:///{folder}/bench.db"
    settings = settings_from_dict({
        "shop": {"name": "Teeladen am Deich", "address": "orders@shop.example",
                 "base_url": "https://shop.example/status", "locale": "de"},
        "owner": {"addresses": ["owner@shop.example"], "secret": "bench-secret-0123456789"},
        "database": {"url": url},
        "outbound": {"mode": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port,
                     "smtp_connections": args.connections, "maildir": f"{folder}/outbox"}})
    store = open_store(url)
    try:
        best_ours, best_plain, phases_best, size = None, None, None, 0
        for run in range(args.runs):
            print(f"run {run + 1}: queueing {args.mails} orders …", file=sys.stderr)
            queue_orders(store, settings, args.mails, run * args.mails)
            recorded: list = []
            seconds, sent, phases = time_ordermail(store, settings, recorded)
            assert sent == args.mails, f"sent {sent} of {args.mails}"
            assert OutboxMessage.select().where(OutboxMessage.state != "sent").count() == 0
            plain = asyncio.run(plain_loop(port, recorded))
            size = sum(len(raw) for *_, raw in recorded) // len(recorded)
            if best_ours is None or seconds < best_ours:
                best_ours, phases_best = seconds, phases
            best_plain = plain if best_plain is None else min(best_plain, plain)
    finally:
        store.close()
        sink.terminate()

    ours_rate, plain_rate = args.mails / best_ours, args.mails / best_plain
    ratio = ours_rate / plain_rate
    print()
    print(f"{'sender':34} {'mails':>6} {'seconds':>8} {'mails/s':>8}")
    print(f"{'ordermail outbox (' + str(args.connections) + ' connections)':34} {args.mails:>6} "
          f"{best_ours:>8.2f} {ours_rate:>8.0f}")
    print(f"{'plain aiosmtplib loop (1 conn.)':34} {args.mails:>6} {best_plain:>8.2f} {plain_rate:>8.0f}")
    print(f"ratio {ratio:.2f}× (goal ≥ {GOAL}×) — {'met' if ratio >= GOAL else 'NOT met'}; "
          f"average mail {size} bytes; backend {store.backend}")
    print("ordermail time by phase (claim and render overlap with send): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in phases_best.items()))
    print("BENCH_JSON " + json.dumps({
        "bench": "outbound", "mails": args.mails, "connections": args.connections, "backend": store.backend,
        "avg_bytes": size, "ordermail_seconds": round(best_ours, 3), "plain_seconds": round(best_plain, 3),
        "ordermail_per_s": round(ours_rate, 1), "plain_per_s": round(plain_rate, 1), "ratio": round(ratio, 3),
        "goal": GOAL, "met": ratio >= GOAL,
        "phases_seconds": {k: round(v, 3) for k, v in phases_best.items()}, "cpus": os.cpu_count()}))
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
