"""The outbox: queued mails delivered to the smarthost (or a maildir), with retries.

Rows are written by the domain service in the same transaction as their
event. Here they go out:

    pending ──claim──▶ sending ──250──▶ sent
       ▲                  │──4xx, no connection──▶ pending (backoff) … ▶ failed (gave up)
       └──lease expired───┘──5xx──▶ failed

- **Claim first.** A batch is taken in one transaction (`FOR UPDATE SKIP
  LOCKED` on PostgreSQL, the IMMEDIATE write lock on SQLite) and marked
  `sending` with a lease in `next_attempt_at`; a second worker never takes the
  same row. A lease that runs out means its worker died: the row is pending
  again.
- **At least once.** A crash after the server took a mail and before the row
  is marked sends it again after the lease — with the same Message-ID, fixed
  at queue time, so clients and our own threading see one mail. A claim
  names its worker (`claimed_by`, daemon/store/claimants.py): the rows of a worker
  that died on this host are handed out again as soon as the next worker
  starts here, without waiting for the lease.
- **Backoff.** A 4xx answer or no connection waits `retry_base_seconds`,
  doubling per attempt up to an hour (or the base, if larger); a 5xx answer
  is final. After `give_up_after_hours` the row fails, the order gets an
  internal `system` event and the owner an `owner_alert` (never an alert
  about an alert).
- **Rate limit.** At most `per_recipient_per_hour` mails to one address per
  hour; more wait for a free slot, so a loop can never flood anyone. The
  owner's addresses, which get every customer reply forwarded, have their
  own, higher `owner_per_hour`. Alerts (`owner_alert`: a mail that could not
  be delivered, a customer's address that bounced) are counted apart, each
  against a budget of the same size: a burst of forwarded replies never
  holds back the news that something failed.
- **A failing store** (PostgreSQL restarting) is waited for: marking a
  batch that went out, and giving back one claimed but not sent, are tried
  again until the store answers (up to half the lease in the worker), not
  left to the lease — a mail sent and not marked would go out twice.
- **SMTP**: aiosmtplib, STARTTLS or implicit TLS, AUTH, up to
  `smtp_connections` connections at once, kept open between batches; the
  next batch is claimed and rendered while the current one is sent.
  **Maildir**: tmp/ → new/ with fsync, the standard delivery, under a file
  name made from the Message-ID — so there a crash between delivery and
  marking does not even leave a second copy.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import peewee as pw

from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.outbound.transports import MaildirTransport, Result, SmtpTransport
from daemon.store.claimants import claimant, claimant_gone, this_host
from daemon.config import Settings
from daemon.errors import OrdermailError, Refused
from daemon.mail.mime import BadAddress
from daemon.orders.service import Content, Via
from daemon.store.models import OutboxMessage, newest, utcnow
from daemon.store.database import STORE_TROUBLE, Store, first_line

log = logging.getLogger("ordermail.outbox")
BATCH = 100
LEASE = dt.timedelta(minutes=15)
MAX_BACKOFF_SECONDS = 3600
HOUR = dt.timedelta(hours=1)
PATIENCE_SECONDS = 30.0           # a pass waits so long for a failing store to take its marks
WORKER_PATIENCE_SECONDS = LEASE.total_seconds() / 2    # the worker: it has nothing else to do meanwhile
STATES = ("pending", "sending", "sent", "failed")
ALERT_KINDS = frozenset({"owner_alert"})     # counted apart from other mail to the same address


class OutboxRowNotFound(OrdermailError):
    def __init__(self, row_id: int):
        super().__init__(f"no outbox message {row_id}")


# ---- one pass -----------------------------------------------------------------------

def send_due(store: Store, settings: Settings, now: dt.datetime | None = None) -> int:
    """Send every row due at `now` (naive UTC; None: the clock) once; returns how many were sent."""
    async def run() -> int:
        transport = make_transport(settings)
        try:
            return await send_due_async(store, settings, now, transport)
        finally:
            await transport.close()
    return asyncio.run(run())


async def send_due_async(store: Store, settings: Settings, now, transport, *, stopping=lambda: False,
                         executor: ThreadPoolExecutor | None = None, patience: float = PATIENCE_SECONDS) -> int:
    """Drain what is due, batch by batch; returns how many mails were sent.

    The next batch is claimed and rendered in `executor` (a thread of its own,
    with its own database connection) while the current one is being sent:
    rendering is CPU, sending mostly waiting for the server, so they overlap.
    `patience`: how long marking a batch and giving back a claimed one wait
    for a store that fails (see `_until_stored`).
    """
    loop = asyncio.get_running_loop()
    own = executor is None
    executor = executor or ThreadPoolExecutor(1, thread_name_prefix="outbox-render")

    def persist(work, *args):
        return _until_stored(work, *args, patience=patience, stopping=stopping)

    def take():
        moment = now or utcnow()
        batch = claim_due(store, settings, moment)
        if not batch:
            return None
        try:
            return (batch, *prepare(settings, batch, moment))
        except STORE_TROUBLE:
            persist(release, [row.id for row in batch])
            raise

    sent, upcoming = 0, None
    try:
        ready = await loop.run_in_executor(executor, take)
        while ready:
            batch, mails, results = ready
            delivering = asyncio.ensure_future(transport.deliver(mails))
            upcoming = None if stopping() else loop.run_in_executor(executor, take)
            results = results + await delivering
            sent += persist(finish, store, settings, batch, results, now or utcnow())
            ready, upcoming = (await _next_batch(upcoming) if upcoming else None), None
            if ready is None and not all(r.ok for r in results) and not stopping():
                # alerts the failures just queued
                ready = await _next_batch(loop.run_in_executor(executor, take))
    finally:
        if upcoming is not None:   # the pass broke off: hand the batch claimed meanwhile back
            taken = await asyncio.gather(upcoming, return_exceptions=True)   # failed: take gave it back
            if taken[0] and not isinstance(taken[0], BaseException):
                await loop.run_in_executor(executor, persist, release, [row.id for row in taken[0][0]])
        if own:
            await loop.run_in_executor(executor, store.db.close)
            executor.shutdown()
    return sent


async def _next_batch(taking):
    """The next batch taken; None when the store failed meanwhile: the pass
    ends with what it sent (and marked), and the next pass takes the rest."""
    try:
        return await taking
    except STORE_TROUBLE as exc:
        log.warning("outbox: the store failed (%s); the rest waits for the next pass", first_line(exc))
        return None


def _until_stored(work, *args, patience: float, stopping=lambda: False):
    """`work(*args)`, tried again while the store fails, for up to `patience` seconds.

    What went out must be marked, and what was claimed handed back: else it
    waits for its LEASE to run out, and a mail sent but not marked goes out
    a second time. While the store is away there is nothing else to do; each
    try reconnects (daemon/store/database.py). Given up on, it raises the store's error.
    """
    deadline = time.monotonic() + patience
    for attempt, pause in enumerate(itertools.chain((0.5, 1, 2), itertools.repeat(5))):
        try:
            return work(*args)
        except STORE_TROUBLE as exc:
            if time.monotonic() + pause > deadline or stopping():
                raise
            if attempt == 0:
                log.warning("outbox: the store failed (%s); keeps trying for up to %.0f s",
                            first_line(exc), patience)
            time.sleep(pause)
    raise AssertionError("unreachable")


def release(row_ids: list[int]) -> None:
    (OutboxMessage.update(state="pending", next_attempt_at=utcnow())
     .where(OutboxMessage.id.in_(row_ids) & (OutboxMessage.state == "sending")).execute())


def claim_due(store: Store, settings: Settings, now: dt.datetime, limit: int = BATCH) -> list[OutboxMessage]:
    """Take up to `limit` due rows for sending; rows over the rate limit are put off."""
    with store.atomic():
        _release_stale(now)
        query = (OutboxMessage.select()
                 .where((OutboxMessage.state == "pending") & (OutboxMessage.next_attempt_at <= now))
                 .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit))
        if store.backend == "postgresql":
            query = query.for_update(skip_locked=True)
        rows = _within_rate(settings, list(query), now)
        if rows:
            (OutboxMessage.update(state="sending", next_attempt_at=now + LEASE, claimed_by=claimant())
             .where(OutboxMessage.id.in_([r.id for r in rows])).execute())
    return rows


def release_dead_claims(store: Store) -> int:
    """Rows being sent by worker processes of this host that no longer run (a
    crash): pending again. Those that reached the server go out once more."""
    dead = [row.claimed_by for row in OutboxMessage.select(OutboxMessage.claimed_by).distinct()
            .where((OutboxMessage.state == "sending") & OutboxMessage.claimed_by.startswith(this_host()))
            if claimant_gone(row.claimed_by)]
    if not dead:
        return 0
    with store.atomic():
        return (OutboxMessage.update(state="pending", next_attempt_at=utcnow())
                .where((OutboxMessage.state == "sending") & OutboxMessage.claimed_by.in_(dead)).execute())


def _release_stale(now: dt.datetime) -> None:
    """A claim past its lease means its worker died: hand the row out again."""
    (OutboxMessage.update(state="pending")
     .where((OutboxMessage.state == "sending") & (OutboxMessage.next_attempt_at < now)).execute())


def _within_rate(settings: Settings, rows: list[OutboxMessage], now: dt.datetime) -> list[OutboxMessage]:
    if not rows:
        return rows
    recent = _sent_within_the_hour({r.recipient for r in rows}, now)
    taken, put_off = [], defaultdict(list)
    for row in rows:
        limit = (settings.outbound.owner_per_hour if settings.owner.is_owner_address(row.recipient)
                 else settings.outbound.per_recipient_per_hour)
        budget = _budget(row.recipient, row.kind)
        n, oldest = recent.setdefault(budget, [0, None])
        if n >= limit:
            put_off[max((oldest + HOUR) if oldest else now, now + dt.timedelta(minutes=1)), limit].append(row.id)
            continue
        recent[budget] = [n + 1, oldest or now]
        taken.append(row)
    for (until, limit), row_ids in put_off.items():
        _put_off(row_ids, until, limit)
    return taken


def _budget(recipient: str, kind: str) -> tuple[str, bool]:
    """What a mail counts against: its address's alerts, or all its other mail."""
    return recipient, kind in ALERT_KINDS


