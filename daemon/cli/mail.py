"""`ordermail outbox …` and `ordermail jobs …`: the outbound mail and the scheduler by hand.

    outbox list [--state pending|sending|sent|failed] [--limit N] [--format table|json]
    outbox retry ID                  send a failed (or waiting) mail again now
    jobs list [--format table|json]
    jobs run NAME [--now ISO-8601]   run one job as if the clock said so

`cli/main.py` adds these with `add_parsers(sub, common, parser_class)` and
dispatches through `HANDLERS`; errors are raised as daemon.errors types and
become exit codes in `cli.main`.
"""
from __future__ import annotations

import datetime as dt
import json

from daemon import jobs, user_numbers
from daemon.outbound import outbox
from daemon.errors import InputError
from daemon.store.models import OutboxMessage


def add_parsers(sub, common, parser_class) -> None:
    box = sub.add_parser("outbox", parents=[common], help="mail to send and mail sent").add_subparsers(
        dest="outbox_command", required=True, parser_class=parser_class)
    lst = box.add_parser("list", parents=[common], help="outbox messages, newest first")
    lst.add_argument("--state", choices=outbox.STATES)
    lst.add_argument("--limit", type=user_numbers.argument(1, user_numbers.MAX_COUNT), default=50)
    lst.add_argument("--format", choices=("table", "json"), default="table")
    retry = box.add_parser("retry", parents=[common], help="send a failed or waiting message again now")
    retry.add_argument("id", type=user_numbers.argument())

    job = sub.add_parser("jobs", parents=[common], help="the scheduled jobs").add_subparsers(
        dest="jobs_command", required=True, parser_class=parser_class)
    jlist = job.add_parser("list", parents=[common], help="jobs, their schedule and last run")
    jlist.add_argument("--format", choices=("table", "json"), default="table")
    run = job.add_parser("run", parents=[common], help="run one job once, now")
    run.add_argument("name", help=", ".join(j.name for j in jobs.JOBS))
    run.add_argument("--now", metavar="ISO-8601", help="as if the clock said this (UTC unless a zone is given)")
    run.add_argument("--format", choices=("text", "json"), default="text")


def cmd_outbox_list(args, settings, store) -> int:
    return listing(args, outbox.list_rows, row_json, row_table)


def listing(args, rows_of, to_json, to_table) -> int:
    """`… list [--state S] [--limit N] [--format table|json]`: the rows `rows_of(state, limit)` gives."""
    rows = rows_of(args.state, args.limit)
    if args.format == "json":
        print(json.dumps({"messages": [to_json(r) for r in rows]}, ensure_ascii=False, indent=2))
    else:
        print(to_table(rows))
    return 0


def cmd_outbox_retry(args, settings, store) -> int:
    row = outbox.retry(store, args.id)
    print(f"outbox message {row.id} ({row.kind} to {row.recipient}) will be sent again now")
    return 0


def cmd_jobs_list(args, settings, store) -> int:
    rows = jobs.job_rows(settings, store)
    if args.format == "json":
        print(json.dumps({"jobs": rows}, ensure_ascii=False, indent=2))
        return 0
    lines = [f"{'NAME':16}  {'SCHEDULE':22}  {'LAST RUN':25}  {'STATUS':6}  RESULT"]
    for r in rows:
        schedule = r["schedule"] + (f" {r['timezone']}" if r["timezone"] and r["schedule"] != "off" else "")
        lines.append(f"{r['name']:16}  {schedule[:22]:22}  {r['last_run_at'] or 'never':25}  "
                     f"{r['last_status'] or '-':6}  {(r['last_result'] or '')[:60]}")
    print("\n".join(lines))
    return 0


def cmd_jobs_run(args, settings, store) -> int:
    now = parse_now(args.now)
    result, done = jobs.run_job_outcome(settings, store, args.name, now)
    if args.format == "json":
        print(json.dumps({"job": args.name, "now": now.isoformat() + "Z", "result": result, "done": done},
                         ensure_ascii=False))
    else:
        print(f"{args.name}: {result}")
    return 0


def parse_now(text: str | None) -> dt.datetime:
    """--now as naive UTC (how times are stored); without a zone it is read as UTC."""
    if not text:
        return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InputError(f"--now {text!r} is not an ISO-8601 time like 2026-12-01T07:00") from None
    if not NOW_RANGE[0] <= moment < NOW_RANGE[1]:      # jobs count days from it: keep away from year 9999
        raise InputError(f"--now must be a time from {NOW_RANGE[0]:%Y} to {NOW_RANGE[1].year - 1}, not {text!r}")
    return moment


NOW_RANGE = (dt.datetime(1970, 1, 1), dt.datetime(9000, 1, 1))


def row_json(row: OutboxMessage) -> dict:
    def iso(moment):
        return moment.isoformat(timespec="seconds") + "Z" if moment else None
    return {"id": row.id, "kind": row.kind, "recipient": row.recipient, "state": row.state,
            "order": row.order.number if row.order_id else None, "message_id": row.message_id,
            "attempts": row.attempts, "created_at": iso(row.created_at),
            "next_attempt_at": iso(row.next_attempt_at) if row.state in ("pending", "sending") else None,
            "sent_at": iso(row.sent_at), "last_error": row.last_error or None}


def row_table(rows: list[OutboxMessage]) -> str:
    if not rows:
        return "no messages"
    lines = [f"{'ID':>6}  {'CREATED':16}  {'STATE':8}  {'KIND':17}  {'ORDER':8}  {'TRIES':>5}  {'TO':30}  NOTE"]
    for r in rows:
        note = (f"next {r.next_attempt_at:%Y-%m-%d %H:%M}" if r.state == "pending" and r.attempts else "")
        note = f"{note}  {r.last_error}".strip() if r.last_error else note
        if r.state == "sent":
            note = f"sent {r.sent_at:%Y-%m-%d %H:%M}"
        lines.append(f"{r.id:>6}  {r.created_at:%Y-%m-%d %H:%M}  {r.state:8}  {r.kind[:17]:17}  "
                     f"{(r.order.number if r.order_id else '-'):8}  {r.attempts:>5}  {r.recipient[:30]:30}  "
                     f"{note[:80]}")
    return "\n".join(lines)


HANDLERS = {
    ("outbox", "list"): cmd_outbox_list,
    ("outbox", "retry"): cmd_outbox_retry,
    ("jobs", "list"): cmd_jobs_list,
    ("jobs", "run"): cmd_jobs_run,
}
