"""The domain service: every change to an order goes through here.

Each change locks the order, checks the shop's rules, writes its event,
updates the order's flags and queues the customer's notification (an outbox
row) in one transaction — so a crash leaves all of it or none of it. The CLI,
mail commands, PayPal and the scheduler all call these functions; nothing
else writes orders or events. A change to one order is a batch of one: the
batch forms (`mark_paid_many`, `add_events`, for a bank statement's
thousands of credits) take the same path, `_changes`, with the same rules.

Rules a shop owner expects:
- repeating a status that already holds (paid on a paid order) changes
  nothing and says so;
- shipped is refused on a cancelled order, cancelled on a shipped one;
- refunded needs a payment and never exceeds what was paid;
- delete removes the order and its whole log for good, only with `confirm`;
- notes (and bounces, system events) are internal: never notified.
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable

import peewee as pw

from daemon.orders import filters, numbers as order_numbers
from daemon.store import compiled
from daemon.config import Settings
from daemon.errors import InputError, Refused
from daemon.orders.as_json import parse_new_order
from daemon.orders.as_text import kind_word
from daemon.mail.richtext import sanitize_html, text_to_html
from daemon.translations import N_, Said, said, say
from daemon.store.models import CANCELLED, EVENT_KINDS, PAID, REFUNDED, SHIPPED, Attachment, Blob, Counter, Event, Order, OrderItem, OutboxMessage, new_message_id, new_token, utcnow
from daemon.store.database import Store

FIRST_ORDER_NUMBER = 1001


@dataclass(frozen=True)
class NewFile:
    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None   # set for an image shown inline (cid:)


@dataclass(frozen=True)
class Content:
    """What the owner (or customer) wrote with an event."""
    subject: str = ""
    text: str = ""
    html: str = ""
    files: tuple[NewFile, ...] = ()

    def is_empty(self) -> bool:
        return not (self.text.strip() or self.html.strip() or self.files)


@dataclass(frozen=True)
class Via:
    """Who makes a change and how: the same for every kind of change."""
    author: str = "owner"
    quiet: bool = False             # the owner said `quiet`: no customer mail
    message_id: str | None = None   # the mail that made the change, if any
    now: object = None              # a datetime; None means the clock


@dataclass(frozen=True, slots=True)
class Change:
    """The answer to one change: done, or nothing changed (and why)."""
    number: str
    done: bool
    summary: str
    notified: bool = False
    data: dict = field(default_factory=dict)
    event_id: int | None = None
    prior: tuple = field(default=(), repr=False)   # when done: the STATE_FIELDS under the order's lock

    @property
    def before(self) -> dict:
        """The order's `snapshot` before this change, for undo (empty if nothing changed)."""
        return _state(dict(zip(STATE_FIELDS, self.prior))) if self.prior else {}


@dataclass(frozen=True, slots=True)
class PerOrder:
    """One order of a batch call: its number, what its event keeps in its data,
    and what was written with it."""
    number: str
    data: dict | None = None
    content: Content = Content()


class _Unchanged(Exception):
    """Raised by a rule when the order is already as asked."""


# ---- reading ---------------------------------------------------------------

def find_order(number: str) -> Order:
    """The order `number` names, in any case (order_numbers says why)."""
    number = number.lstrip("#")
    return order_numbers.pick(number, list(Order.select().where(order_numbers.matching(number))))


def order_events(order: Order) -> list[Event]:
    return list(Event.select().where(Event.order == order).order_by(Event.id))


# ---- creating --------------------------------------------------------------

def create_order(store: Store, settings: Settings, data, *, quiet: bool = False, now=None) -> Order:
    """Create an order from the contract's JSON; queue the customer's confirmation."""
    new = parse_new_order(data, settings)
    now = now or utcnow()
    customer_key, surname_key = filters.name_keys(new.customer_name)
    try:
        with store.atomic():
            _refuse_taken_number(new.number)
            order = Order.create(
                number=new.number or _next_number(), customer_name=new.customer_name,
                customer_email=new.customer_email, customer_key=customer_key,
                surname_key=surname_key, total=new.total, currency=new.currency,
                payment_method=new.payment_method, locale=new.locale,
                created_at=now, updated_at=now)
            for position, item in enumerate(new.items):
                OrderItem.create(order=order, position=position, sku=item.sku, name=item.name,
                                 quantity=item.quantity, unit_price=item.unit_price)
            writes = _Writes(settings)
            writes.log(order, "created", Via(author="system", quiet=quiet, now=now), Content(), {}, now)
            writes.flush()
    except pw.IntegrityError:
        raise Refused(f"order {new.number} exists already") from None
    return order