def _sent_within_the_hour(recipients: set[str], now: dt.datetime) -> dict[tuple[str, bool], list]:
    """Per budget (address, alerts or not): [mails sent within the hour or
    being sent, the oldest sending time].

    Two statements, each on an index that bounds it: the hour's mails by
    (recipient, sent_at), the ones being sent by state. One condition with
    OR would walk every mail ever sent to the address. Alerts are told apart
    by sums within each address's group: grouping by kind as well would
    lead SQLite's planner to an index by kind, over every mail ever sent."""
    recent: dict[tuple[str, bool], list] = {}
    alert = OutboxMessage.kind.in_(ALERT_KINDS)

    def oldest(of_alerts: bool):
        sent_at = pw.Case(None, [(alert, OutboxMessage.sent_at if of_alerts else None)],
                          None if of_alerts else OutboxMessage.sent_at)
        return pw.fn.MIN(sent_at).python_value(OutboxMessage.sent_at.python_value)
    sent = (OutboxMessage.select(OutboxMessage.recipient, pw.fn.COUNT(OutboxMessage.id).alias("n"),
                                 pw.fn.SUM(pw.Case(None, [(alert, 1)], 0)).alias("alerts"),
                                 oldest(False).alias("oldest"), oldest(True).alias("oldest_alert"))
            .where(OutboxMessage.recipient.in_(recipients) & (OutboxMessage.sent_at > now - HOUR)
                   & (OutboxMessage.state == "sent"))
            .group_by(OutboxMessage.recipient))
    for row in sent.objects():
        recent[row.recipient, False] = [row.n - row.alerts, row.oldest]
        recent[row.recipient, True] = [row.alerts, row.oldest_alert]
    sending = (OutboxMessage.select(OutboxMessage.recipient, pw.fn.COUNT(OutboxMessage.id).alias("n"),
                                    pw.fn.SUM(pw.Case(None, [(alert, 1)], 0)).alias("alerts"))
               .where((OutboxMessage.state == "sending") & OutboxMessage.recipient.in_(recipients))
               .group_by(OutboxMessage.recipient))
    for row in sending.objects():
        recent.setdefault((row.recipient, False), [0, None])[0] += row.n - row.alerts
        recent.setdefault((row.recipient, True), [0, None])[0] += row.alerts
    return recent


