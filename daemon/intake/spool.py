"""The spool: raw messages committed to the store before anyone says "taken".

Every door (SMTP, LMTP, IMAP, pipe) hands its message to `Spool.put` and
answers only after it returns. A single writer thread commits whatever has
arrived meanwhile in one transaction (group commit): under load one fsync
covers many messages, when idle a message is committed at once. A message
that cannot be committed raises `StoreUnavailable` to every caller of its
group, who answer "try again later" — nothing is acknowledged unstored.

Every caller gets an answer, promptly: whatever a commit fails with, its
group is told and the writer goes on with the next (its connection, if the
server dropped it, is replaced by the store before the next transaction);
a caller whose commit has not ended within `answer_within` seconds (a
server that hangs) is told "try again later" too. A commit that ends after
that still counts: the sender's second copy is then found a duplicate.
`probe` asks the writer itself for a round trip, for /healthz.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import peewee as pw

from daemon.store import compiled
from daemon.errors import ShuttingDown, StoreUnavailable
from daemon.mail.parsing import HEADER_END
from daemon.store.models import InboundMessage, InboundRaw, utcnow
from daemon.store.database import DATABASE_ERRORS, Store, first_line

log = logging.getLogger("ordermail.spool")
# A sender is answered within this (a client waits 10 minutes for DATA's answer).
ANSWER_WITHIN_SECONDS = 60.0


@dataclass
class _Pending:
    raw: bytes
    channel: str
    envelope_from: str
    recipients: list[str]
    done: Future = field(default_factory=Future)


@dataclass
class _Probe:
    """A round trip asked of the writer: it is alive, not stuck, and its connection works."""
    done: Future = field(default_factory=Future)


class Spool:
    def __init__(self, store: Store, *, max_batch: int = 200, on_commit=None,
                 answer_within: float = ANSWER_WITHIN_SECONDS):
        self._store = store
        self._max_batch = max_batch
        self._answer_within = answer_within
        self._on_commit = on_commit or (lambda ids: None)
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._closing = False
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._writer.start()

    async def put(self, raw: bytes, *, channel: str, envelope_from: str, recipients: list[str]) -> int:
        """Commit one message; returns its id once it is durable."""
        committed = asyncio.wrap_future(self._submit(raw, channel, envelope_from, recipients))
        committed.add_done_callback(_retrieved)
        try:
            async with asyncio.timeout(self._answer_within):
                # shielded: a sender who stops waiting leaves the commit to end as it will
                return await asyncio.shield(committed)
        except TimeoutError:
            log.error("the store did not commit a message within %.0f s", self._answer_within)
            raise StoreUnavailable(f"no commit within {self._answer_within:.0f} s") from None

    def probe(self, timeout: float) -> str | None:
        """None when the writer commits as it should now; else what is wrong (any thread may ask)."""
        if self._closing or not self._writer.is_alive():
            return "the spool's writer is not running"
        probe = _Probe()
        self._queue.put(probe)
        try:
            probe.done.result(timeout)
        except TimeoutError:
            return f"the spool's writer did not answer within {timeout:.0f} s"
        except Exception as exc:
            return f"the spool's writer cannot reach the store: {first_line(exc)}"
        return None

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._queue.put(None)
        self._writer.join()

    def _submit(self, raw, channel, envelope_from, recipients) -> Future:
        if self._closing:
            raise ShuttingDown()
        pending = _Pending(raw, channel, envelope_from, list(recipients))
        self._queue.put(pending)
        return pending.done

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first] + self._drain()
            stop = batch[-1] is None
            # a future cancelled meanwhile has nobody waiting: nothing to commit or answer
            taken = [p for p in batch if p is not None and p.done.set_running_or_notify_cancel()]
            try:
                self._commit([p for p in taken if isinstance(p, _Pending)])
                self._answer_probes([p for p in taken if isinstance(p, _Probe)])
            except Exception:       # a bug; still nobody waits for ever, and the writer goes on
                log.exception("spool writer: unexpected failure")
                for item in taken:
                    if not item.done.done():
                        item.done.set_exception(StoreUnavailable("internal error"))
            if stop:
                break
        self._store.db.close()

    def _drain(self) -> list:
        batch = []
        while len(batch) < self._max_batch - 1:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            batch.append(item)
            if item is None:
                break
        return batch

    def _commit(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        try:
            if len(batch) == 1 and self._store.backend == "postgresql":
                ids = [store_alone(self._store, batch[0])]    # one statement, a transaction of its own
            else:
                with self._store.atomic(urgent=True):     # senders wait for this commit
                    ids = store_messages(self._store, batch)
        except Exception as exc:     # whatever it was, each sender is answered and the writer goes on
            log.error("cannot commit %d message(s): %s", len(batch), first_line(exc),
                      exc_info=None if isinstance(exc, DATABASE_ERRORS) else exc)
            for pending in batch:
                pending.done.set_exception(StoreUnavailable(first_line(exc)))
            return
        for pending, message_id in zip(batch, ids):
            pending.done.set_result(message_id)
        self._on_commit(ids)

    def _answer_probes(self, probes: list[_Probe]) -> None:
        if not probes:
            return
        try:
            self._store.db.execute_sql("SELECT 1").fetchone()
        except Exception as exc:
            for probe in probes:
                probe.done.set_exception(exc)
            return
        for probe in probes:
            probe.done.set_result(None)


def _retrieved(future: asyncio.Future) -> None:
    """Reads the outcome of a commit nobody waits for any more (no "never retrieved" warning)."""
    if not future.cancelled():
        future.exception()


def store_messages(store: Store, batch: list[_Pending]) -> list[int]:
    """Insert a group of received messages as `store_message` does each; the caller commits.

    On PostgreSQL, where each statement is a round trip, a group takes three
    (their ids drawn, their rows, their bytes) whatever its size. SQLite
    answers within the process: one message after the other, big ones
    through the blob API."""
    if store.backend != "postgresql" or len(batch) < 2:
        return [store_message(p.raw, channel=p.channel, envelope_from=p.envelope_from, recipients=p.recipients)
                for p in batch]
    ids = compiled.new_keys(InboundMessage, len(batch))
    compiled.insert_many(InboundMessage, [_row(message_id, p.raw, p.channel, p.envelope_from, p.recipients)
                                          for message_id, p in zip(ids, batch)])
    compiled.insert_many(InboundRaw, [{"inbound": message_id, "raw": p.raw} for message_id, p in zip(ids, batch)])
    return ids


def store_alone(store: Store, pending: _Pending) -> int:
    """PostgreSQL, a message that arrived alone: its row and its bytes in one
    statement, outside any transaction. In autocommit one statement is a
    transaction of its own, committed (both rows or neither) before it
    answers: one round trip, where BEGIN, two INSERTs and COMMIT take four."""
    insert, params = compiled.insert_sql(InboundMessage, **_row(None, pending.raw, pending.channel,
                                                                pending.envelope_from, pending.recipients))
    sql = (f'WITH "m" AS ({insert}) INSERT INTO "inbound_raw" ("inbound_id", "raw") '
           f'SELECT "id", %s FROM "m" RETURNING "inbound_id"')
    return store.db.execute_sql(sql, [*params, InboundRaw.raw.db_value(pending.raw)]).fetchone()[0]


def _row(message_id, raw: bytes, channel: str, envelope_from: str, recipients: list[str]) -> dict:
    """The columns of a received message's row (`id` None: the database numbers it)."""
    return dict(id=message_id, received_at=utcnow(), channel=channel, envelope_from=envelope_from[:320],
                recipients=list(recipients), message_id=_message_id(raw),
                sha256=hashlib.sha256(raw).hexdigest(), size=len(raw), state="new")