def _refuse_taken_number(number: str | None) -> None:
    """A number that exists in any case is refused (the unique index may be missing: order_numbers)."""
    existing = order_numbers.taken_as(number) if number else None
    if existing is not None:
        raise Refused(f"order {number} exists already" + (f" (as {existing})" if existing != number else ""))


def _next_number() -> str:
    """The next free number, counted in the caller's transaction."""
    while True:
        updated = Counter.update(value=Counter.value + 1).where(Counter.name == "order_number").execute()
        if not updated:
            Counter.create(name="order_number", value=FIRST_ORDER_NUMBER)
        number = str(Counter.get_by_id("order_number").value)
        if order_numbers.taken_as(number) is None:
            return number


# ---- status changes ----------------------------------------------------------

def mark_paid(store, settings, number, *, content=Content(), via=Via(), data=None) -> Change:
    """`data`: where the payment came from, kept in the event (PayPal's txn_id, a shop's hook,
    a bank statement's entry reference)."""
    return mark_paid_many(store, settings, [PerOrder(number, data, content)], via=via)[0]


def mark_paid_many(store, settings, payments: list[PerOrder], *, via=Via()) -> list[Change]:
    """`mark_paid` of several orders in one transaction (a bank statement's
    credits), a Change each, in order; an order named twice is paid once."""
    def rule(data):
        def apply(order, now):
            if order.has(PAID):
                raise _Unchanged(Said("%(number)s was already paid on %(day)s; nothing changed",
                                      number=order.number, day=_day(order.paid_at)))
            order.status |= PAID
            order.paid_at = now
            hint = Said(" (note: it is cancelled)") if order.has(CANCELLED) else ""
            return dict(data or {}), Said("%(number)s marked paid%(hint)s", number=order.number, hint=hint)
        return apply
    return _changes(store, settings, "paid", via, [_Ask(p.number, p.content, rule(p.data)) for p in payments])


def mark_shipped(store, settings, number, *, tracking=None, carrier=None,
                 content=Content(), via=Via()) -> Change:
    def apply(order, now):
        if order.has(CANCELLED):
            raise Refused(Said("%(number)s was cancelled on %(day)s; a cancelled order is not shipped",
                               number=order.number, day=_day(order.cancelled_at)))
        news = {k: v for k, v in (("tracking_code", tracking), ("carrier", carrier))
                if v and v != getattr(order, k)}
        if order.has(SHIPPED) and not news and content.is_empty():
            raise _Unchanged(Said("%(number)s was already shipped on %(day)s; nothing changed",
                                  number=order.number, day=_day(order.shipped_at)))
        for key, value in news.items():
            setattr(order, key, value)
        data = {"tracking_code": order.tracking_code, "carrier": order.carrier}
        if order.has(SHIPPED):
            return {**data, "update": True}, Said("%(number)s shipping details updated", number=order.number)
        order.status |= SHIPPED
        order.shipped_at = now
        return data, Said("%(number)s marked shipped%(tracking)s", number=order.number, tracking=_tracking_words(order))
    return _change(store, settings, number, "shipped", content, via, apply)


def mark_cancelled(store, settings, number, *, reason="", content=Content(), via=Via()) -> Change:
    def apply(order, now):
        return _cancel(order, now, {"reason": reason})
    return _change(store, settings, number, "cancelled", _with_reason(content, reason), via, apply)


def cancel_unpaid(store, settings, number, *, reason: str, via=Via(author="system")) -> Change:
    """The schedule's cancellation of an order nobody paid. Checked again under the
    order's lock: a payment booked a moment before wins, and nothing changes."""
    def apply(order, now):
        if order.has(PAID):
            raise _Unchanged(f"{order.number} was paid on {_day(order.paid_at)}; not cancelled")
        if order.has(SHIPPED) and not order.has(CANCELLED):
            raise _Unchanged(f"{order.number} was shipped on {_day(order.shipped_at)}; a shipped order "
                             "is not cancelled for want of payment")
        return _cancel(order, now, {"reason": reason, "unpaid": True})
    return _change(store, settings, number, "cancelled", Content(text=reason), via, apply)


