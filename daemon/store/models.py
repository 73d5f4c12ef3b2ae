"""The store's tables: peewee models, their fields, and the names their values use.

Orders and their items, the log (events) with attachments kept by content
hash, inbound messages (state; raw bytes in their own table, read by
`load_raw`), the outbox, command mails, PayPal messages and statement
entries. Opening the database, its locks and migrations live in
`database.py`.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import secrets

import peewee as pw


# Status flags of an order, kept in one integer so that any combination of
# status words in a filter becomes `status IN (…)` on one index.
PAID, SHIPPED, CANCELLED, REFUNDED = 1, 2, 4, 8
STATUS_FLAGS = {"paid": PAID, "shipped": SHIPPED, "cancelled": CANCELLED, "refunded": REFUNDED}

EVENT_KINDS = ("created", "paid", "shipped", "cancelled", "refunded", "message",
               "note", "customer_reply", "bounce", "system", "payment_reminder")
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
        if type(value) is not str:              # a str goes through the parent unchanged
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
    # The schedule for unpaid orders (migration 0018): false for orders from before it.
    on_payment_schedule = pw.BooleanField(default=True)
    payment_reminded_at = pw.DateTimeField(null=True)

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
    raw_pruned_at = pw.DateTimeField(null=True)   # the bytes were removed by `retention` ([inbound] keep_raw_days)

    class Meta:
        indexes = ((("state", "id"), False),)

    # The bytes as received live in InboundRaw, written once and never
    # rewritten (migration 0008 says why); read when first asked for.
    # (The name hides peewee's Model.raw(): use compiled.rows for raw SQL.)
    @property
    def raw(self) -> bytes:
        if self.__dict__.get("_raw") is None:
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


# Reading a stored message's raw bytes with as few copies as possible.
# SQLite: through the blob API, straight into the one bytes object returned (a
# SELECT would have SQLite assemble the value in its own memory first, then
# copy it into Python). PostgreSQL: a plain select of the column, without
# peewee's conversions on top of the driver's. Beside InboundRaw, whose bytes
# it reads (and InboundMessage.raw reads through it), not in a module of its own.
def load_raw(message_id: int, limit: int | None = None) -> bytes | None:
    """The raw bytes of inbound message `message_id` (the first `limit` of them,
    if given); None if there is no such row."""
    db = InboundRaw._meta.database
    table = InboundRaw._meta.table_name
    if isinstance(db, pw.SqliteDatabase):     # inbound_id is the rowid
        try:
            with pw.__exception_wrapper__, db.connection().blobopen(table, "raw", message_id,
                                                                    readonly=True) as blob:
                return blob.read(-1 if limit is None else limit)
        except pw.OperationalError:   # no such row (or not a blob): the plain select decides
            pass
    column = "raw" if limit is None else f"substr(raw, 1, {int(limit)})"
    cursor = db.execute_sql(f"SELECT {column} FROM {table} WHERE inbound_id = {db.param}", (message_id,))
    try:
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None or row[0] is None:
        return None
    value = row[0]
    del row
    return value if isinstance(value, bytes) else bytes(value)


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
    claimed_by = CharField(max_length=100, null=True)   # host:pid while sending (daemon/store/claimants.py)

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


class PaypalIpn(BaseModel):
    """A PayPal IPN message: stored as posted before PayPal hears 200, verified later (daemon/payments/paypal.py)."""
    received_at = pw.DateTimeField(default=utcnow)
    raw = BytesField()                                  # exactly as posted: what goes back to PayPal
    sha256 = CharField(max_length=64, unique=True)      # the same message posted twice is stored once
    size = pw.IntegerField()
    # What the message says, for listing and the txn_id rule; to be believed
    # only once `verdict` is VERIFIED.
    txn_id = CharField(max_length=64, null=True, index=True)
    invoice = CharField(max_length=127, default="")
    payment_status = CharField(max_length=40, default="")
    state = CharField(max_length=12, default="pending")   # pending, verifying, done, failed
    verdict = CharField(max_length=10, default="")        # VERIFIED or INVALID, once PayPal said so
    outcome = CharField(max_length=20, default="")        # what it did (paypal.OUTCOMES)
    reason = TextField(default="")
    attempts = pw.SmallIntegerField(default=0)
    next_attempt_at = pw.DateTimeField(default=utcnow)    # while verifying: the claim's lease
    give_up_at = pw.DateTimeField()
    last_error = TextField(default="")
    settled_at = pw.DateTimeField(null=True)
    order = pw.ForeignKeyField(Order, null=True, backref="+", on_delete="SET NULL")

    class Meta:
        table_name = "paypal_ipn"
        indexes = ((("state", "next_attempt_at"), False),)


class StatementEntry(BaseModel):
    """A credit of a bank statement, kept once by its identity (`entry_key`):
    importing a statement again passes over the entries it holds."""
    entry_key = CharField(max_length=64, unique=True)   # SHA-256 of the entry's identity at the bank
    imported_at = pw.DateTimeField(default=utcnow)
    source = CharField(max_length=20)        # camt.053, mt940, csv
    booked_on = pw.DateField(null=True)
    amount = pw.DecimalField(max_digits=18, decimal_places=3, auto_round=True)
    currency = CharField(max_length=3)
    reference = CharField(max_length=200, default="")   # the bank's reference of the entry
    payer = CharField(max_length=200, default="")
    remittance = CharField(max_length=500, default="")
    outcome = CharField(max_length=20)       # paid, already_paid, amount_differs, unmatched
    detail = CharField(max_length=300, default="")
    order = pw.ForeignKeyField(Order, null=True, backref="+", on_delete="SET NULL")

    class Meta:
        table_name = "statement_entry"


class Counter(BaseModel):
    """Named sequences (order numbers), advanced inside the caller's transaction."""
    name = CharField(max_length=40, primary_key=True)
    value = pw.BigIntegerField()


MODELS = (Order, OrderItem, Event, Blob, Attachment, InboundMessage, InboundRaw, OutboxMessage, CommandMail,
          StatementEntry, Counter, PaypalIpn)


def newest(model, state: str | None, limit: int) -> list:
    """A queue table's rows, newest first, of one state or of all (the owner's `… list`)."""
    query = model.select().order_by(model.id.desc()).limit(limit)
    return list(query.where(model.state == state) if state else query)
