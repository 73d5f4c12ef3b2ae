"""The store: peewee models and opening the database (SQLite or PostgreSQL).

Tables: orders and their items, the log (events) with attachments kept by
content hash, inbound messages (raw bytes and state) and the outbox. The
schema is versioned by numbered scripts in `daemon/migrations/`, applied on
open, so an upgrade migrates an existing database. Driver errors are turned
into `StoreUnavailable` here and nowhere else.
"""
from __future__ import annotations

import datetime as dt
import decimal
import fcntl
import json
import os
import re
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee as pw
from playhouse.migrations import Runner
from psycopg2.extensions import ISOLATION_LEVEL_READ_COMMITTED

from daemon.errors import StoreTooNew, StoreUnavailable

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_PRAGMAS = {
    "journal_mode": "wal",      # readers never block the writer
    "synchronous": 2,           # FULL: a commit survives power loss
    "busy_timeout": 10_000,     # wait for a writer instead of failing at once
    "foreign_keys": 1,          # cascades keep the log consistent on delete
}

# Status flags of an order, kept in one integer so that any combination of
# status words in a filter becomes `status IN (…)` on one index.
PAID, SHIPPED, CANCELLED, REFUNDED = 1, 2, 4, 8
STATUS_FLAGS = {"paid": PAID, "shipped": SHIPPED, "cancelled": CANCELLED, "refunded": REFUNDED}

EVENT_KINDS = ("created", "paid", "shipped", "cancelled", "refunded", "message",
               "note", "customer_reply", "bounce", "system")
INTERNAL_KINDS = frozenset({"note", "bounce", "system"})
AUTHORS = ("owner", "customer", "system")


def utcnow() -> dt.datetime:
    """Naive UTC, as stored; both backends keep it without a zone."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def new_token() -> str:
    """A 192-bit URL-safe token (status pages, sign-in links)."""
    return secrets.token_urlsafe(24)


def new_message_id(domain: str) -> str:
    """A Message-ID on the shop's domain, fixed before the mail is sent."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def new_secret() -> str:
    """A 256-bit key, kept per order, that reply tokens are signed with."""
    return secrets.token_hex(32)


