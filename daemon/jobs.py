"""Scheduled jobs: plain functions of (settings, store, now), and the scheduler that runs them.

    outbox-retry       every minute: send what is due (the outbox worker does
                       the same continuously; this is the safety net, and the
                       way to send from the command line without a daemon)
    payment-reminders  daily at `[shop] jobs_time`: one reminder per unpaid order
    auto-cancel        daily at `[shop] jobs_time`: unpaid orders cancelled
                       (both: daemon/payments/schedule.py)
    retention          daily at `[shop] jobs_time`: cancelled orders deleted for
                       good, old raw mail pruned (daemon/store/retention.py)
    owner-digest       daily at `[owner] digest_time`: the orders that need
                       doing, and what the jobs above did since the last one
    paypal-ipn         every minute: verify the stored PayPal IPN messages that
                       are due (the first worker process does the same every
                       two seconds; this is the safety net, and the way to verify
                       without a daemon, when gunicorn alone takes them in)

Times are the server's local time. `ordermail jobs run NAME --now ISO` runs
one as if the clock said so. Each run is recorded (table job_run), and what
the daily jobs did is logged for the digest (job_log).

The daily jobs are run by one look, at once on start and then at the start
of every minute (`run_due`): each daily job whose last due time passed
without a run since runs once, in the order of `JOBS` — on time, and a run
missed while the daemon was down is caught up, but only one, however long
it was down. With several daemons on one database, each run first claims
its due time (`job_store.claim`): exactly one daemon runs it, and a run
whose daemon died, or whose store failed under it, is taken over by a
later look. The every-minute jobs are not claimed: every daemon runs them,
and that is safe because they only send and verify rows that each pass
claims for itself (with SKIP LOCKED and a lease).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Callable
from zoneinfo import ZoneInfo

import peewee as pw

from daemon.orders import filters, service as orders
from daemon.outbound import notify, outbox
from daemon.payments import paypal_verifier, schedule as payment_schedule
from daemon.store import job_runs as job_store, retention
from daemon.store.job_runs import Outcome
from daemon.store.claimants import claimant
from daemon.config import Settings
from daemon.errors import InputError
from daemon.store.models import INTERNAL_KINDS, Event, Order, utcnow
from daemon.store.database import STORE_TROUBLE, Store, first_line

log = logging.getLogger("ordermail.jobs")
SECTION_ROWS = 50
OUTBOX_RETRY_SECONDS = 60
PAYPAL_IPN_SECONDS = 60
DIGEST_FILTERS = (
    ("unpaid", "not paid and not cancelled"),
    ("to_ship", "paid and not shipped and not cancelled"),
)


# ---- the jobs ------------------------------------------------------------------------

def outbox_retry(settings: Settings, store: Store, now: dt.datetime) -> str:
    sent = outbox.send_due(store, settings, now)
    return f"{sent} mail(s) sent"


def paypal_ipn(settings: Settings, store: Store, now: dt.datetime) -> str:
    if not settings.paypal.receiver_email:
        return "PayPal IPN is off ([paypal] receiver_email is empty)"
    done = paypal_verifier.verify_due(store, settings, now)
    return f"{done.settled} PayPal message(s) settled" + (f"; {done.unreachable}" if done.unreachable else "")


def payment_reminders(settings: Settings, store: Store, now: dt.datetime) -> Outcome:
    return payment_schedule.send_reminders(settings, store, now, local_zone())


def auto_cancel(settings: Settings, store: Store, now: dt.datetime) -> Outcome:
    return payment_schedule.cancel_unpaid(settings, store, now, local_zone())


def owner_digest(settings: Settings, store: Store, now: dt.datetime) -> str:
    """Queue the owner's list of orders to do and of what the jobs did since the last
    digest; nothing when there is neither."""
    if not settings.owner.addresses:
        return "no [owner] addresses; no digest"
    sections = [s for s in (*(_filter_section(settings, key, expr, now) for key, expr in DIGEST_FILTERS),
                            _unanswered_section(settings, now)) if s["count"]]
    activity = jobs_activity(store, now)
    if not sections and not activity:
        return "nothing to do; no digest sent"
    with store.atomic():
        for owner in settings.owner.addresses:
            orders.queue_mail(settings, "owner_digest", owner, now=now,
                              data={"sections": sections, "activity": activity,
                                    "as_of": now.isoformat(timespec="minutes")})
    counts = ", ".join([f"{s['count']} {s['key']}" for s in sections]
                       + [f"{a['count']} {a['key']}" for a in activity])
    return f"digest queued for {len(settings.owner.addresses)} owner address(es): {counts}"


def jobs_activity(store: Store, now: dt.datetime) -> list[dict]:
    """What the daily jobs did since the last digest ran: per kind of change, the
    orders (the first SECTION_ROWS named) or a count — in the order of ACTIVITY."""
    job_store.bind(store)
    last = job_store.runs().get("owner-digest")
    merged: dict[str, list | int] = {}
    for entry in job_store.logged_since(last.last_run_at if last else None, now):
        for key, value in entry.details.items():
            merged[key] = merged.get(key, 0 if isinstance(value, int) else []) + value
    return [{"key": key, "count": value if isinstance(value, int) else len(value),
             "orders": [] if isinstance(value, int) else value[:SECTION_ROWS]}
            for key, value in sorted(merged.items(), key=lambda kv: ACTIVITY.index(kv[0]))
            if value]


ACTIVITY = ("reminded", "cancelled", "deleted", "kept", "raw_pruned")
SUMMARIES = {"reminded": "{n} payment reminder(s) sent", "cancelled": "{n} unpaid order(s) cancelled",
             "deleted": "{n} cancelled order(s) deleted for good", "kept": "{n} kept",
             "raw_pruned": "{n} raw mail(s) pruned"}


def describe(outcome: Outcome) -> str:
    """One line for `jobs list` and the log: counts, and the order numbers where few."""
    parts = []
    for key in ACTIVITY:
        value = outcome.done.get(key)
        if not value:
            continue
        text = SUMMARIES[key].format(n=value if isinstance(value, int) else len(value))
        if isinstance(value, list):
            text += ": " + ", ".join(value[:10]) + (" …" if len(value) > 10 else "")
        parts.append(text)
    return "; ".join(parts) or "nothing to do"


def _filter_section(settings: Settings, key: str, expr: str, now: dt.datetime) -> dict:
    found = filters.find_orders(expr, limit=SECTION_ROWS)
    return {"key": key, "filter": expr, "url": notify.dashboard_url(settings, expr),
            "count": filters.count_orders(expr) if len(found) == SECTION_ROWS else len(found),
            "orders": [_entry(o, now, o.paid_at if key == "to_ship" else o.created_at) for o in found]}


def _unanswered_section(settings: Settings, now: dt.datetime) -> dict:
    waiting = unanswered_replies()
    shown = waiting[:SECTION_ROWS]
    by_id = {o.id: o for o in Order.select().where(Order.id.in_([order_id for order_id, _ in shown]))}
    expr = " or ".join(f"number:{by_id[order_id].number}" for order_id, _ in shown if order_id in by_id)
    return {"key": "unanswered", "filter": expr, "count": len(waiting),
            "url": notify.dashboard_url(settings, expr) if expr else notify.dashboard_url(settings, ""),
            "orders": [_entry(by_id[order_id], now, asked) for order_id, asked in shown if order_id in by_id]}


def unanswered_replies() -> list[tuple[int, dt.datetime]]:
    """(order id, time of the customer's last reply) where no mail of the owner's
    followed that reply — oldest waiting first."""
    asked = dict(Event.select(Event.order, pw.fn.MAX(Event.created_at))
                 .where(Event.kind == "customer_reply").group_by(Event.order).tuples())
    if not asked:
        return []
    answered = dict(Event.select(Event.order, pw.fn.MAX(Event.created_at))
                    .where((Event.author == "owner") & (Event.notified == True) & Event.kind.not_in(INTERNAL_KINDS)  # noqa: E712
                           & Event.order.in_(list(asked)))
                    .group_by(Event.order).tuples())
    waiting = [(order_id, at) for order_id, at in asked.items()
               if order_id not in answered or answered[order_id] < at]
    return sorted(waiting, key=lambda pair: pair[1])


def _entry(order: Order, now: dt.datetime, since) -> dict:
    return {"number": order.number, "name": order.customer_name, "total": str(order.total),
            "currency": order.currency, "created": order.created_at.isoformat(timespec="minutes"),
            "age_days": max((now - order.created_at).days, 0),
            "since": (since or order.created_at).isoformat(timespec="minutes")}


# ---- the table of jobs ------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[Settings, Store, dt.datetime], str]
    daily_at: Callable[[Settings], str] | None = None   # "HH:MM" (or "" = off); None: every_seconds
    every_seconds: int = 0
    catch_up: bool = False

    def schedule(self, settings: Settings) -> str:
        if self.daily_at is None:
            return f"every {self.every_seconds} s"
        at = self.daily_at(settings)
        return f"daily at {at}" if at else "off"


# In this order: a catch-up on start runs the reminders before the cancellation,
# and both before the digest that reports them.
JOBS = (
    Job("outbox-retry", outbox_retry, every_seconds=OUTBOX_RETRY_SECONDS),
    Job("payment-reminders", payment_reminders, daily_at=lambda s: s.shop.jobs_time, catch_up=True),
    Job("auto-cancel", auto_cancel, daily_at=lambda s: s.shop.jobs_time, catch_up=True),
    Job("retention", retention.run, daily_at=lambda s: s.shop.jobs_time, catch_up=True),
    Job("owner-digest", owner_digest, daily_at=lambda s: s.owner.digest_time, catch_up=True),
    Job("paypal-ipn", paypal_ipn, every_seconds=PAYPAL_IPN_SECONDS),
)


def find_job(name: str) -> Job:
    for job in JOBS:
        if job.name == name:
            return job
    raise InputError(f"no job {name!r} (jobs: {', '.join(j.name for j in JOBS)})")


def run_job(settings: Settings, store: Store, name: str, now: dt.datetime | None = None) -> str:
    """Run one job as if the clock said `now` (naive UTC); record how it ended."""
    return run_job_outcome(settings, store, name, now)[0]


def run_job_outcome(settings: Settings, store: Store, name: str,
                    now: dt.datetime | None = None) -> tuple[str, dict]:
    """`run_job`, with what the run did by kind of change (`Outcome.done`; {} for the others)."""
    job, now = find_job(name), now or utcnow()
    job_store.bind(store)
    try:
        result = job.run(settings, store, now)
    except Exception as exc:
        job_store.record(name, now, "error", f"{type(exc).__name__}: {exc}")
        raise
    done = {}
    if isinstance(result, Outcome):
        done, result = {k: v for k, v in result.done.items() if v}, describe(result)
        if done:
            with store.atomic():
                job_store.log_run(name, now, result, done)
    job_store.record(name, now, "ok", result)
    log.info("job %s: %s", name, result, extra={"job": name})
    return result, done


def previous_due(job: Job, settings: Settings, now: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The last time (naive UTC) at or before `now` the daily job was due."""
    at = job.daily_at(settings) if job.daily_at else ""
    if not at:
        return None
    hour, minute = (int(part) for part in at.split(":"))
    local_now = now.replace(tzinfo=dt.timezone.utc).astimezone(tz)
    due = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due > local_now:
        due = (local_now - dt.timedelta(days=1)).replace(hour=hour, minute=minute, second=0, microsecond=0)
    return due.astimezone(dt.timezone.utc).replace(tzinfo=None)


def catch_up(settings: Settings, store: Store, now: dt.datetime, tz: dt.tzinfo) -> list[str]:
    """On start: a row for every job (a run is never due before its job was
    known here), then `run_due`."""
    job_store.bind(store)
    job_store.ensure([j.name for j in JOBS], now)
    return run_due(settings, store, now, tz)


def run_due(settings: Settings, store: Store, now: dt.datetime, tz: dt.tzinfo) -> list[str]:
    """Run once each daily job whose last due time passed without a run since,
    if this process claims that due time; returns the names of those run.

    A failing job is recorded and its run ends; a failing store ends the look,
    and the claims it left are taken up again by the next one."""
    job_store.bind(store)
    known, ran = job_store.runs(), []
    for job in JOBS:
        due = previous_due(job, settings, now, tz) if job.catch_up else None
        record = known.get(job.name)
        if due is None or record is None:
            continue
        if record.last_due_at == due:
            if not job_store.abandoned(record, now, claimant()):
                continue            # run, or being run by another daemon
        elif (record.last_run_at or record.created_at) >= due:
            continue                # run by hand since, or the job is newer than its due time
        if not job_store.claim(job.name, due, now):
            continue
        try:
            run_job(settings, store, job.name, now)
        except STORE_TROUBLE:
            raise
        except Exception:
            log.exception("job %s failed", job.name)
        job_store.finished(job.name, due)
        ran.append(job.name)
    return ran


def job_rows(settings: Settings, store: Store, tz: dt.tzinfo | None = None) -> list[dict]:
    """Each job with its schedule and last run, for `ordermail jobs list`."""
    job_store.bind(store)
    known = job_store.runs()
    rows = []
    for job in JOBS:
        record = known.get(job.name)
        rows.append({"name": job.name, "schedule": job.schedule(settings),
                     "timezone": str(tz or local_zone()) if job.daily_at else None,
                     "last_run_at": _iso(record.last_run_at) if record else None,
                     "last_status": (record.last_status or None) if record else None,
                     "last_result": (record.last_result or None) if record else None})
    return rows


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds") if moment else None


def local_zone() -> dt.tzinfo:
    import tzlocal   # comes with APScheduler
    try:
        return tzlocal.get_localzone()
    except Exception:   # no usable zone configured: the digest runs on UTC
        return ZoneInfo("UTC")


# ---- the scheduler ----------------------------------------------------------------------

class Scheduler:
    """APScheduler's BackgroundScheduler: the every-minute jobs, and the look
    for due daily jobs (`run_due`) at once and at the start of every minute."""

    def __init__(self, settings: Settings, store: Store, *, tz: dt.tzinfo | None = None):
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        self.settings, self.store, self.tz = settings, store, tz or local_zone()
        self._started = False
        self._scheduler = BackgroundScheduler(
            timezone=self.tz, executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 600})

    def start(self) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger
        for job in JOBS:
            if job.daily_at is None:
                self._scheduler.add_job(self._run, IntervalTrigger(seconds=job.every_seconds, timezone=self.tz),
                                        args=[job.name], id=job.name, name=job.name)
        # One APScheduler job for all daily jobs: never two looks at once in
        # this process (`job_store.abandoned` relies on it), and the jobs in order.
        self._scheduler.add_job(self._daily, CronTrigger(minute="*", timezone=self.tz), id="daily", name="daily",
                                next_run_time=dt.datetime.now(self.tz))
        self._scheduler.start()
        log.info("scheduler started: %s", ", ".join(f"{j.name} ({j.schedule(self.settings)})" for j in JOBS))

    def stop(self) -> None:
        """Wait for a running job to end, then stop."""
        if self._scheduler.running:
            self._wait_for_catch_up_to_be_handed_over()
            self._scheduler.shutdown(wait=True)

    def _wait_for_catch_up_to_be_handed_over(self, seconds: float = 5.0) -> None:
        """APScheduler removes a one-shot job just after handing it to a pool
        thread; stopped in between (a daemon stopped right after its start),
        that removal raises JobLookupError in its own thread, a traceback in
        the log. So the stop waits until the catch-up job has left the store."""
        deadline = time.monotonic() + seconds
        while self._scheduler.get_job("catch-up") is not None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self, name: str) -> None:
        try:
            run_job(self.settings, self.store, name, utcnow())
        except STORE_TROUBLE as exc:       # the database is away: its next use reconnects
            log.warning("job %s: the store failed: %s", name, first_line(exc))
        except Exception:
            log.exception("job %s failed", name)
        finally:
            self.store.db.close()   # this pool thread's connection

    def _daily(self) -> None:
        try:
            if self._started:
                run_due(self.settings, self.store, utcnow(), self.tz)
                return
            ran = catch_up(self.settings, self.store, utcnow(), self.tz)
            self._started = True
            if ran:
                log.info("caught up missed runs: %s", ", ".join(ran))
        except STORE_TROUBLE as exc:
            log.warning("daily jobs: the store failed: %s; looking again in a minute", first_line(exc))
        except Exception:
            log.exception("daily jobs: the look for due runs failed")
        finally:
            self.store.db.close()
