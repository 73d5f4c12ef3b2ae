"""What sharing the doors' message counts costs (daemon/intake/rates.py, shared_rates.py).

    .venv/bin/python bench/rates.py                  # SQLite, and PostgreSQL at ORDERMAIL_TEST_PG
    .venv/bin/python bench/rates.py --skip-postgres

Two figures, each beside a baseline from the same run:

- per message: `refusal` + `taken` (what MAIL FROM and the 250 cost) with
  the bookkeeping for the next exchange, against the same counting with that
  bookkeeping switched off (the counts in memory only, as before sharing);
- per exchange (every SHARE_SECONDS, in a thread beside the event loop):
  one `exchange` after K distinct senders and clients took a message each,
  against one `SELECT 1` round trip to the same database; and the exchange
  of a quiet interval (nothing taken: the read alone), on an empty table
  and after those bursts (the hour then holds their rows).

The last line, `BENCH_JSON {…}`, has every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from daemon.intake import shared_rates  # noqa: E402
from daemon.intake.connections import ExemptNetworks  # noqa: E402
from daemon.intake.rates import MessageRates  # noqa: E402
from daemon.store.database import open_store

PG_URL = os.environ.get("ORDERMAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
KEYS = (10, 100, 1000, 10000)
REPEAT = 5


class MemoryOnly(MessageRates):
    """The counts as before sharing: nothing kept for an exchange."""

    def _unshare(self, key, bucket, n):
        pass


def per_message(kind, messages: int = 200_000) -> float:
    """Microseconds for refusal + taken, the best of REPEAT runs."""
    best = float("inf")
    for _ in range(REPEAT):
        rates = kind(100, 1000, ExemptNetworks(()), ("owner@shop.example",))
        senders = [f"s{n}@example.org" for n in range(500)]
        started = time.perf_counter()
        for n in range(messages):
            sender = senders[n % 500]
            rates.refusal(sender, "192.0.2.7")
            rates.taken(sender, "192.0.2.7")
        best = min(best, (time.perf_counter() - started) / messages * 1e6)
    return best


def timed(work) -> float:
    """Milliseconds, the median of REPEAT runs."""
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def per_exchange(url: str) -> dict:
    store = open_store(url)
    shared_rates.bind(store)
    bucket = int(time.time() // 300)
    near = {"sender": 50, "client": 500}
    figures = {"select_1_ms": timed(lambda: store.db.execute_sql("SELECT 1").fetchall())}
    figures["quiet_exchange_ms"] = timed(lambda: shared_rates.exchange(store, {}, bucket - 12, near))
    for keys in KEYS:
        def one_interval(keys=keys):
            taken = {(f"sender k{n}-{secrets.token_hex(3)}@example.org", bucket): 1 for n in range(keys)}
            taken.update({(f"client 192.0.{n // 250}.{n % 250}", bucket): 1 for n in range(keys)})
            shared_rates.exchange(store, taken, bucket - 12, near)
        figures[f"exchange_{keys}_keys_ms"] = timed(one_interval)
    figures["hour_rows"] = shared_rates.MessageRate.select().count()
    figures["quiet_after_ms"] = timed(lambda: shared_rates.exchange(store, {}, bucket - 12, near))
    store.close()
    return figures


def pg_schema_url() -> tuple[str, callable]:
    schema = f"bench_{secrets.token_hex(4)}"
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE SCHEMA {schema}")

    def drop():
        conn.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()
    return f"{PG_URL}?options={quote(f'-c search_path={schema}')}", drop


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    result = {"load": os.getloadavg()[0]}
    result["memory_only_us"] = per_message(MemoryOnly)
    result["shared_us"] = per_message(MessageRates)
    print(f"per message: {result['shared_us']:.2f} µs with sharing's bookkeeping, "
          f"{result['memory_only_us']:.2f} µs memory only ({result['shared_us'] / result['memory_only_us']:.2f}x)")
    with tempfile.TemporaryDirectory() as folder:
        result["sqlite"] = per_exchange(f"sqlite:///{folder}/bench.db")
    if not args.skip_postgres:
        url, drop = pg_schema_url()
        try:
            result["postgresql"] = per_exchange(url)
        finally:
            drop()
    for backend in ("sqlite", "postgresql"):
        if backend not in result:
            continue
        figures = result[backend]
        base = figures["select_1_ms"]
        print(f"{backend}: SELECT 1 {base:.2f} ms; quiet exchange {figures['quiet_exchange_ms']:.2f} ms "
              f"({figures['quiet_exchange_ms'] / base:.1f}x)")
        for keys in KEYS:
            ms = figures[f"exchange_{keys}_keys_ms"]
            print(f"  {keys:>6} senders + {keys} clients since the last exchange: {ms:8.2f} ms "
                  f"({ms / base:.0f}x SELECT 1; {ms / (2 * keys) * 1000:.1f} µs per key)")
        print(f"  quiet exchange with {figures['hour_rows']} rows in the hour: {figures['quiet_after_ms']:.2f} ms")
    print("BENCH_JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
