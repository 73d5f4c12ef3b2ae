"""The inbound worker: parse once, route, handle — or quarantine with the reason.

Claims messages in the state `new` from the store, oldest first, up to 20
with one statement (on PostgreSQL with SKIP LOCKED), so the worker
processes share a burst. A claimed group is parsed and its recipients
checked outside any transaction, then handled in transactions of a few
milliseconds (SQLite has one writer, and mail being acknowledged waits for
it), each message in a savepoint of its own: one failing message is rolled
back alone and moved to `quarantine` with the reason, never dropped. When
the store fails instead (a lost connection, a lock held too long), the
round is undone and tried again (on PostgreSQL, where each statement is a
round trip, a group goes in one transaction without savepoints, and only
when a message of it fails is it done again one by one, as above:
`_process_together`); a message in hand at such a failure five
times is quarantined too. The claims of a round the store broke off are
given back at once, over a fresh connection; while the store is still away,
the worker keeps them and gives them back as soon as it answers again, so
no mail waits out the claim's lease.
Handling a message and marking it `done` commit together, so a crash in
between leaves it claimed by a dead process; it is handed out again and
handled with nothing applied twice (a message already handled, the same
Message-ID and body to the same recipients however it came, is marked
`duplicate`; events are unique per Message-ID). `ordermail inbound
retry ID` puts a quarantined message back.

States: new → processing (claimed) → done | duplicate | quarantined.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import socket
import threading
import time
from dataclasses import dataclass

import peewee as pw

from daemon.store import compiled
from daemon.mail.addresses import Recipient, check_recipient, token_order_id
from daemon.mail.bounces import find_bounce
from daemon.store.claimants import claimant, claimant_gone as _claimant_gone
from daemon.errors import MailRefused, Refused
from daemon.mail.parsing import HEADER_END, InboundMail, parse_mail
from daemon.handling.routing import Context, our_message_ids, route
from daemon.store.models import InboundMessage, Order, load_raw, utcnow
from daemon.store.database import STORE_TROUBLE, Store, first_line

log = logging.getLogger("ordermail.inbound")
BATCH = 20                     # claimed with one statement: several workers share a burst
GROUP_BYTES = 8 * 2**20        # parsed mails held at once (a big mail goes alone)
TRANSACTION_SECONDS = 0.004    # a transaction takes messages for this long, then commits
CLAIM_LEASE_MINUTES = 10
# The store failing (STORE_TROUBLE), not the message: the round is undone and tried again.
STORE_TROUBLE_ATTEMPTS = 5     # ...but a message that fails so this often is quarantined
STALE_CHECK_SECONDS = 60


def process_pending(store: Store, settings, *, limit: int = BATCH, stopping=lambda: False,
                    kept: set[int] | None = None) -> int:
    """Claim and handle up to `limit` new messages; returns how many were taken.

    `kept`: where claims go that could not be given back (the store failed
    and is still away), for the caller to give back later."""
    claimed = claim_batch(store, limit)
    handled = 0
    try:
        for group in _groups(claimed):
            if stopping():
                break
            process_claimed(store, settings, [message_id for message_id, _size in group])
            handled += len(group)
    finally:
        rest = [message_id for message_id, _size in claimed[handled:]]
        if rest and not release_claims(store, rest) and kept is not None:   # stopping, or the store failed
            kept.update(rest)
    return len(claimed)


def claim_batch(store: Store, limit: int) -> list[tuple[int, int]]:
    """Claim up to `limit` new messages at once; (id, size) oldest first."""
    db = store.db
    p = db.param
    skip_locked = " FOR UPDATE SKIP LOCKED" if store.backend == "postgresql" else ""
    sql = (f'UPDATE "inbound_message" SET "state" = {p}, "processed_at" = {p}, "claimed_by" = {p} '
           f'WHERE "id" IN (SELECT "id" FROM "inbound_message" WHERE "state" = {p} '
           f'ORDER BY "id" LIMIT {p}{skip_locked}) RETURNING "id", "size"')
    params = ("processing", utcnow(), claimant(), "new", limit)
    if store.backend == "postgresql":   # one statement commits on its own (autocommit): no BEGIN, no COMMIT
        rows = db.execute_sql(sql, params).fetchall()
    else:                               # SQLite: under the one writer's lock
        with store.atomic():
            rows = db.execute_sql(sql, params).fetchall()
    return sorted((int(i), int(s)) for i, s in rows)


def claim(message_id: int) -> bool:
    """Take one message for handling; False if another process was quicker."""
    return bool(InboundMessage.update(state="processing", processed_at=utcnow(), claimed_by=claimant())
                .where((InboundMessage.id == message_id) & (InboundMessage.state == "new")).execute())


def release_claims(store: Store, ids: list[int]) -> bool:
    """Hand claimed messages back; False when the store failed (the lease hands them out anyway)."""
    if not ids:
        return True
    try:
        with store.atomic():
            (InboundMessage.update(state="new", claimed_by="")
             .where(InboundMessage.id.in_(ids) & (InboundMessage.state == "processing")
                    & (InboundMessage.claimed_by == claimant())).execute())
    except Exception as exc:
        log.warning("could not give back %d claimed message(s) yet: %s", len(ids), first_line(exc))
        return False
    return True


def release_stale_claims(store: Store) -> int:
    """A claim older than the lease means its process died: hand it out again."""
    expired = utcnow() - dt.timedelta(minutes=CLAIM_LEASE_MINUTES)
    with store.atomic():
        return (InboundMessage.update(state="new", claimed_by="")
                .where((InboundMessage.state == "processing") & (InboundMessage.processed_at < expired))
                .execute())


def release_dead_claims(store: Store) -> int:
    """Claims of processes on this host that no longer run (a crash)."""
    host = socket.gethostname()
    dead = [c.claimed_by for c in InboundMessage.select(InboundMessage.claimed_by).distinct()
            .where((InboundMessage.state == "processing") & InboundMessage.claimed_by.startswith(f"{host}:"))
            if _claimant_gone(c.claimed_by)]
    if not dead:
        return 0
    with store.atomic():
        return (InboundMessage.update(state="new", claimed_by="")
                .where((InboundMessage.state == "processing") & InboundMessage.claimed_by.in_(dead)).execute())


def _groups(claimed: list[tuple[int, int]]):
    """Claimed messages in groups bounded by bytes (a big mail goes alone)."""
    group, size = [], 0
    for message_id, message_size in claimed:
        if group and size + message_size > GROUP_BYTES:
            yield group
            group, size = [], 0
        group.append((message_id, message_size))
        size += message_size
    if group:
        yield group


def process_claimed(store: Store, settings, ids: list[int]) -> list[str]:
    """Handle claimed messages, a few per transaction; the state each ends in."""
    now = utcnow()
    messages = _load(ids)
    orders = _orders_named(messages, settings) if len(messages) > 1 else None
    pending = [_prepare(message, settings, now, orders) for message in messages]
    if store.backend == "postgresql":
        states = _process_together(store, settings, pending, sorted(orders or ()))
        if states is not None:
            return states
    return _process_one_by_one(store, settings, pending)


def _process_together(store: Store, settings, pending: list[_Prepared], order_ids: list[int]) -> list[str] | None:
    """PostgreSQL: the whole group in one transaction without savepoints.

    Each statement is a round trip to a server that may be across a network,
    and most mail is handled without a hitch: one transaction, the duplicate
    checks of all at once, no savepoint per message (two round trips each).
    Should any message fail, everything is undone and None returned: the
    caller handles the group one by one, each message in a savepoint of its own.
    The orders the group's reply addresses name are locked first, in id
    order: two workers whose groups touch the same orders never wait for
    each other crosswise (a deadlock would undo both rounds).
    """
    outcomes, in_hand = [], None
    before = [(item.message, dict(item.message.__data__), dict(item.message.__rel__)) for item in pending]
    try:
        with store.atomic(), store.all_or_nothing():
            if order_ids:
                store.db.execute_sql('SELECT 1 FROM "orders" WHERE "id" = ANY(%s) ORDER BY "id" FOR UPDATE',
                                     (order_ids,))
            handled = _handled_before(store, [item.message for item in pending])
            ours = our_message_ids([item.mail.message_id for item in pending if item.mail is not None])
            for in_hand in pending:
                outcomes.append(_handle_together(store, settings, in_hand, handled, ours))
            in_hand = None
            _finish_all([item.message for item in pending])
    except STORE_TROUBLE as exc:     # all of this transaction is undone; the round ends
        if in_hand is not None:
            _count_store_trouble(store, in_hand.message, exc)
        raise
    except Exception:      # a message's failure (Broken: one that was caught on the way)
        for message, data, related in before:      # as loaded: the one-by-one round starts afresh
            message.__data__, message.__rel__ = data, related
        return None
    return _told(outcomes)


def _handle_together(store: Store, settings, item: _Prepared, handled: set[str],
                     ours: frozenset[str]) -> tuple[int, str, str]:
    """Route one message of a group handled in one transaction (the outcome is written by `_finish_all`)."""
    message = item.message
    if item.failure is not None:       # found before the transaction: nothing of it to undo
        log.error("message %s quarantined", message.id, exc_info=item.failure)
        state, reason = "quarantined", f"{type(item.failure).__name__}: {first_line(item.failure)}"
        message.order = None
        _outcome(message, state, reason, attempts=message.attempts + 1)
        return message.id, state, reason
    if message.content_key in handled:
        state, reason = "duplicate", "the same message was handled before"
    else:
        ctx = Context(store=store, settings=settings, message=message, mail=item.mail,
                      recipients=item.recipients, bounce=item.bounce, now=utcnow(), ours=ours)
        state, reason = "done", route(ctx)
        handled.add(message.content_key)
    _outcome(message, state, reason)
    return message.id, state, reason


def _told(outcomes) -> list[str]:
    """Log each outcome once it is committed; the states."""
    for message_id, state, reason in outcomes:
        log.info("message %s %s: %s", message_id, state, reason,
                 extra={"inbound_id": message_id, "state": state})
    return [state for _id, state, _reason in outcomes]


def _process_one_by_one(store: Store, settings, pending: list[_Prepared]) -> list[str]:
    """Each message in a savepoint of its own, a few per transaction."""
    pending = list(reversed(pending))
    states = []
    while pending:
        # SQLite has one writer: mail being acknowledged (and other workers)
        # wait for this transaction, so it ends after a few milliseconds, or
        # after the message in hand once received mail queues for the writer.
        deadline = time.monotonic() + TRANSACTION_SECONDS
        outcomes, in_hand = [], None
        try:
            with store.atomic():
                in_hand = pending.pop()
                outcomes.append(_handle_one(store, settings, in_hand))
                while pending and time.monotonic() < deadline and not store.urgent_waiting():
                    in_hand = pending.pop()
                    outcomes.append(_handle_one(store, settings, in_hand))
        except STORE_TROUBLE as exc:     # all of this transaction is undone; the round ends
            if in_hand is not None:      # None: the transaction could not even begin
                _count_store_trouble(store, in_hand.message, exc)
            raise
        states += _told(outcomes)
    return states


def _load(ids: list[int]) -> list[InboundMessage]:
    """The claimed rows (their raw bytes are read one by one, from their own table).

    One statement per power of two of ids, the list padded with its first:
    built once, not for every group."""
    if not ids:
        return []
    size = 1 << (len(ids) - 1).bit_length()
    rows = {m.id: m for m in compiled.every(InboundMessage, ("inbound.load", size), lambda: (
        InboundMessage.select().where(InboundMessage.id.in_([0] * size))), *ids, *[ids[0]] * (size - len(ids)))}
    messages = [rows[i] for i in ids if i in rows]
    db = InboundMessage._meta.database
    if db.returning_clause:     # PostgreSQL: their bytes in the same round trip as each other (a group is bounded)
        raws = dict(db.execute_sql('SELECT "inbound_id", "raw" FROM "inbound_raw" WHERE "inbound_id" = ANY(%s)',
                                   (ids,)).fetchall())
        for message in messages:
            raw = raws.pop(message.id, None)
            message.raw = None if raw is None else bytes(raw)
    return messages


@dataclass
class _Prepared:
    """A claimed message with all that needs no lock: parsed, its recipients checked."""
    message: InboundMessage
    mail: InboundMail | None = None
    recipients: tuple[Recipient, ...] = ()
    bounce: object = None
    failure: Exception | None = None


def _orders_named(messages: list[InboundMessage], settings) -> dict[int, Order]:
    """The orders the group's reply addresses name, by id, read at once (not one per mail)."""
    ids = sorted({order_id for message in messages for address in message.recipients
                  if (order_id := token_order_id(address, settings)) is not None})
    found = {}
    for chunk in compiled.padded(ids):
        found.update((order.id, order) for order in compiled.every(
            Order, ("inbound.orders_named", len(chunk)), lambda: Order.select().where(Order.id.in_([0] * len(chunk))),
            *chunk))
    return found


