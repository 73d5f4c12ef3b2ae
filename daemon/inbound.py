"""The inbound worker: parse once, route, handle — or quarantine with the reason.

Reads messages in the state `new` from the store, oldest first. Handling a
message and marking it `done` commit together, so a crash in between leaves
it `new` and it is handled again on restart, with nothing applied twice (the
same bytes already handled are marked `duplicate`; events are unique per
Message-ID). A message that cannot be handled is moved to `quarantine` with
the reason and its raw bytes, never dropped; `ordermail inbound retry ID`
puts it back.

States: new → processing (claimed) → done | duplicate | quarantined.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading

from daemon.addresses import Recipient, check_recipient
from daemon.bounces import find_bounce
from daemon.errors import MailRefused
from daemon.inbound_mail import parse_mail
from daemon.routing import Context, route
from daemon.store import InboundMessage, Store, first_line, utcnow

log = logging.getLogger("ordermail.inbound")
BATCH = 50
CLAIM_LEASE_MINUTES = 10
CLAIMANT = f"{socket.gethostname()}:{os.getpid()}"


def process_pending(store: Store, settings, *, limit: int = BATCH, stopping=lambda: False) -> int:
    """Handle up to `limit` new messages; returns how many were taken."""
    _release_stale_claims()
    batch = list(InboundMessage.select(InboundMessage.id).where(InboundMessage.state == "new")
                 .order_by(InboundMessage.id).limit(limit))
    taken = 0
    for row in batch:
        if stopping():
            break
        if claim(row.id):
            process_message(store, settings, InboundMessage.get_by_id(row.id))
            taken += 1
    return taken


def claim(message_id: int) -> bool:
    """Take a message for handling; False if another process was quicker."""
    return bool(InboundMessage.update(state="processing", processed_at=utcnow(), claimed_by=CLAIMANT)
                .where((InboundMessage.id == message_id) & (InboundMessage.state == "new")).execute())


def _release_stale_claims() -> None:
    """A claim older than the lease means its process died: hand it out again."""
    expired = utcnow() - dt.timedelta(minutes=CLAIM_LEASE_MINUTES)
    (InboundMessage.update(state="new", claimed_by="")
     .where((InboundMessage.state == "processing") & (InboundMessage.processed_at < expired)).execute())


def release_dead_claims() -> int:
    """At start: claims of processes on this host that no longer run (a crash)."""
    host = socket.gethostname()
    dead = [c for c in InboundMessage.select(InboundMessage.claimed_by).distinct()
            .where((InboundMessage.state == "processing") & InboundMessage.claimed_by.startswith(f"{host}:"))
            if not _alive(int(c.claimed_by.rpartition(":")[2]))]
    return sum(InboundMessage.update(state="new", claimed_by="")
               .where((InboundMessage.state == "processing") & (InboundMessage.claimed_by == c.claimed_by))
               .execute() for c in dead)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_message(store: Store, settings, message: InboundMessage) -> str:
    """Handle one claimed message; returns the state it ends in."""
    try:
        state, reason = _handle(store, settings, message)
    except Exception as exc:  # the one place an unexpected failure is caught
        log.exception("message %s quarantined", message.id)
        state, reason = "quarantined", f"{type(exc).__name__}: {first_line(exc)}"
        with store.atomic():
            _finish(message, state, reason, attempts=message.attempts + 1)
    log.info("message %s %s: %s", message.id, state, reason)
    return state


def _handle(store: Store, settings, message: InboundMessage) -> tuple[str, str]:
    now = utcnow()
    if _already_handled(message):
        with store.atomic():
            return _finish(message, "duplicate", "the same message was handled before")
    # Our own mail coming back is recognised by its exact Message-ID (routing),
    # not by domain: the owner's own client may well use the shop's domain.
    # Attachments are decoded only when needed (owner files): customers'
    # files are never kept, and a decoded copy would double a big mail's memory.
    mail = parse_mail(message.raw, envelope_from=message.envelope_from, keep_attachment_bytes=0)
    ctx = Context(store=store, settings=settings, message=message, mail=mail,
                  recipients=_recipients(message, settings, now), bounce=find_bounce(mail),
                  now=now)
    with store.atomic():
        return _finish(message, "done", route(ctx))


def _finish(message: InboundMessage, state: str, reason: str, attempts: int | None = None):
    message.state, message.reason, message.processed_at = state, reason[:2000], utcnow()
    if attempts is not None:
        message.attempts = attempts
    message.save()
    return state, reason


def _already_handled(message: InboundMessage) -> bool:
    return InboundMessage.select().where(
        (InboundMessage.sha256 == message.sha256) & (InboundMessage.id < message.id)
        & (InboundMessage.state == "done")).exists()


def _recipients(message: InboundMessage, settings, now) -> tuple[Recipient, ...]:
    """Our recipients of this message, re-checked (a token may have expired since)."""
    found = []
    for address in message.recipients:
        try:
            found.append(check_recipient(address, settings, now.date()))
        except MailRefused:
            continue
    return tuple(found)


def retry(store: Store, message_id: int) -> InboundMessage:
    with store.atomic():
        message = InboundMessage.get_by_id(message_id)
        message.state, message.reason = "new", f"retry after: {message.reason}"[:2000]
        message.save()
    return message


class InboundWorker:
    """Runs `process_pending` in a thread beside the event loop until stopped."""

    def __init__(self, store: Store, settings, *, idle_seconds: float = 5.0):
        self.store, self.settings, self.idle_seconds = store, settings, idle_seconds
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbound-worker", daemon=True)

    def start(self) -> None:
        released = release_dead_claims()
        if released:
            log.warning("took back %d message(s) claimed by a process that died", released)
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
                taken = process_pending(self.store, self.settings, stopping=self._stop.is_set)
            except Exception:
                log.exception("inbound worker: store not usable; retrying")
                self.store.db.close()
                taken = 0
            if not taken:
                self._wake.wait(self.idle_seconds)
        self.store.db.close()
