"""SMTP ingest: `ordermail serve` against aiosmtpd's no-op sink, in the same run.

    .venv/bin/python bench/smtp_ingest.py [--messages 2000] [--quick] [--only 2k50|memory]

For 2 KB and 143 KB replies over 1, 10 and 50 connections it prints the
acknowledged messages per second for the sink and for ordermail, their
ratio, the p50/p99 time from the end of DATA to the 250, and for ordermail
the end-to-end rate (replies visible on their order). Then one 25 MB mail:
the daemon's peak RSS growth as a multiple of the message size. Goals (2 KB,
50 connections): ratio ≥ 0.5, p99 ≤ 30 ms, end-to-end ≥ 1,000 msg/s;
25 MB: growth ≤ 4×. Everything runs on 127.0.0.1 and stops by itself.

The client is the bench's own: a plain asyncio SMTP session, one command
at a time as any MTA without PIPELINING. "End of DATA" is the moment the
message and its final dot are handed to the kernel; the row also shows the
p99 from the DATA command on, which includes the 354 round trip (what
aiosmtplib's `data()` timed, and these figures until 2026-11-27).
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from daemonproc import Daemon, free_port, wait_for_port  # noqa: E402

from daemon.mail import tokens  # noqa: E402
from daemon.orders import service as orders
from daemon.mail.addresses import token_address  # noqa: E402
from daemon.config import settings_from_dict  # noqa: E402
from daemon.store.models import Event, InboundMessage
from daemon.store.database import open_store

SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class NoOp:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
c = Controller(NoOp(), hostname="127.0.0.1", port=int(sys.argv[1]), data_size_limit=0)
c.start()
sys.stdin.read()
c.stop()
"""


def fresh_store(url: str, maildir: Path):
    """A store with one order (a PostgreSQL one emptied first); the settings; the order's reply address."""
    settings = settings_from_dict({
        "database": {"url": url}, "shop": {"address": "orders@shop.example"},
        "owner": {"addresses": ["owner@shop.example"], "secret": "bench-secret-0000000"},
        "outbound": {"maildir": str(maildir)}})
    store = open_store(url)
    if store.backend == "postgresql":
        store.db.execute_sql("TRUNCATE orders, inbound_message, outbox_message RESTART IDENTITY CASCADE")
    order = orders.create_order(store, settings, {
        "number": "1042", "customer": {"name": "Erika", "email": "erika@example.org"},
        "items": [{"name": "Teekanne", "quantity": 1, "unit_price": "24.90"}], "total": "24.90",
        "currency": "EUR", "payment_method": "bank_transfer", "locale": "de"}, quiet=True)
    return store, settings, token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())


def reply(to: str, size: int, n: int) -> bytes:
    head = (f"From: Erika <erika@example.org>\r\nTo: {to}\r\nSubject: Re: Bestellung\r\n"
            f"Message-ID: <bench-{n}-{time.monotonic_ns()}@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nDanke, das passt so.\r\n\r\n").encode()
    line = b"> " + b"q" * 74 + b"\r\n"
    return head + line * max(0, (size - len(head)) // len(line))


async def load(port: int, to: str, size: int, total: int, connections: int,
               message: bytes | None = None) -> tuple[float, list[float], list[float]]:
    """Send `total` messages (replies of `size`, or `message`) over `connections` sessions;
    (seconds, end of DATA → 250 latencies, DATA command → 250 latencies)."""
    from_data_end: list[float] = []
    from_data_command: list[float] = []
    counter = iter(range(total))

    async def session():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await _reply(reader, "220")
            await _command(reader, writer, b"EHLO bench.example\r\n", "250")
            for n in counter:
                data = _dot_stuffed(message or reply(to, size, n))
                await _command(reader, writer, b"MAIL FROM:<erika@example.org>\r\n", "250")
                await _command(reader, writer, f"RCPT TO:<{to}>\r\n".encode(), "250")
                command_sent = time.perf_counter()
                await _command(reader, writer, b"DATA\r\n", "354")
                writer.write(data)
                await writer.drain()
                data_ended = time.perf_counter()        # the final dot is with the kernel
                await _reply(reader, "250")
                from_data_end.append(time.perf_counter() - data_ended)
                from_data_command.append(time.perf_counter() - command_sent)
            await _command(reader, writer, b"QUIT\r\n", "221")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(session() for _ in range(connections)))
    return time.perf_counter() - start, from_data_end, from_data_command


async def _command(reader, writer, line: bytes, expected: str) -> None:
    writer.write(line)
    await _reply(reader, expected)


async def _reply(reader, expected: str) -> None:
    """Read one reply (all its lines); anything but the expected code stops the run."""
    while True:
        line = (await reader.readline()).decode("ascii", "replace")
        if not line[:3] == expected:
            raise RuntimeError(f"expected {expected}, got {line.strip() or 'the connection closed'}")
        if line[3:4] != "-":
            return