def _prepare(message: InboundMessage, settings, now, orders: dict | None = None) -> _Prepared:
    """Everything before the write lock: other writers wait less."""
    try:
        # Attachments are decoded only when needed (owner files): customers'
        # files are never kept, and a decoded copy would double a big mail's memory.
        if getattr(message, "raw", None) is None:      # not read with the group (SQLite: the blob API)
            message.raw = load_raw(message.id)
        message.content_key = content_key(message.raw, message.message_id, message.recipients)
        mail = parse_mail(message.raw, envelope_from=message.envelope_from, keep_attachment_bytes=0)
        recipients = _recipients(message, settings, now, orders)
        if any(r.kind == "token" for r in recipients):
            mail.trimmed        # a reply's trimming, done here rather than under the write lock
        return _Prepared(message, mail, recipients, find_bounce(mail))
    except pw.DatabaseError:
        raise                                  # the store, not the message: the round is retried
    except Exception as exc:
        return _Prepared(message, failure=exc)


def _handle_one(store: Store, settings, item: _Prepared) -> tuple[int, str, str]:
    """Route one message in a savepoint; a failure rolls back its changes alone."""
    message = item.message
    try:
        with store.atomic():
            if item.failure is not None:
                raise item.failure
            if _already_handled(store, message):
                state, reason = "duplicate", "the same message was handled before"
            else:
                # Our own mail coming back is recognised by its exact Message-ID
                # (routing), not by domain: the owner's client may use the shop's domain.
                ctx = Context(store=store, settings=settings, message=message, mail=item.mail,
                              recipients=item.recipients, bounce=item.bounce, now=utcnow())
                state, reason = "done", route(ctx)
            _finish(message, state, reason)
    except STORE_TROUBLE:
        raise                  # the store's, not the message's: the round is tried again
    except Exception as exc:  # the one place an unexpected failure is caught
        log.error("message %s quarantined", message.id, exc_info=exc)
        state, reason = "quarantined", f"{type(exc).__name__}: {first_line(exc)}"
        message.order = None
        _finish(message, state, reason, attempts=message.attempts + 1)
    return message.id, state, reason