def _cancel(order: Order, now, data: dict) -> tuple[dict, str]:
    if order.has(CANCELLED):
        raise _Unchanged(Said("%(number)s was already cancelled on %(day)s; nothing changed",
                               number=order.number, day=_day(order.cancelled_at)))
    if order.has(SHIPPED):
        raise Refused(f"{order.number} was shipped on {_day(order.shipped_at)}; "
                      "a shipped order is refunded, not cancelled")
    order.status |= CANCELLED
    order.cancelled_at = now
    hint = Said(" (it was paid: refund it with 'refunded %(number)s')", number=order.number) if order.has(PAID) else ""
    return data, Said("%(number)s cancelled%(hint)s", number=order.number, hint=hint)


def send_payment_reminder(store, settings, number, *, pay_by: dt.date | None = None,
                          via=Via(author="system")) -> Change:
    """The one reminder of an unpaid order: a public event and the customer's mail.

    At most one per order, whoever runs it how often: the order's lock is held
    while `payment_reminded_at` is checked and set. `pay_by` is the last day
    before the schedule cancels the order (None: it never does); the mail says it.
    """
    def apply(order, now):
        if order.has(PAID) or order.has(CANCELLED):
            raise _Unchanged(f"{order.number} is {'paid' if order.has(PAID) else 'cancelled'}; no reminder")
        if order.payment_reminded_at is not None:
            raise _Unchanged(f"{order.number} was reminded on {_day(order.payment_reminded_at)} already")
        order.payment_reminded_at = now
        return ({"pay_by": pay_by.isoformat() if pay_by else None},
                f"{order.number}: payment reminder sent")
    return _change(store, settings, number, "payment_reminder", Content(), via, apply)


def mark_refunded(store, settings, number, *, amount=None, reason="", content=Content(), via=Via()) -> Change:
    def apply(order, now):
        if not order.has(PAID):
            raise Refused(Said("%(number)s is not paid; only a payment can be refunded", number=order.number))
        already = order.refunded_amount or decimal.Decimal("0.00")
        left = order.total - already
        if left <= 0:
            raise _Unchanged(Said("%(number)s was already refunded in full; nothing changed", number=order.number))
        refund = left if amount is None else amount
        if refund <= 0 or refund > left:
            raise Refused(Said("%(number)s: a refund of %(refund)s %(currency)s is more than the %(left)s %(currency)s "
                               "left to refund", number=order.number, refund=refund, left=left,
                               currency=order.currency) if refund > 0 else
                          Said("%(number)s: a refund must be more than 0", number=order.number))
        order.status |= REFUNDED
        order.refunded_at = now
        order.refunded_amount = already + refund
        return ({"amount": str(refund), "reason": reason},
                Said("%(number)s refunded %(refund)s %(currency)s", number=order.number, refund=refund,
                     currency=order.currency))
    return _change(store, settings, number, "refunded", _with_reason(content, reason), via, apply)


# ---- messages and notes --------------------------------------------------------

def add_message(store, settings, number, content: Content, *, via=Via()) -> Change:
    """A message from the shop to the customer: logged and mailed."""
    return _add_text(store, settings, number, content, via, "message", N_("message to the customer"))


def add_note(store, settings, number, content: Content, *, via=Via()) -> Change:
    """An internal note: logged, never mailed, never shown to the customer."""
    return _add_text(store, settings, number, content, via, "note", N_("internal note"))


def add_event(store, settings, number, kind: str, content: Content, *, via=Via(), data=None) -> Change:
    """Log an event that changes no status (customer replies, bounces, system)."""
    return add_events(store, settings, kind, [PerOrder(number, data, content)], via=via)[0]