class MoneyField(pw.DecimalField):
    """A Decimal with two places; SQLite keeps NUMERIC as REAL, so re-quantize."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, max_digits=14, decimal_places=2, auto_round=True, **kwargs)

    def python_value(self, value):
        value = super().python_value(value)
        return None if value is None else value.quantize(decimal.Decimal("0.01"))


# A lone surrogate: what Python keeps of bytes that were not UTF-8
# (surrogateescape) or of half a JSON "\\ud83d" pair. No database takes it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class _StorableText:
    """Text written without NUL characters and without lone surrogates:
    PostgreSQL stores no text holding a NUL (the whole statement fails), and
    no text shows one; a lone surrogate (bytes that were not UTF-8 on a
    command line, kept by surrogateescape) cannot be encoded for either
    database and becomes U+FFFD (found by fuzzing the owner's commands).
    Every text column goes through here, whatever put such a character in
    the value (a mail's header or body, an owner's command, an order's JSON)."""

    def db_value(self, value):
        value = super().db_value(value)
        if not isinstance(value, str) or value.isascii() and "\x00" not in value:
            return value
        return LONE_SURROGATE.sub("\ufffd", value.replace("\x00", ""))


class CharField(_StorableText, pw.CharField):
    pass


class TextField(_StorableText, pw.TextField):
    pass


class JSONTextField(TextField):
    """JSON kept as text: the same on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else super().db_value(json.dumps(value, ensure_ascii=False, sort_keys=True))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BytesField(pw.BlobField):
    """BLOB/bytea that always comes back as bytes (psycopg2 gives memoryview)."""

    def python_value(self, value):
        return None if value is None else bytes(value)


class BaseModel(pw.Model):
    class Meta:
        legacy_table_names = False


class Order(BaseModel):
    number = CharField(max_length=32, unique=True)
    customer_name = CharField(max_length=200)
    customer_email = CharField(max_length=254, index=True)
    # Case-folded name and surname: prefix search on an ordinary index.
    customer_key = CharField(max_length=200)
    surname_key = CharField(max_length=200)
    total = MoneyField()
    currency = CharField(max_length=3)
    payment_method = CharField(max_length=40)
    locale = CharField(max_length=5)
    status = pw.SmallIntegerField(default=0)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    paid_at = pw.DateTimeField(null=True)
    shipped_at = pw.DateTimeField(null=True)
    cancelled_at = pw.DateTimeField(null=True)
    refunded_at = pw.DateTimeField(null=True)
    refunded_amount = MoneyField(null=True)
    tracking_code = CharField(max_length=100, null=True)
    carrier = CharField(max_length=60, null=True)
    status_token = CharField(max_length=64, unique=True, default=new_token)
    # When the status link was last re-issued (statuspage/links.py); null: with the order.
    status_token_issued_at = pw.DateTimeField(null=True)
    reply_secret = CharField(max_length=64, default=new_secret)
    # Set when mail to the customer bounced for good: the owner should call.
    email_bounced_at = pw.DateTimeField(null=True)
    email_bounce = CharField(max_length=300, default="")

    class Meta:
        table_name = "orders"

    def has(self, flag: int) -> bool:
        return bool(self.status & flag)

    def status_words(self) -> dict[str, bool]:
        return {word: self.has(flag) for word, flag in STATUS_FLAGS.items()}


class OrderItem(BaseModel):
    order = pw.ForeignKeyField(Order, backref="items", on_delete="CASCADE")
    position = pw.SmallIntegerField()
    sku = CharField(max_length=64, default="")
    name = CharField(max_length=300)
    quantity = pw.IntegerField()
    unit_price = MoneyField()

    class Meta:
        indexes = ((("order", "position"), True),)


class Event(BaseModel):
    """One entry of an order's log. Visibility follows from the kind."""
    order = pw.ForeignKeyField(Order, backref="events", on_delete="CASCADE")
    kind = CharField(max_length=20)
    author = CharField(max_length=10)
    subject = CharField(max_length=300, default="")
    body_text = TextField(default="")
    body_html = TextField(default="")
    data = JSONTextField(default=dict)
    notified = pw.BooleanField(default=False)
    message_id = CharField(max_length=255, null=True)   # unique per order and kind, but for owner mail
    created_at = pw.DateTimeField(default=utcnow)

    @property
    def visibility(self) -> str:
        return "internal" if self.kind in INTERNAL_KINDS else "public"


class Blob(BaseModel):
    """File content, stored once per SHA-256 however often it is attached."""
    sha256 = CharField(max_length=64, primary_key=True)
    size = pw.IntegerField()
    data = BytesField()


class Attachment(BaseModel):
    event = pw.ForeignKeyField(Event, backref="attachments", on_delete="CASCADE")
    blob = pw.ForeignKeyField(Blob, backref="attachments", on_delete="RESTRICT")
    filename = CharField(max_length=255)
    content_type = CharField(max_length=127)
    content_id = CharField(max_length=255, null=True)  # inline image (cid:)
    size = pw.IntegerField()


class InboundMessage(BaseModel):
    """A received mail, committed before it is acknowledged; processed later."""
    received_at = pw.DateTimeField(default=utcnow)
    channel = CharField(max_length=10)          # smtp, lmtp, imap, pipe
    envelope_from = CharField(max_length=320, default="")
    recipients = JSONTextField(default=list)
    message_id = CharField(max_length=998, null=True)
    sha256 = CharField(max_length=64)          # of the raw bytes, shown by `inbound show`
    content_key = CharField(max_length=64, null=True)   # set by the worker (inbound.content_key); indexed where set
    size = pw.IntegerField()
    state = CharField(max_length=12, default="new")  # new, done, quarantined
    reason = TextField(default="")
    attempts = pw.SmallIntegerField(default=0)
    store_failures = pw.SmallIntegerField(default=0)   # the store failing while it was in hand, since a retry
    processed_at = pw.DateTimeField(null=True)
    order = pw.ForeignKeyField(Order, null=True, backref="inbound", on_delete="SET NULL")
    claimed_by = CharField(max_length=100, default="")   # host:pid while processing

    class Meta:
        indexes = ((("state", "id"), False),)

    # The bytes as received live in InboundRaw, written once and never
    # rewritten (migration 0008 says why); read when first asked for.
    # (The name hides peewee's Model.raw(): use compiled.rows for raw SQL.)
    @property
    def raw(self) -> bytes:
        if self.__dict__.get("_raw") is None:
            from daemon.raw_io import load_raw   # raw_io reads through these models
            self.__dict__["_raw"] = load_raw(self.id)
        return self.__dict__["_raw"]

    @raw.setter
    def raw(self, value: bytes) -> None:
        self.__dict__["_raw"] = value


class InboundRaw(BaseModel):
    """A received mail's bytes: the message exactly as it came in."""
    inbound = pw.ForeignKeyField(InboundMessage, primary_key=True, backref="+", on_delete="CASCADE")
    raw = BytesField()

    class Meta:
        table_name = "inbound_raw"


class OutboxMessage(BaseModel):
    """A mail to send; queued in the same transaction as the event it tells of."""
    order = pw.ForeignKeyField(Order, null=True, backref="outbox", on_delete="CASCADE")
    event = pw.ForeignKeyField(Event, null=True, backref="outbox", on_delete="CASCADE")
    inbound = pw.ForeignKeyField(InboundMessage, null=True, backref="forwards", on_delete="CASCADE")
    kind = CharField(max_length=30)
    recipient = CharField(max_length=320)
    # Fixed when queued, so a resend after a crash carries the same Message-ID.
    message_id = CharField(max_length=255, unique=True)
    state = CharField(max_length=12, default="pending")  # pending, sent, failed
    attempts = pw.SmallIntegerField(default=0)
    next_attempt_at = pw.DateTimeField(default=utcnow)
    last_error = TextField(default="")
    created_at = pw.DateTimeField(default=utcnow)
    sent_at = pw.DateTimeField(null=True)
    data = JSONTextField(default=dict)

    class Meta:
        indexes = ((("state", "next_attempt_at"), False),)


class CommandMail(BaseModel):
    """An owner's command mail: applied once, answered by a receipt, undoable a while."""
    message_id = CharField(max_length=998, unique=True)
    inbound = pw.ForeignKeyField(InboundMessage, null=True, on_delete="SET NULL")
    sender = CharField(max_length=320)
    receipt_message_id = CharField(max_length=255, null=True, unique=True)
    created_at = pw.DateTimeField(default=utcnow)
    undo_until = pw.DateTimeField()
    undone_at = pw.DateTimeField(null=True)
    changes = JSONTextField(default=list)   # [{number, kind, event_id, before: {...}}]


class Counter(BaseModel):
    """Named sequences (order numbers), advanced inside the caller's transaction."""
    name = CharField(max_length=40, primary_key=True)
    value = pw.BigIntegerField()


MODELS = (Order, OrderItem, Event, Blob, Attachment, InboundMessage, InboundRaw, OutboxMessage, CommandMail,
          Counter)


class WriterLock:
    """SQLite's single writer, queued across threads and processes — mail intake first.

    Threads of one process queue on an in-process gate; processes (the
    daemon, its worker process, `ordermail deliver`, the CLI) on a lock file
    beside the database. Both hand over at once, where SQLite's own busy
    handler sleeps up to 100 ms between tries.

    A lock is not fair: a worker that commits and starts its next
    transaction at once would take the lock again before a waiting sender's
    commit is even scheduled. So an urgent writer (the spool, whose senders
    wait for their 250) holds a second file, the turnstile, while it waits,
    and everyone else passes the turnstile before taking the lock.
    """

    def __init__(self, path: str | None):
        self.path = path
        self.gate = threading.RLock()
        self._depth = 0
        self._fds: dict[str, int] = {}
        self._urgent_at_gate: set[int] = set()     # threads of this process; set.add is atomic

    @contextmanager
    def held(self, urgent: bool = False):
        self._pass_gate(urgent)
        try:
            outermost = self._depth == 0
            if outermost and self.path is not None:
                self._take(urgent)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if outermost and self.path is not None:
                    fcntl.flock(self._fd("writer"), fcntl.LOCK_UN)
        finally:
            self.gate.release()

    def urgent_waiting(self) -> bool:
        """Whether an urgent writer waits for the holder (who asks) to commit.

        A long transaction ends early when this says yes: a sender's 250
        waits for every millisecond it lasts. Cheap enough to ask between
        any two steps (a set, then at most two flock calls). The holder asks,
        so no other thread of its process is past the gate or at the turnstile.
        """
        if self._urgent_at_gate:
            return True
        if self.path is None:
            return False
        turnstile = self._fd("turnstile")
        try:
            fcntl.flock(turnstile, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:             # held by an urgent writer of another process
            return True
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        return False

    def _pass_gate(self, urgent: bool) -> None:
        if not urgent:
            self.gate.acquire()
            return
        me = threading.get_ident()
        self._urgent_at_gate.add(me)
        try:
            self.gate.acquire()
        finally:
            self._urgent_at_gate.discard(me)

    def _take(self, urgent: bool) -> None:
        # flock blocks without holding the interpreter lock
        turnstile, writer = self._fd("turnstile"), self._fd("writer")
        if urgent:
            fcntl.flock(turnstile, fcntl.LOCK_EX)
            try:
                fcntl.flock(writer, fcntl.LOCK_EX)
            finally:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_SH)     # waits while an urgent writer waits
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(writer, fcntl.LOCK_EX)

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(f"{self.path}-{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return fd

    def close(self) -> None:
        with self.gate:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


@dataclass
class Store:
    """An open database with the models bound to it."""
    db: pw.Database
    url: str
    writer: WriterLock = field(default_factory=lambda: WriterLock(None))
    _savepoints: threading.local = field(default_factory=threading.local, repr=False)   # depth per thread

    @property
    def backend(self) -> str:
        return "postgresql" if isinstance(self.db, pw.PostgresqlDatabase) else "sqlite"

    @contextmanager
    def atomic(self, urgent: bool = False):
        """A transaction (a savepoint when nested); yields peewee's, for rollback().

        `urgent`: someone waits for this commit (a sender for its 250), so on
        SQLite it goes before background work queued for the one writer.
        """
        if self.backend == "postgresql":
            with self._transaction() as transaction:
                yield transaction
            return
        with self.writer.held(urgent), self._transaction() as transaction:
            yield transaction

    @contextmanager
    def _transaction(self):
        """peewee's transaction; nested, a savepoint named by its depth.

        peewee names each savepoint with a fresh uuid: every SAVEPOINT and
        RELEASE is then a new statement, compiled anew and never found in the
        driver's statement cache. Names by depth repeat, so they are cached.
        """
        if not self.db.in_transaction():
            with self.db.atomic() as transaction:
                yield transaction
            return
        local = self._savepoints
        depth = getattr(local, "depth", 0) + 1
        local.depth = depth
        try:
            with pw._savepoint(self.db, f"sp{depth}") as savepoint:   # db.savepoint() takes no name
                yield savepoint
        finally:
            local.depth = depth - 1

    def urgent_waiting(self) -> bool:
        """Whether a sender waits for the one writer (SQLite) that this transaction holds."""
        return self.backend == "sqlite" and self.writer.urgent_waiting()

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()
        self.writer.close()

    def schema_status(self) -> tuple[list[str], list[str]]:
        """(applied, pending) migration names."""
        rows = Runner(self.db, str(MIGRATIONS_DIR)).status()
        return ([m.name for m in rows if m.applied], [m.name for m in rows if not m.applied])


def open_store(url: str, migrate: bool = True, *, replayable: bool = False) -> Store:
    """Connect, bind the models and bring the schema up to date.

    `replayable`: everything this store writes can be done again from what
    is already durable — the worker processes, whose input is the received
    mail committed with a full sync before it was acknowledged. On SQLite
    their commits then skip the sync (synchronous=NORMAL in WAL): an
    application crash loses nothing, a power cut may lose their last
    transactions, which are handled again from the stored mail (the next
    full sync of anyone's commit makes them durable anyway). Their commits
    hold the one write lock for a fraction of the time.
    """
    db = database_for_url(url, replayable=replayable)
    try:
        db.connect()
        db.bind(MODELS)
        store = Store(db, url, WriterLock(_lock_path(db)))
        if migrate:
            migrate_schema(store)
        return store
    except pw.OperationalError as exc:
        db.close()
        raise StoreUnavailable(f"cannot open database {redact(url)}: {first_line(exc)}") from None


def migrate_schema(store: Store) -> list[str]:
    """Apply pending migrations; refuse a database from a newer version."""
    runner = Runner(store.db, str(MIGRATIONS_DIR))
    unknown = [m.name for m in runner.status() if m.path is None]
    if unknown:
        raise StoreTooNew(f"database has migration {unknown[0]} that this ordermail does not know; "
                          "upgrade ordermail")
    return runner.up()


def _lock_path(db: pw.Database) -> str | None:
    """The lock files' stem, `<database>`, for a SQLite file; None for PostgreSQL or memory."""
    if isinstance(db, pw.SqliteDatabase) and db.database != ":memory:":
        return db.database
    return None


def database_for_url(url: str, replayable: bool = False) -> pw.Database:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:]) if parts.path != "/:memory:" else ":memory:"
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # IMMEDIATE: a write transaction takes the lock when it begins, so two
        # writers queue on busy_timeout instead of failing on lock upgrade.
        pragmas = {**SQLITE_PRAGMAS, "synchronous": 1} if replayable else SQLITE_PRAGMAS
        return pw.SqliteDatabase(path, pragmas=pragmas, lock_type="IMMEDIATE")
    options = dict(parse_qsl(parts.query))
    # READ COMMITTED whatever the server's default: a statement sees what
    # committed before it began (the duplicate check after its lock relies on it).
    return pw.PostgresqlDatabase(
        unquote(parts.path.lstrip("/")), user=unquote(parts.username or "") or None,
        password=unquote(parts.password or "") or None, host=parts.hostname or None,
        port=parts.port or None, connect_timeout=int(options.pop("connect_timeout", 5)),
        isolation_level=ISOLATION_LEVEL_READ_COMMITTED, **options)


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