def _count_store_trouble(store: Store, message: InboundMessage, exc: BaseException) -> None:
    """Count the failure against the message in hand, in a transaction of its
    own; after STORE_TROUBLE_ATTEMPTS of them it is quarantined with the reason.

    A lost connection, a lock held too long: the message is not at fault, and
    it is handled again in the next round. But an error that only this
    message brings about must not hold up the mail behind it round after
    round. A deadlock or serialization failure between two workers is
    nobody's fault and is not counted. Best effort: with the store gone, the
    claim is given back or expires.
    """
    if _between_transactions(exc):
        return
    try:
        with store.atomic():
            fresh = InboundMessage.get_by_id(message.id)     # as committed: the round was undone
            failures = fresh.store_failures + 1
            compiled.update(InboundMessage, message.id, store_failures=failures)
            if failures < STORE_TROUBLE_ATTEMPTS:
                return
            log.error("message %s quarantined after %d failures of the store", message.id, failures, exc_info=exc)
            fresh.content_key = message.content_key
            _finish(fresh, "quarantined", f"the store failed {failures} times while handling it: "
                    f"{type(exc).__name__}: {first_line(exc)}", attempts=fresh.attempts + 1)
    except Exception as again:
        log.warning("could not count a failed attempt on message %s: %s", message.id, first_line(again))


