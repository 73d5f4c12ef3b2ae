"""Round trips to the database per customer reply, PostgreSQL beside SQLite.

    .venv/bin/python bench/pg_roundtrips.py [--replies 200] [--burst 20] [--postgres URL]

A store with one order (a fresh SQLite file; a temporary schema on the
PostgreSQL server, dropped afterwards). `--replies` 2 KB customer replies
reach the spool as the SMTP door hands them over, `--burst` at a time
(senders on separate connections, answered by one group commit), then the
inbound worker handles them as in a worker process: claim, parse, route,
the event, the owner's forward in the outbox, the message marked done.

Counted: every statement the store sends (`tests/roundtrips.py`: each
`cursor.execute`, BEGIN, COMMIT and SAVEPOINT included). On PostgreSQL each
is one round trip (peewee runs the connection in autocommit and sends
BEGIN and COMMIT as statements). Per reply, amortised over the run: the
door's group commit and the worker's claims and transactions cover several
replies each, so a burst of one costs more per reply than a burst of twenty.
Timed: the whole ingest, wall clock, from the first put to the last reply
on its order (in-process, loopback server: the round trips cost least here;
across a network each adds 0.2–1 ms). The last line is `BENCH_JSON {…}`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from roundtrips import StatementCount  # noqa: E402
from smtp_ingest import fresh_store, reply  # noqa: E402

from daemon import inbound  # noqa: E402
from daemon.intake.spool import Spool  # noqa: E402
from daemon.store import Event  # noqa: E402

GOAL_PG = 6


def ingest(store, to: str, settings, replies: int, burst: int) -> dict:
    """Spool `replies` in bursts, handle them; the statements counted at each end and the seconds."""
    count = StatementCount(store.db)
    start = time.perf_counter()
    with count.counting():
        spool = Spool(store)

        async def send():
            for first in range(0, replies, burst):
                await asyncio.gather(*[spool.put(reply(to, 2048, n), channel="smtp", envelope_from="erika@example.org",
                                                 recipients=[to]) for n in range(first, min(first + burst, replies))])
        asyncio.run(send())
        spool.close()
        door = count.total
        while inbound.process_pending(store, settings):
            pass
    seconds = time.perf_counter() - start
    handled = Event.select().where(Event.kind == "customer_reply").count()
    if handled != replies:
        raise SystemExit(f"bench: {handled} of {replies} replies reached their order")
    return {"backend": store.backend, "replies": replies, "burst": burst,
            "door_per_reply": round(door / replies, 2), "worker_per_reply": round((count.total - door) / replies, 2),
            "per_reply": round(count.total / replies, 2), "kinds": count.kinds(),
            "seconds": round(seconds, 3), "replies_per_s": round(replies / seconds, 1)}


def run(url: str, args) -> dict:
    store, settings, to = fresh_store(url, Path(tempfile.mkdtemp(prefix="ordermail-bench-out-")))
    try:
        return ingest(store, to, settings, args.replies, args.burst)
    finally:
        store.close()


def run_postgres(url: str, args) -> dict:
    schema = f"bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        return run(f"{url}{'&' if '?' in url else '?'}options={quote(f'-c search_path={schema}')}", args)
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=200)
    parser.add_argument("--burst", type=int, default=20, help="replies handed to the spool at once (default 20)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ordermail-bench-rt-") as folder:
        rows.append(run(f"sqlite:///{folder}/bench.db", args))
    rows.append(run_postgres(args.postgres, args))
    print(f"{args.replies} replies of 2 KB, {args.burst} at a time; load average {os.getloadavg()[0]:.2f}")
    print(f"{'backend':11} {'door':>6} {'worker':>7} {'per reply':>10} {'replies/s':>10}  statements")
    for r in rows:
        print(f"{r['backend']:11} {r['door_per_reply']:>6} {r['worker_per_reply']:>7} {r['per_reply']:>10} "
              f"{r['replies_per_s']:>10}  {r['kinds']}")
    pg = rows[-1]["per_reply"]
    print(f"goal on PostgreSQL ≤ {GOAL_PG} round trips per reply: {'met' if pg <= GOAL_PG else 'NOT met'} ({pg})")
    print("BENCH_JSON " + json.dumps({"goal_pg": GOAL_PG, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