def _put_off(row_ids: list[int], until: dt.datetime, limit: int) -> None:
    """One statement per waiting address, not per row: a busy address (the
    owner's, in a burst of replies) would hold the one writer for each."""
    (OutboxMessage.update(next_attempt_at=until,
                          last_error=f"rate limit: {limit} mails to this address within an hour; waits")
     .where(OutboxMessage.id.in_(row_ids)).execute())


def prepare(settings: Settings, batch: list[OutboxMessage], now: dt.datetime):
    """Render each claimed row; a row that cannot be rendered gets its result at once."""
    mails, results = [], []
    loaded = notify.Batch(batch)
    for row in batch:
        try:
            mails.append((row.id, notify.render(settings, row, now, loaded)))
        except (BadAddress, notify.TemplateMissing) as exc:
            results.append(Result(row.id, False, True, f"cannot be composed: {exc}"))
        except STORE_TROUBLE:
            raise                 # the store's trouble, not the row's: the batch is given back
        except Exception as exc:  # a bug or a broken store: retried, and given up on in time
            log.exception("outbox %s: composing failed", row.id)
            results.append(Result(row.id, False, False, f"composing failed: {type(exc).__name__}: {exc}"))
    return mails, results


# ---- marking ----------------------------------------------------------------------------

def finish(store: Store, settings: Settings, batch: list[OutboxMessage], results: list[Result],
           now: dt.datetime) -> int:
    """Mark the batch in one transaction: sent, retried later, or failed (and told)."""
    by_id = {r.row_id: r for r in results}
    delivered = [row.id for row in batch if row.id in by_id and by_id[row.id].ok]
    with store.atomic():
        if delivered:    # one statement for all that went out: the common case stays cheap
            (OutboxMessage.update(state="sent", sent_at=now, last_error="", attempts=OutboxMessage.attempts + 1)
             .where(OutboxMessage.id.in_(delivered) & (OutboxMessage.state == "sending")).execute())
        for row in batch:
            result = by_id.get(row.id) or Result(row.id, False, False, "no answer before the batch deadline")
            row.attempts += 1
            if result.ok:
                continue
            if result.permanent:
                _fail(store, settings, row, result.error, now, gave_up=False)
            elif now >= deadline(settings, row):
                _fail(store, settings, row, result.error, now, gave_up=True)
            else:
                _mark(row, state="pending", last_error=result.error[:2000],
                      next_attempt_at=now + dt.timedelta(seconds=backoff(settings, row.attempts)))
    for result in results:
        if not result.ok:
            log.warning("outbox %s: %s", result.row_id, result.error, extra={"outbox_id": result.row_id})
    return len(delivered)