def _between_transactions(exc: BaseException) -> bool:
    """PostgreSQL's deadlock or serialization failure (peewee keeps the driver's error as `orig`)."""
    try:
        from psycopg2.extensions import TransactionRollbackError
    except ImportError:
        return False
    return isinstance(getattr(exc, "orig", None), TransactionRollbackError)


def _outcome(message: InboundMessage, state: str, reason: str, attempts: int | None = None) -> None:
    message.state, message.reason, message.processed_at = state, reason[:2000], utcnow()
    if attempts is not None:
        message.attempts = attempts


_FINISH_ALL = ('UPDATE "inbound_message" AS m SET "state" = v.state, "reason" = v.reason, '
               '"processed_at" = v.processed_at, "attempts" = v.attempts, "order_id" = v.order_id, '
               '"content_key" = v.content_key FROM (VALUES {rows}) AS v(id, state, reason, processed_at, '
               'attempts, order_id, content_key) WHERE m."id" = v.id')
_FINISH_ROW = "(%s::integer, %s, %s, %s::timestamp, %s::integer, %s::integer, %s)"


def _finish_all(messages: list[InboundMessage]) -> None:
    """PostgreSQL: the outcomes of `_outcome` written in one statement (as `_finish` each)."""
    db = InboundMessage._meta.database
    reason = InboundMessage.reason
    params = [value for m in messages for value in (m.id, m.state, reason.db_value(m.reason), m.processed_at,
                                                    m.attempts, m.order_id, m.content_key)]
    db.execute_sql(_FINISH_ALL.format(rows=", ".join([_FINISH_ROW] * len(messages))), params)