def add_events(store, settings, kind: str, events: list[PerOrder], *, via=Via()) -> list[Change]:
    """`add_event` on several orders in one transaction, a Change each."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")

    def rule(data):
        return lambda order, now: (data or {}, f"{order.number}: {kind.replace('_', ' ')} logged")
    return _changes(store, settings, kind, via, [_Ask(e.number, e.content, rule(e.data)) for e in events])


def _add_text(store, settings, number, content, via, kind, what) -> Change:
    if content.is_empty():
        raise InputError(Said("the %(what)s for %(number)s has no text", what=Said(what), number=number))
    return _change(store, settings, number, kind, content, via,
                   lambda order, now: ({}, Said("%(number)s: %(what)s added", number=order.number, what=Said(what))))


# ---- the status link -------------------------------------------------------------------

def reissue_status_link(store, settings, number, *, mail: bool = True, via=Via()) -> Change:
    """A new status-page token (the old link dies at once), logged internally;
    the new link is mailed to the customer unless told not to."""
    def apply(order, now):
        order.status_token = new_token()
        order.status_token_issued_at = now
        if mail:
            queue_mail(settings, "status_link", order.customer_email, order=order, now=now,
                       data={"reason": "relink" if via.author == "owner" else "expired"})
        summary = (Said("%(number)s: status link re-issued and mailed to the customer", number=order.number) if mail
                   else Said("%(number)s: status link re-issued (not mailed)", number=order.number))
        return {"status_link": "reissued", "mailed": mail}, summary
    return _change(store, settings, number, "system", Content(subject="Status link re-issued"), via, apply)


# ---- bounces ------------------------------------------------------------------------

def record_bounce(store, settings, number, content: Content, data: dict, *, via=Via()) -> Change:
    """An internal `bounce` event; a permanent failure for the customer's
    address flags it, and the owner is told once per order — when the bounce
    `counts` (it names a mail we sent to that address: mail_handlers)."""
    def apply(order, now):
        failed = (data.get("recipient") or order.customer_email).lower()
        if not data.get("counts", True):
            return data, f"{order.number}: bounce logged, not counted (it names no mail we sent to {failed})"
        if data.get("permanent") and failed == order.customer_email and order.email_bounced_at is None:
            order.email_bounced_at = now
            order.email_bounce = f"{data.get('status', '')} {content.text}".strip()[:300]
            for owner in settings.owner.addresses:
                queue_mail(settings, "owner_alert", owner, order=order, now=now, data={
                    "topic": "bounce",
                    "text": say(Said("Mail to the customer of order %(number)s (%(email)s) bounced: %(bounce)s. "
                                     "Please reach them another way.", number=order.number,
                                     email=order.customer_email, bounce=order.email_bounce),
                                settings.shop.locale, settings.outbound.templates_dir)})
            return data, f"{order.number}: bounce logged, {order.customer_email} flagged, owner told"
        return data, f"{order.number}: bounce logged"
    return _change(store, settings, number, "bounce", content, via, apply)


# ---- undoing ------------------------------------------------------------------------

STATE_FIELDS = ("status", "paid_at", "shipped_at", "cancelled_at", "refunded_at",
                "refunded_amount", "tracking_code", "carrier")
STATUS_KINDS = ("paid", "shipped", "cancelled", "refunded")


def snapshot(number: str) -> dict:
    """The order's status fields as JSON values, to put back on undo."""
    return _state(find_order(number).__data__)


def _state(values: dict) -> dict:
    return {name: _json_value(values.get(name)) for name in STATE_FIELDS}


def undo_event(store, settings, number, event_id: int, before: dict, *, via=Via()) -> Change:
    """Put an order back as it was before one event; the log keeps both, internally.

    Refused when the order changed status again since: undoing the older
    change would silently undo the newer one too.
    """
    def apply(order, now):
        event = Event.get_or_none((Event.id == event_id) & (Event.order == order))
        if event is None:
            raise Refused(Said("%(number)s: that change is no longer in the log", number=order.number))
        if event.data.get("undone"):
            raise _Unchanged(Said("%(number)s: %(kind)s was already undone", number=order.number,
                                  kind=kind_word(event.kind)))
        later = Event.select().where((Event.order == order) & (Event.id > event.id) & Event.kind.in_(STATUS_KINDS))
        if event.kind in STATUS_KINDS and any(not e.data.get("undone") for e in later):
            raise Refused(Said("%(number)s changed again since; undo that by hand", number=order.number))
        if event.kind in STATUS_KINDS:
            for name, value in before.items():
                setattr(order, name, _from_json(name, value))
        event.data = {**event.data, "undone": True}
        event.save(only=[Event.data])
        mailed = Said(" (the customer had already been mailed)") if event.notified else ""
        return {"undoes": event.id, "kind": event.kind}, Said("%(number)s: %(kind)s undone%(mailed)s",
                                                              number=order.number, kind=kind_word(event.kind), mailed=mailed)
    return _change(store, settings, number, "system", Content(subject="Undone by the owner"), via, apply)


def _json_value(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value) if isinstance(value, decimal.Decimal) else value


def _from_json(name: str, value):
    if value is None or name in ("status", "tracking_code", "carrier"):
        return value
    return decimal.Decimal(value) if name == "refunded_amount" else dt.datetime.fromisoformat(value)