def _mark(row: OutboxMessage, **values) -> None:
    (OutboxMessage.update(attempts=row.attempts, **values)
     .where((OutboxMessage.id == row.id) & (OutboxMessage.state == "sending")).execute())


def backoff(settings: Settings, attempts: int) -> int:
    return doubling_backoff(settings.outbound.retry_base_seconds, attempts)


def doubling_backoff(base: int, attempts: int) -> int:
    """Seconds before the next try: `base`, doubling per attempt, up to an hour (or `base`, if larger)."""
    return min(base * 2 ** max(attempts - 1, 0), max(base, MAX_BACKOFF_SECONDS))


def deadline(settings: Settings, row: OutboxMessage) -> dt.datetime:
    """When retrying stops: hours after queueing — or after the owner's last `outbox retry`."""
    retried = (row.data or {}).get("retried_at")
    start = dt.datetime.fromisoformat(retried) if retried else row.created_at
    return start + dt.timedelta(hours=settings.outbound.give_up_after_hours)


def _fail(store: Store, settings: Settings, row: OutboxMessage, error: str, now: dt.datetime,
          *, gave_up: bool) -> None:
    """Final failure: the row, an internal event on the order, an alert to the owner."""
    why = (f"gave up after {row.attempts} attempts in {settings.outbound.give_up_after_hours} hours: {error}"
           if gave_up else error)
    _mark(row, state="failed", last_error=why[:2000])
    event_id = None
    if row.order_id is not None:
        change = orders.add_event(
            store, settings, row.order.number, "system",
            Content(subject=f"Mail not delivered: {row.kind} to {row.recipient}", text=why),
            via=Via(author="system", now=now),
            data={"reason": "undelivered", "outbox_id": row.id, "message_id": row.message_id,
                  "kind": row.kind, "recipient": row.recipient, "error": error[:500], "gave_up": gave_up})
        event_id = change.event_id
    if row.kind == "owner_alert":
        return   # an alert about an undelivered alert would only fail again
    for owner in settings.owner.addresses:
        if owner.lower() != row.recipient.lower():
            orders.queue_mail(settings, "owner_alert", owner, order=row.order if row.order_id else None,
                              event=event_id, now=now,
                              data={"undelivered": True, "kind": row.kind, "recipient": row.recipient,
                                    "error": error[:500], "gave_up": gave_up, "attempts": row.attempts,
                                    "queued": row.created_at.isoformat(timespec="minutes")})