def _finish(message: InboundMessage, state: str, reason: str, attempts: int | None = None) -> None:
    """Write the outcome — only the columns that change, never the raw bytes again."""
    _outcome(message, state, reason, attempts)
    compiled.update(InboundMessage, message.id, state=message.state, reason=message.reason,
                    processed_at=message.processed_at, attempts=message.attempts, order=message.order_id,
                    content_key=message.content_key)


def content_key(raw: bytes, message_id: str | None, recipients: list[str]) -> str:
    """What makes two received mails one message: the same Message-ID and body,
    to the same recipients.

    The header is left out: the same message taken twice by different ways
    (Postfix and a hosted mailbox, a retry through another MX) differs in
    what transport added there (Received, Delivered-To, Return-Path), and
    line ends do not count (SMTP, LMTP and IMAP give CRLF, Postfix's pipe
    LF). The recipients are in: an MTA delivering one copy per recipient
    hands each to its own order (a copy from a mailbox has the recipients
    its Delivered-To/To/Cc name, which may be more than the envelope's).
    Without a Message-ID only the very same bytes count.
    """
    key = hashlib.sha256("\0".join(sorted({r.lower() for r in recipients})).encode("utf-8", "replace") + b"\0")
    if not message_id:
        key.update(raw)
        return key.hexdigest()
    key.update(message_id.encode("utf-8", "replace") + b"\0")
    end = HEADER_END.search(raw)
    body = memoryview(raw)[end.end():] if end else memoryview(b"")
    for start in range(0, len(body), _KEY_SLICE):      # slices: a 25 MB body is not copied whole
        key.update(bytes(body[start:start + _KEY_SLICE]).replace(b"\r", b""))   # CRLF by SMTP, LF by a pipe
    return key.hexdigest()


_KEY_SLICE = 2**20


def _already_handled(store: Store, message: InboundMessage) -> bool:
    """The same message (`content_key`) was handled before.

    Looked up by key alone (its index), the few rows found checked here: a
    condition on state or id would lead SQLite's planner to the (state, id)
    index, reading every handled mail. On PostgreSQL two workers may hold the
    two copies at once: a transaction lock on the key makes the second wait
    for the first one's commit (SQLite has one writer anyway); its next
    statement then sees that commit under READ COMMITTED, which the store
    sets on its connections (a stricter level would hide it).
    """
    if store.backend == "postgresql":
        store.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_lock_number(message.content_key),))
    same = compiled.rows(InboundMessage, "inbound.same_message", lambda: InboundMessage.select(
        InboundMessage.id, InboundMessage.state).where(InboundMessage.content_key == ""), message.content_key)
    return any(row_id != message.id and state == "done" for row_id, state in same)


def _handled_before(store: Store, messages: list[InboundMessage]) -> set[str]:
    """PostgreSQL, a group in one transaction: the content keys among theirs
    already handled (`_already_handled` for all at once: every key's lock,
    taken in one order so that two workers never wait for each other, then
    one look-up)."""
    keys = sorted({m.content_key for m in messages})
    store.db.execute_sql("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k",
                         ([_lock_number(key) for key in sorted(keys, key=_lock_number)],))
    rows = store.db.execute_sql('SELECT "content_key", "state" FROM "inbound_message" '
                                'WHERE "content_key" = ANY(%s)', (keys,)).fetchall()
    return {key for key, state in rows if state == "done"}     # the group's own are `processing`