# ---- deleting --------------------------------------------------------------------

def delete_order(store: Store, number: str, *, confirm: bool) -> Change:
    """Remove an order and its whole log for good — only when confirmed."""
    if not confirm:
        raise Refused(Said("deleting removes order %(number)s and its whole log for good; "
                           "write 'delete %(number)s confirm' to do it", number=number))
    with store.atomic():
        events = _delete(_locked_order(store, number))
    return Change(number, True, Said("order %(number)s and its log (%(events)s events) deleted for good",
                                     number=number, events=events))


def delete_cancelled(store: Store, number: str, *, quiet_since) -> Change:
    """The retention's delete: only while the order is still cancelled, nothing in its
    log is newer than `quiet_since`, no payment is left to refund and no mail of it
    waits in the outbox — checked under the order's lock."""
    with store.atomic():
        order = _locked_order(store, number)
        reason = _keep_reason(order, quiet_since)
        if reason:
            return Change(order.number, False, Said("%(number)s kept: %(reason)s", number=order.number, reason=reason))
        events = _delete(order)
    return Change(number, True, Said("order %(number)s and its log (%(events)s events) deleted for good",
                                     number=number, events=events))


def _keep_reason(order: Order, quiet_since) -> str:
    if not order.has(CANCELLED):
        return Said("no longer cancelled")
    if order.updated_at >= quiet_since:
        return Said("changed since")
    if order.has(PAID) and (order.refunded_amount or 0) < order.total:
        return Said("paid and not refunded in full")
    if OutboxMessage.select().where((OutboxMessage.order == order)
                                    & OutboxMessage.state.in_(("pending", "sending"))).exists():
        return Said("a mail about it is still to be sent")
    return ""


def _delete(order: Order) -> int:
    """Remove the order (its items, log, files and mails cascade); the number of events."""
    events = Event.select().where(Event.order == order).count()
    blobs = [a.blob_id for a in Attachment.select(Attachment.blob)
             .join(Event).where(Event.order == order)]
    order.delete_instance(recursive=False)   # the database cascades
    _drop_unused_blobs(blobs)
    return events


def _drop_unused_blobs(shas: list[str]) -> None:
    for sha in set(shas):
        if not Attachment.select().where(Attachment.blob == sha).exists():
            Blob.delete().where(Blob.sha256 == sha).execute()


# ---- the one path every change takes ---------------------------------------------

@dataclass(frozen=True, slots=True)
class _Ask:
    """One change asked of `_changes`: the order, what was written with it, and
    its rule: apply(order, now) -> (the event's data, the summary), or raises
    _Unchanged (nothing to do) or Refused (not allowed)."""
    number: str
    content: Content
    apply: Callable


def _change(store, settings, number, kind, content, via, apply) -> Change:
    """Lock, check the rule (`apply`), log, notify — all in one transaction."""
    return _changes(store, settings, kind, via, [_Ask(number, content, apply)])[0]


def _changes(store, settings, kind, via, asks: list[_Ask]) -> list[Change]:
    """`_change` for each ask, in turn, in one transaction; a Change each.

    The orders are locked by one read per few hundred; each rule sees its
    order as the asks before it left it. Their new values, events and the
    customers' mails are written together (`_Writes`), and before an order's
    second ask, so that what reads the database (the once-per-mail check, an
    undo) sees the first. An unknown order or a refused rule raises and rolls
    all of them back, as it does the one.
    """
    if not asks:
        return []
    for ask in asks:
        _check_content(settings, ask.content)
    with store.atomic():
        locked = _locked_orders(store, [ask.number for ask in asks])
        writes = _Writes(settings)
        answers = []
        for ask in asks:
            order = locked[ask.number.lstrip("#")]
            if writes.holds(order):
                writes.flush()
            answers.append(_apply(order, kind, via, ask, writes))
        writes.flush()
    return [answer() if callable(answer) else answer for answer in answers]


