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
replies each, so a burst of one costs more per reply than a burst of twenty;
a second run has each reply arrive alone and be handled before the next
(an idle shop: nothing to share the fixed costs with).
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

from daemon.handling import inbound  # noqa: E402
from daemon.intake.spool import Spool  # noqa: E402
from daemon.store.models import Event

GOAL_PG = 6


def ingest(store, to: str, settings, replies: int, burst: int, alone: bool = False) -> dict:
    """Spool `replies` in bursts, handle them; the statements counted at each end and the seconds.
    `alone`: each reply handled before the next arrives (an idle shop: nothing to share the cost with)."""
    count = StatementCount(store.db)
    door = 0
    start = time.perf_counter()
    with count.counting():
        spool = Spool(store)

        async def send():
            nonlocal door
            for first in range(0, replies, burst):
                before = count.total
                await asyncio.gather(*[spool.put(reply(to, 2048, n), channel="smtp", envelope_from="erika@example.org",
                                                 recipients=[to]) for n in range(first, min(first + burst, replies))])
                door += count.total - before
                while alone and inbound.process_pending(store, settings):
                    pass
        asyncio.run(send())
        spool.close()
        while inbound.process_pending(store, settings):
            pass
    seconds = time.perf_counter() - start
    handled = Event.select().where(Event.kind == "customer_reply").count()
    if handled != replies:
        raise SystemExit(f"bench: {handled} of {replies} replies reached their order")
    return {"backend": store.backend, "replies": replies, "burst": 1 if alone else burst, "alone": alone,
            "door_per_reply": round(door / replies, 2), "worker_per_reply": round((count.total - door) / replies, 2),
            "per_reply": round(count.total / replies, 2), "kinds": count.kinds(),
            "seconds": round(seconds, 3), "replies_per_s": round(replies / seconds, 1)}


def run(url_for, args) -> list[dict]:
    """Both ways of arriving, each on a fresh store (`url_for(n)`: the n-th's URL)."""
    rows = []
    for n, (burst, alone) in enumerate(((args.burst, False), (1, True))):
        store, settings, to = fresh_store(url_for(n), Path(tempfile.mkdtemp(prefix="ordermail-bench-out-")))
        try:
            rows.append(ingest(store, to, settings, args.replies, burst, alone))
        finally:
            store.close()
    return rows


def run_postgres(url: str, args) -> list[dict]:
    schema = f"bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        url = f"{url}{'&' if '?' in url else '?'}options={quote(f'-c search_path={schema}')}"
        return run(lambda _n: url, args)       # fresh_store empties it
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
        rows += run(lambda n: f"sqlite:///{folder}/bench{n}.db", args)
    rows += run_postgres(args.postgres, args)
    print(f"{args.replies} replies of 2 KB; load average {os.getloadavg()[0]:.2f}")
    print(f"{'backend':11} {'arriving':18} {'door':>6} {'worker':>7} {'per reply':>10} {'replies/s':>10}  statements")
    for r in rows:
        how = "one, handled alone" if r["alone"] else f"{r['burst']} at a time"
        print(f"{r['backend']:11} {how:18} {r['door_per_reply']:>6} {r['worker_per_reply']:>7} {r['per_reply']:>10} "
              f"{r['replies_per_s']:>10}  {r['kinds']}")
    pg = next(r for r in rows if r["backend"] == "postgresql" and not r["alone"])["per_reply"]
    print(f"goal on PostgreSQL ≤ {GOAL_PG} round trips per reply, {args.burst} at a time: "
          f"{'met' if pg <= GOAL_PG else 'NOT met'} ({pg})")
    print("BENCH_JSON " + json.dumps({"goal_pg": GOAL_PG, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