# ---- the owner's hand ----------------------------------------------------------------

def list_rows(state: str | None = None, limit: int = 50) -> list[OutboxMessage]:
    return newest(OutboxMessage, state, limit)


def get_row(row_id: int) -> OutboxMessage:
    row = OutboxMessage.get_or_none(OutboxMessage.id == row_id)
    if row is None:
        raise OutboxRowNotFound(row_id)
    return row


def retry(store: Store, row_id: int, now: dt.datetime | None = None) -> OutboxMessage:
    """Send a failed (or waiting) row again now, with a fresh give-up deadline."""
    now = now or utcnow()
    with store.atomic():
        row = get_row(row_id)
        if row.state == "sent":
            raise Refused(f"outbox message {row_id} was sent on {row.sent_at:%Y-%m-%d %H:%M}; not sent again")
        if row.state == "sending" and row.next_attempt_at > now:
            raise Refused(f"outbox message {row_id} is being sent right now")
        row.state, row.next_attempt_at = "pending", now
        row.data = {**(row.data or {}), "retried_at": now.isoformat()}
        row.save()
    return row


# ---- transports ---------------------------------------------------------------------------

def make_transport(settings: Settings):
    if settings.outbound.mode == "smtp":
        return SmtpTransport(settings, batch_seconds=LEASE.total_seconds() / 2)
    return MaildirTransport(settings.outbound.maildir)


# ---- the worker --------------------------------------------------------------------------

class OutboxWorker:
    """Sends due rows from a thread with its own event loop until stopped.

    It looks for due rows every `idle_seconds` (and at once when woken), so a
    mail queued by any process goes out within that time.
    """

    def __init__(self, store: Store, settings: Settings, *, idle_seconds: float = 2.0):
        self.store, self.settings, self.idle_seconds = store, settings, idle_seconds
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._dead_claims_checked = False     # rows a dead worker of this host had claimed, sent again
        self._thread = threading.Thread(target=self._run, name="outbox-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, *_ignored) -> None:
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the batch in hand, close the connections, end the thread."""
        self._stopping = True
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        transport = make_transport(self.settings)
        executor = ThreadPoolExecutor(1, thread_name_prefix="outbox-render")
        try:
            while not self._stopping:
                self._event.clear()
                await self._pass(transport, executor)
                try:
                    await asyncio.wait_for(self._event.wait(), self.idle_seconds)
                except asyncio.TimeoutError:
                    pass
        finally:
            await transport.close()
            await self._loop.run_in_executor(executor, self.store.db.close)
            executor.shutdown()
            self.store.db.close()

    async def _pass(self, transport, executor) -> None:
        try:
            if not self._dead_claims_checked:     # first, once the store answers (it may be starting up)
                released = await self._loop.run_in_executor(executor, release_dead_claims, self.store)
                self._dead_claims_checked = True
                if released:
                    log.warning("outbox: %d mail(s) claimed by a process that died are sent again", released)
            await send_due_async(self.store, self.settings, None, transport, executor=executor,
                                 stopping=lambda: self._stopping, patience=WORKER_PATIENCE_SECONDS)
        except STORE_TROUBLE as exc:     # the store's next use reconnects (daemon/store/database.py)
            log.warning("outbox worker: the store failed (%s); trying again", first_line(exc))
        except Exception:
            log.exception("outbox worker: pass failed; trying again")