def _apply(order: Order, kind: str, via: Via, ask: _Ask, writes: "_Writes"):
    """A Change where nothing changed, else what makes the Change once `writes` are flushed."""
    if via.message_id and via.author != "owner" and _already_logged(order, kind, via.message_id):
        return Change(order.number, False, Said("%(number)s: already done by this mail; nothing changed",
                                                 number=order.number))
    now = via.now or utcnow()
    prior = tuple(map(order.__data__.get, STATE_FIELDS))
    try:
        data, summary = ask.apply(order, now)
    except _Unchanged as unchanged:
        return Change(order.number, False, said(unchanged))
    order.updated_at = now
    event = writes.log(order, kind, via, ask.content, data, now)
    if kind in NOTIFYING_KINDS and not event.notified:
        summary += Said(" (customer not notified)")
    return lambda: Change(order.number, True, summary, event.notified, data, event.id, prior)


def _locked_orders(store: Store, numbers: list[str]) -> dict[str, Order]:
    """The orders by number as named (without '#'), found whatever its case
    (order_numbers); OrderNotFound for the first one missing."""
    # FOR UPDATE on PostgreSQL, in id order (two batches never wait for each other crosswise);
    # SQLite's IMMEDIATE transaction already serialises
    locking = store.backend == "postgresql"
    wanted = list(dict.fromkeys(number.lstrip("#") for number in numbers))
    keys = list(dict.fromkeys(order_numbers.folded(number) for number in wanted))
    rows: dict[str, list[Order]] = {}
    for chunk in compiled.padded(keys):
        for order in compiled.every(Order, ("orders.locked", len(chunk)), lambda: _locking(Order.select().where(
                pw.fn.LOWER(Order.number).in_([""] * len(chunk))), locking), *chunk):
            rows.setdefault(order_numbers.folded(order.number), []).append(order)
    return {number: order_numbers.pick(number, rows.get(order_numbers.folded(number), [])) for number in wanted}


def _locking(query, locking: bool):
    return query.order_by(Order.id).for_update() if locking else query


def _locked_order(store: Store, number: str) -> Order:
    return _locked_orders(store, [number])[number.lstrip("#")]


def _already_logged(order: Order, kind: str, message_id: str) -> bool:
    # The literal author term lets both databases answer from the partial unique
    # index event_mail_once (WHERE author <> 'owner'), which it mirrors, instead
    # of reading the order's whole log.
    return compiled.exists(Event, "orders.already_logged", lambda: Event.select().where(
        (Event.order == 0) & (Event.kind == "") & (Event.message_id == "")
        & pw.SQL("\"author\" <> 'owner'")), order.id, kind, message_id)


class _NewEvent:
    """An event a batch logs: its row, and its id once written."""
    __slots__ = ("order", "row", "files", "notified", "id")

    def __init__(self, order: Order, row: dict, files: tuple, notified: bool):
        self.order, self.row, self.files, self.notified, self.id = order, row, files, notified, None