def _lock_number(key: str) -> int:
    """A signed 64-bit number from the key, as pg_advisory_xact_lock takes."""
    return int.from_bytes(bytes.fromhex(key[:16]), "big", signed=True)


def _recipients(message: InboundMessage, settings, now, orders: dict | None = None) -> tuple[Recipient, ...]:
    """Our recipients of this message, re-checked (a token may have expired since)."""
    found = []
    for address in message.recipients:
        try:
            found.append(check_recipient(address, settings, now.date(), orders))
        except MailRefused:
            continue
    return tuple(found)


def retry(store: Store, message_id: int) -> InboundMessage:
    """Put a message back to be handled again: handled, quarantined, waiting,
    or claimed by a process that is gone — not one a live process holds."""
    with store.atomic():
        message = InboundMessage.get_by_id(message_id)
        if message.raw_pruned_at is not None:
            raise Refused(f"message {message_id} cannot be handled again: its raw mail was pruned on "
                          f"{message.raw_pruned_at:%Y-%m-%d} ([inbound] keep_raw_days)")
        if message.state == "processing" and not _claim_abandoned(message):
            raise Refused(f"message {message_id} is being handled now (by {message.claimed_by}); "
                          "retry it once that has ended")
        if message.state != "new":
            message.state, message.reason = "new", f"retry after: {message.reason}"[:2000]
        message.claimed_by, message.store_failures = "", 0
        message.save(only=[InboundMessage.state, InboundMessage.reason, InboundMessage.claimed_by,
                           InboundMessage.store_failures])
    return message


def _claim_abandoned(message: InboundMessage) -> bool:
    """The claim's process on this host has ended, or the claim outlived its lease."""
    lease = dt.timedelta(minutes=CLAIM_LEASE_MINUTES)
    return (_claimant_gone(message.claimed_by) or message.processed_at is None
            or message.processed_at < utcnow() - lease)


def handle_now(store: Store, settings, message_id: int) -> str | None:
    """Claim and handle one message at once (the pipe, `inbound retry`): the
    state it ends in, or None if a worker was quicker. If the store fails, the
    claim is given back (for a worker, or a later retry) and the error raised."""
    if not claim(message_id):
        return None
    try:
        [state] = process_claimed(store, settings, [message_id])
    except Exception:
        release_claims(store, [message_id])
        raise
    return state


class InboundWorker:
    """Runs `process_pending` in a thread until stopped; woken when mail is committed."""

    def __init__(self, store: Store, settings, *, idle_seconds: float = 5.0):
        self.store, self.settings, self.idle_seconds = store, settings, idle_seconds
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbound-worker", daemon=True)
        self._stale_checked = 0.0
        self._kept: set[int] = set()     # claims the store failed to take back

    def start(self) -> None:
        # The claims of ended processes are looked for in the first round
        # (`_now_and_then`), where a store still starting up is a warning
        # and a retry, not a crash of the worker process.
        self._thread.start()

    def wake(self, *_ignored) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._give_back_kept()
                self._now_and_then()
                taken = process_pending(self.store, self.settings, stopping=self._stop.is_set, kept=self._kept)
            except STORE_TROUBLE as exc:     # the store's next use reconnects (daemon/store/database.py)
                log.warning("inbound worker: the store failed (%s); trying again in %ss",
                            first_line(exc), self.idle_seconds)
                taken = 0
            except Exception:
                log.exception("inbound worker: round failed; trying again")
                taken = 0
            if not taken:
                self._wake.wait(self.idle_seconds)
        self._give_back_kept()
        self.store.db.close()

    def _give_back_kept(self) -> None:
        if self._kept and release_claims(self.store, sorted(self._kept)):
            log.info("gave back %d claimed message(s) once the store answered again", len(self._kept))
            self._kept.clear()

    def _now_and_then(self) -> None:
        """Expired claims, and claims of processes on this host that ended,
        are looked for once a minute, not on every round. The second: a
        worker of a daemon killed a moment before this one started may
        still have been ending when `start` looked."""
        if time.monotonic() - self._stale_checked >= STALE_CHECK_SECONDS:
            release_stale_claims(self.store)
            released = release_dead_claims(self.store)
            if released:
                log.warning("took back %d message(s) claimed by a process that ended", released)
            self._stale_checked = time.monotonic()
