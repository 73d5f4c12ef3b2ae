"""The inbound worker's cost per customer reply, in-process, against a bare parse.

    .venv/bin/python bench/worker.py [--messages 2000] [--rounds 3] [--postgres URL]

Stores `--messages` 2 KB replies (as the SMTP door would), then times
`inbound.process_pending` handling them all: parse, route, trim, log the
event, queue the owner's forward, mark the mail done. The baseline, in the
same run and process, is the stdlib parsing the same bytes
and reading its headers and text (`email.message_from_bytes`), with the
modern default policy and with compat32 — what any mail handler pays at
least. CPU time per reply, best of `--rounds` fresh databases: on a
shared machine the best round is the one least disturbed.

The ratio (handling ÷ bare parse) moves only when the code does; the
milliseconds move with the machine as well.
"""
from __future__ import annotations

import argparse
import email
import email.policy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from smtp_ingest import fresh_store, reply  # noqa: E402

from daemon.handling import inbound  # noqa: E402
from daemon.intake.spool import store_message  # noqa: E402
from daemon.store.models import Event


def handling_round(url: str, count: int) -> float:
    """CPU seconds per reply for the worker to handle `count` stored replies."""
    store, settings, to = fresh_store(url, Path(tempfile.mkdtemp(prefix="ordermail-bench-out-")))
    with store.atomic():
        for n in range(count):
            store_message(reply(to, 2048, n), channel="smtp", envelope_from="erika@example.org", recipients=[to])
    start = time.process_time()
    while inbound.process_pending(store, settings):
        pass
    seconds = time.process_time() - start
    handled = Event.select().where(Event.kind == "customer_reply").count()
    store.close()
    if handled != count:
        raise RuntimeError(f"{handled} of {count} replies reached their order")
    return seconds / count


def parse_round(count: int, policy) -> float:
    """CPU seconds per reply for the stdlib to parse the same bytes and read
    their text (the baseline)."""
    mails = [reply("orders+x@shop.example", 2048, n) for n in range(count)]
    start = time.process_time()
    for raw in mails:
        message = email.message_from_bytes(raw, policy=policy)
        for header in ("From", "To", "Subject", "Message-ID"):
            str(message[header])
        message.get_payload(decode=True).decode()
    return (time.process_time() - start) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL database to use (emptied!) instead of SQLite")
    args = parser.parse_args()
    handling, modern, compat = [], [], []
    for _ in range(args.rounds):
        url = args.postgres or f"sqlite:///{tempfile.mkdtemp(prefix='ordermail-bench-')}/bench.db"
        handling.append(handling_round(url, args.messages))
        modern.append(parse_round(args.messages, email.policy.default))
        compat.append(parse_round(args.messages, email.policy.compat32))
    best, base, base32 = min(handling), min(modern), min(compat)
    print(f"worker: {best * 1000:.2f} ms CPU per 2 KB reply ({'PostgreSQL' if args.postgres else 'SQLite'}); "
          f"bare stdlib parse {base * 1000:.2f} ms (compat32 {base32 * 1000:.2f} ms); "
          f"ratio {best / base:.2f}× ({best / base32:.1f}× compat32)", flush=True)
    print(json.dumps({"bench": "worker", "messages": args.messages, "handling_ms": round(best * 1000, 3),
                      "bare_parse_ms": round(base * 1000, 3), "bare_parse_compat32_ms": round(base32 * 1000, 3),
                      "ratio": round(best / base, 2), "ratio_compat32": round(best / base32, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