def _dot_stuffed(message: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends, leading dots doubled, the final dot."""
    body = re.sub(rb"\r?\n", b"\r\n", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", body) + b".\r\n"


def run_load(port, to, size, total, connections, message=None):
    return asyncio.run(load(port, to, size, total, connections, message))


def memory_row(daemon: Daemon, to: str, name: str, big: bytes) -> dict:
    """One big mail into fresh processes: the peak RSS growth of the daemon and its worker."""
    daemon.stop()                      # fresh processes: their peaks are this mail's alone
    daemon.start()
    time.sleep(3)                      # the worker process is up and idle
    pids = [daemon.process.pid, *daemon.worker_pids()]
    rss_before = {pid: current_rss(pid) for pid in pids}
    run_load(daemon.smtp_port, to, len(big), 1, 1, message=big)
    while InboundMessage.select().where(InboundMessage.state.in_(["new", "processing"])).exists():
        time.sleep(0.05)
    # Peaks of the daemon and of its worker process, added up: an upper
    # bound, as the two need not peak at the same moment.
    growth = [peak_rss(pid) - rss_before[pid] for pid in pids]
    print(f"25 MB {name} reply: peak RSS growth {sum(growth) / 2**20:.0f} MB "
          f"({' + '.join(f'{g / 2**20:.0f}' for g in growth)} MB: daemon + worker process) "
          f"= {sum(growth) / len(big):.2f}× its size (goal ≤ 4×)", flush=True)
    return {"size": len(big), "mail": name, "peak_rss_growth_x": round(sum(growth) / len(big), 2),
            "per_process_mb": [round(g / 2**20) for g in growth]}


def photo_reply(to: str, size: int) -> bytes:
    """A short reply with a photo attached, `size` bytes in all (base64 lines)."""
    head = (f"From: Erika <erika@example.org>\r\nTo: {to}\r\nSubject: Re: Bestellung\r\n"
            f"Message-ID: <bench-photo-{time.monotonic_ns()}@example.org>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain; charset=utf-8\r\n\r\nDas Foto vom Schaden.\r\n--b\r\n"
            'Content-Type: image/jpeg; name="schaden.jpg"\r\nContent-Transfer-Encoding: base64\r\n\r\n').encode()
    line = b"/9j/" + b"A" * 72 + b"\r\n"
    return head + line * ((size - len(head) - 8) // len(line)) + b"--b--\r\n"


def warm_up(port: int, sink_port: int, to: str, count: int = 300) -> None:
    """Some mail through both before measuring: the worker processes have
    started (their imports would take the cores from the first run, the
    sink's included), and caches hold what they hold in steady operation."""
    run_load(sink_port, to, 2048, count, 10)
    before = replies_on_orders()
    run_load(port, to, 2048, count, 10)
    while replies_on_orders() < before + count:
        time.sleep(0.05)


def replies_on_orders() -> int:
    return Event.select().where(Event.kind == "customer_reply").count()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def start_sink() -> tuple[subprocess.Popen, int]:
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE)
    wait_for_port(port)
    return sink, port


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def current_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per 2 KB run")
    parser.add_argument("--quick", action="store_true", help="small runs, for a smoke test")
    parser.add_argument("--only", choices=("2k50", "memory"), help="just the goal row, or just the 25 MB mail")
    args = parser.parse_args()
    small = 300 if args.quick else args.messages
    large = 60 if args.quick else max(200, args.messages // 8)
    folder = Path(tempfile.mkdtemp(prefix="ordermail-bench-"))
    url = f"sqlite:///{folder}/bench.db"
    _store, _settings, to = fresh_store(url, folder / "outbox")
    daemon = Daemon(folder, url, max_message_bytes=30_000_000).start()   # room for the 25 MB mails
    sink, sink_port = start_sink()
    rows = []
    try:
        warm_up(daemon.smtp_port, sink_port, to)
        runs = [(size, total, connections) for size, total in ((2048, small), (146_432, large))
                for connections in (1, 10, 50)]
        if args.only:
            runs = [(2048, small, 50)] if args.only == "2k50" else []
        for size, total, connections in runs:
            sink_seconds, sink_lat, sink_from_command = run_load(sink_port, to, size, total, connections)
            before = replies_on_orders()
            start = time.perf_counter()
            om_seconds, om_lat, om_from_command = run_load(daemon.smtp_port, to, size, total, connections)
            while replies_on_orders() < before + total:
                time.sleep(0.05)   # the measuring must not take the cores it measures
            e2e = time.perf_counter() - start
            rows.append({"size": size, "connections": connections, "messages": total,
                         "sink_msg_s": round(total / sink_seconds), "ordermail_msg_s": round(total / om_seconds),
                         "ratio": round(sink_seconds / om_seconds, 2),
                         "p50_ms": round(percentile(om_lat, 0.5), 1), "p99_ms": round(percentile(om_lat, 0.99), 1),
                         "sink_p99_ms": round(percentile(sink_lat, 0.99), 1),
                         "p99_from_data_command_ms": round(percentile(om_from_command, 0.99), 1),
                         "sink_p99_from_data_command_ms": round(percentile(sink_from_command, 0.99), 1),
                         "end_to_end_msg_s": round(total / e2e)})
            print(_row(rows[-1]), flush=True)
        if args.only != "2k50":
            for name, big in (("photo", photo_reply(to, 25 * 2**20)), ("text", reply(to, 25 * 2**20, 0))):
                rows.append(memory_row(daemon, to, name, big))
    finally:
        sink.stdin.close()
        sink.wait(10)
        daemon.stop()
    print(json.dumps({"bench": "smtp_ingest", "rows": rows}))
    return 0


def _row(r: dict) -> str:
    return (f"{r['size'] // 1024:>4} KB  {r['connections']:>2} conn  sink {r['sink_msg_s']:>6} msg/s  "
            f"ordermail {r['ordermail_msg_s']:>6} msg/s  ratio {r['ratio']:.2f}  "
            f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms (sink {r['sink_p99_ms']:.1f})  "
            f"end-to-end {r['end_to_end_msg_s']} msg/s  "
            f"[p99 from the DATA command {r['p99_from_data_command_ms']:.1f} ms, "
            f"sink {r['sink_p99_from_data_command_ms']:.1f}]")


if __name__ == "__main__":
    sys.exit(main())