class _Writes:
    """What a batch of changes writes, held until `flush`: the orders' new
    values (one UPDATE for all orders given the same values), their events
    and the customers' mails (multi-row INSERTs). The events' ids are drawn
    first, so that the mails can name them."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.orders: dict[int, Order] = {}
        self.events: list[_NewEvent] = []

    def holds(self, order: Order) -> bool:
        return order.id in self.orders

    def log(self, order: Order, kind: str, via: Via, content: Content, data: dict, now) -> _NewEvent:
        html = sanitize_html(content.html) if content.html.strip() else text_to_html(content.text)
        # Whether the customer is mailed is known now: the row is written once, already saying so.
        notified = kind in NOTIFYING_KINDS and not via.quiet
        row = {"order": order.id, "kind": kind, "author": via.author, "subject": content.subject[:300],
               "body_text": content.text, "body_html": html, "data": data, "notified": notified,
               "message_id": via.message_id, "created_at": now}
        event = _NewEvent(order, row, content.files, notified)
        self.orders[order.id] = order
        self.events.append(event)
        return event

    def flush(self) -> None:
        self._update_orders()
        if len(self.events) == 1:      # the common case (a reply): the INSERT returns the id, one round trip less
            [event] = self.events
            event.id = event.row["id"] = compiled.insert(Event, **event.row)
        else:
            for event, key in zip(self.events, compiled.new_keys(Event, len(self.events))):
                event.id = event.row["id"] = key
            compiled.insert_many(Event, [event.row for event in self.events])
        for event in self.events:
            for file in event.files:
                _attach(event.id, file)
        mails: list[dict] = []
        for event in self.events:
            if event.notified:      # the customer's mail of each event `log` marked so (public, not quiet)
                queue_mail(self.settings, event.row["kind"], event.order.customer_email, order=event.order,
                           event=event.id, now=event.row["created_at"], batch=mails)
        compiled.insert_many(OutboxMessage, mails)
        self.orders.clear()
        self.events.clear()

    def _update_orders(self) -> None:
        """What the rules assigned (peewee's dirty fields), and updated_at."""
        alike: dict[tuple, list[int]] = {}
        for order in self.orders.values():
            values = tuple(sorted((name, order.__data__.get(name)) for name in order._dirty if name != "id"))
            order._dirty.clear()
            if values:
                alike.setdefault(values, []).append(order.id)
        for values, ids in alike.items():
            compiled.update_many(Order, ids, **dict(values))


def _attach(event_id: int, file: NewFile) -> None:
    sha = hashlib.sha256(file.data).hexdigest()
    Blob.insert(sha256=sha, size=len(file.data), data=file.data).on_conflict_ignore().execute()
    Attachment.create(event=event_id, blob=sha, filename=file.filename[:255],
                      content_type=file.content_type[:127], content_id=file.content_id,
                      size=len(file.data))


NOTIFYING_KINDS = frozenset({"created", "paid", "shipped", "cancelled", "refunded", "message", "payment_reminder"})


def queue_mail(settings: Settings, kind: str, recipient: str, *, order=None, event=None,
               inbound=None, data=None, now=None, batch: list | None = None) -> OutboxMessage | None:
    """An outbox row; call inside the transaction of what the mail tells of.

    `batch`: the row goes to that list instead, for the caller to insert
    with the others of its batch (`_Writes.flush`); None is returned."""
    now = now or utcnow()
    row = {"order": order, "event": event, "inbound": inbound, "kind": kind, "recipient": recipient,
           "data": data or {}, "message_id": new_message_id(settings.shop.domain),
           "next_attempt_at": now, "created_at": now}
    if batch is not None:
        batch.append(row)
        return None
    return compiled.create(OutboxMessage, **row)


def mailed_recently(kind: str, recipient: str, now, hours: int = 24) -> bool:
    """Whether a mail of this kind went to this address lately (once-a-day rules)."""
    since = now - dt.timedelta(hours=hours)
    return compiled.exists(OutboxMessage, "orders.mailed_recently", lambda: OutboxMessage.select().where(
        (OutboxMessage.recipient == "") & (OutboxMessage.kind == "")
        & (OutboxMessage.created_at > dt.datetime.min)), recipient, kind, since)


def alerts_since(recipient: str, topic: str, since) -> int:
    """Owner alerts of one topic queued to `recipient` since then: what alert rate bounds count.

    The pattern goes to the database as written: peewee's `contains` would
    pass a plain string through the JSON column's converter, which quotes it
    once more (and matches nothing). ILIKE: peewee's LIKE is GLOB on SQLite."""
    pattern = pw.Value(f'%"topic": {json.dumps(topic)}%', converter=False)
    return (OutboxMessage.select(OutboxMessage.id).where(
        (OutboxMessage.recipient == recipient) & (OutboxMessage.kind == "owner_alert")
        & (OutboxMessage.created_at > since) & pw.Expression(OutboxMessage.data, pw.OP.ILIKE, pattern)).count())


def _check_content(settings: Settings, content: Content) -> None:
    """Bounds checked before the transaction, so nothing is half-written."""
    limits = settings.limits
    if len(content.text) > limits.event_body_max_chars or len(content.html) > limits.event_body_max_chars:
        raise InputError(f"the text is longer than {limits.event_body_max_chars} characters")
    for file in content.files:
        if len(file.data) > limits.attachment_max_bytes:
            raise InputError(f"the file {file.filename} is {_size(len(file.data))}, "
                             f"over the limit of {_size(limits.attachment_max_bytes)}")


def _with_reason(content: Content, reason: str) -> Content:
    if not reason or content.text:
        return content
    return Content(subject=content.subject, text=reason, html=content.html, files=content.files)


def _tracking_words(order: Order) -> str:
    if order.carrier and order.tracking_code:
        return Said(" (carrier %(carrier)s, tracking %(code)s)", carrier=order.carrier, code=order.tracking_code)
    if order.carrier:
        return Said(" (carrier %(carrier)s)", carrier=order.carrier)
    return Said(" (tracking %(code)s)", code=order.tracking_code) if order.tracking_code else ""


def _day(moment) -> str:
    return moment.strftime("%Y-%m-%d") if moment else "an unknown day"


def _size(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB" if n >= 1_048_576 else f"{n / 1024:.0f} KB"