def store_message(raw: bytes, *, channel: str, envelope_from: str, recipients: list[str]) -> int:
    """Insert one received message as `new`; the caller commits.

    Its row, then its bytes in a table of their own (written once, never
    rewritten). On SQLite big bytes go in as a zeroblob of their size filled
    through the blob API, in slices: a bound blob would be copied whole
    (SQLITE_TRANSIENT), and that copy stays in the cached statement until its
    next use. Small ones are bound as usual: one statement is cheaper than two.
    """
    message_id = compiled.insert(InboundMessage, **_row(None, raw, channel, envelope_from, recipients))
    db = InboundRaw._meta.database
    if not (isinstance(db, pw.SqliteDatabase) and len(raw) >= 65_536):
        compiled.insert(InboundRaw, inbound=message_id, raw=raw)
        return message_id
    InboundRaw.insert(inbound=message_id, raw=pw.fn.zeroblob(len(raw))).execute()
    view, step = memoryview(raw), 2**20
    with pw.__exception_wrapper__:      # driver errors as peewee's, as for any statement
        with db.connection().blobopen(InboundRaw._meta.table_name, "raw", message_id) as blob:
            for start in range(0, len(raw), step):
                blob.write(view[start:start + step])
    return message_id


def _message_id(raw: bytes) -> str | None:
    """The Message-ID header (for `inbound list`), from the first 64 KB of headers.

    A scan, not the stdlib header parser: this runs while the sender waits,
    and the parser costs ten times as much for one header we only show.
    """
    head = raw[:65536]
    end = HEADER_END.search(head)
    found = _MESSAGE_ID.search(head, 0, end.start() if end else len(head))
    if found is None:
        return None
    value = _FOLD.sub(b" ", found.group(1)).strip().decode("utf-8", "replace")
    return value[:998] or None


_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*((?:[^\r\n]|\r?\n[ \t])*)", re.IGNORECASE | re.MULTILINE)
_FOLD = re.compile(rb"\r?\n[ \t]+")
