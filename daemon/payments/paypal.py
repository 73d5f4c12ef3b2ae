"""PayPal IPN: a message stored as posted, and what a verified one does to an order.

PayPal posts an IPN (form-encoded fields) to `POST /hooks/paypal-ipn` and
wants an empty 200 at once, or it sends the message again. So `receive`
only checks that the body is an IPN at all and commits it, bytes
unchanged, before the route answers; the stored row is the queue. The
verifier (daemon/payments/paypal_verifier.py, in the daemon) posts it back to PayPal
and hands the answer to `settle`, which applies these rules in one
transaction with the row's end:

- INVALID: PayPal did not send it (forged or altered). Nothing happens
  but a log line and the row's outcome (counted in /metrics); an outsider
  may post as many as he likes, so the owner gets no mail for them.
- VERIFIED and `payment_status` Completed: paid only when `receiver_email`
  is ours, the order named by `invoice` exists, `mc_currency` and
  `mc_gross` are the order's, and the `txn_id` made nothing paid before —
  through `orders.mark_paid` (author system, txn_id in the event's data),
  which mails the customer as `paid` does. A wrong receiver, currency or
  amount on a known order becomes an internal event and an alert to the
  owner. An invoice we do not know yet is looked for again for
  `ORDER_WAIT` (the shop's webhook may come after PayPal), then the owner is
  told: money arrived that matches no order.
- Pending: an internal event with PayPal's `pending_reason`; Refunded,
  Reversed, Canceled_Reversal: an internal event and an alert (the owner
  decides whether to write `refunded N`); other statuses: an internal event.
- The same txn_id with the same status again (a replay, PayPal's `resend`)
  changes nothing. The partial unique index paypal_ipn_paid_txn makes sure
  a txn_id pays once even with several verifiers racing.

Alerts are bounded: at most `ALERTS_PER_HOUR` PayPal alerts reach an owner
address per hour, whatever anyone posts; the rest are logged and stay
visible in `ordermail payments ipn list` and on the orders.
"""
from __future__ import annotations

import codecs
import datetime as dt
import decimal
import hashlib
import logging
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

import peewee as pw

from daemon.orders import service as orders
from daemon.config import Settings
from daemon.errors import InputError, OrdermailError, Refused
from daemon.orders.service import Content, Via
from daemon.outbound.outbox import doubling_backoff
from daemon.store.models import CANCELLED, Event, Order, PaypalIpn, newest, utcnow
from daemon.store.database import Store
from daemon.translations import N_, Said

log = logging.getLogger("ordermail.paypal")
IPN_MAX_BYTES = 64 * 1024          # PayPal's messages are 1–3 KB; a cart of 100 items about 15 KB
MAX_FIELDS = 2000
MAX_QUEUED = 1000                  # messages waiting for verification; more are answered 503 (PayPal retries)
ORDER_WAIT = dt.timedelta(hours=24)
ALERTS_PER_HOUR = 5
DEFAULT_CHARSET = "windows-1252"   # PayPal's default when a message names none
REVERSALS = ("Refunded", "Reversed", "Canceled_Reversal")
# Fields the rules read: a message that repeats one of them is not taken at its word.
DECISION_FIELDS = ("payment_status", "txn_id", "invoice", "receiver_email", "mc_gross", "mc_currency",
                   "parent_txn_id")
STATES = ("pending", "verifying", "done", "failed")

# Why a message was settled so: stored in English (the log, `--format json`); `ipn list`
# and `ipn show` say a stored reason in the shop's language when it reads as one of these.
REASONS = {
    "made_paid": N_("txn_id %(txn)s made an order paid already"),
    "invalid": N_("PayPal says INVALID: it did not send this message (forged or altered)"),
    "repeated": N_("the field %(field)s appears more than once"),
    "not_payment": N_("not about a payment (txn_type %(txn_type)s)"),
    "no_txn": N_("no usable txn_id"),
    "handled": N_("txn_id %(txn)s (%(status)s) was handled before, as message %(id)s"),
    "receiver": N_("a payment to %(receiver)s, not to our %(ours)s"),
    "no_order_status": N_("%(status)s: no order %(invoice)s"),
    "waiting": N_("waiting for order %(invoice)s to arrive"),
    "no_order": N_("no order %(invoice)s"),
    "not_amount": N_("mc_gross %(gross)s is not an amount"),
    "currency": N_("paid in %(currency)s, the order is in %(other)s"),
    "amount": N_("paid %(amount)s %(currency)s, the order's total is %(total)s %(other)s"),
    "paid_already": N_("txn_id %(txn)s paid %(number)s already"),
    "already_paid": N_("%(number)s was already paid; logged"),
}
_READ_BACK = [(msgid, re.compile(re.sub(r"%\\\((\w+)\\\)s", r"(?P<\1>.*?)", re.escape(msgid)), re.S))
              for msgid in REASONS.values()]


def _why(key: str, **values) -> Said:
    return Said(REASONS[key], **values)


def reason_said(stored: str) -> str:
    """A stored reason as a Said when it reads as one of REASONS (else as it is: a parser's error, a summary)."""
    for msgid, pattern in _READ_BACK:
        found = pattern.fullmatch(stored)
        if found:
            return Said(msgid, **found.groupdict())
    return stored
OUTCOMES = ("paid", "already_paid", "pending", "reversal", "noted", "wrong_receiver", "wrong_currency",
            "wrong_amount", "unknown_invoice", "replay", "ignored", "malformed", "invalid")


class NotAnIpn(InputError):
    """The body is no IPN at all (answered 400; PayPal never sends such)."""


class QueueFull(OrdermailError):
    """Too many messages wait for verification: answered 503, and PayPal sends it again later."""


@dataclass(frozen=True)
class IpnMessage:
    """The fields of an IPN, decoded with the message's own `charset`."""
    pairs: tuple[tuple[str, str], ...]
    charset: str

    def get(self, name: str) -> str:
        return next((value for key, value in self.pairs if key == name), "")

    def repeated(self, names) -> list[str]:
        return [name for name in names if sum(1 for key, _ in self.pairs if key == name) > 1]


@dataclass(frozen=True)
class Received:
    ipn_id: int
    duplicate: bool       # the very same message was stored before


@dataclass(frozen=True)
class Settled:
    """What a message did: its outcome and why, or that it waits for its order."""
    outcome: str
    reason: str
    order_id: int | None = None
    wait: bool = False


# ---- reading a message ----------------------------------------------------------------

def parse(raw: bytes) -> IpnMessage:
    """The message's fields; NotAnIpn for a body that is no IPN."""
    try:
        # latin-1 keeps every byte as one character: the percent-decoded
        # bytes are decoded again below, with the charset the message names.
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, strict_parsing=True,
                          encoding="latin-1", max_num_fields=MAX_FIELDS)
    except ValueError as exc:
        raise NotAnIpn(f"the body is not form data: {exc}") from None
    charset = _codec(next((value for key, value in pairs if key == "charset"), ""))
    message = IpnMessage(tuple((_recode(key, charset), _recode(value, charset)) for key, value in pairs), charset)
    if not (message.get("verify_sign") and (message.get("payment_status") or message.get("txn_type"))):
        raise NotAnIpn("the body is no PayPal IPN: it has no verify_sign, payment_status or txn_type")
    return message


def _codec(name: str) -> str:
    """A text codec for PayPal's charset name; its default for one Python does not know."""
    try:
        b"".decode(name)     # refuses bytes-to-bytes codecs (zlib) and str-to-str ones (rot13)
        return codecs.lookup(name).name
    except (LookupError, TypeError, ValueError):
        return DEFAULT_CHARSET


def _recode(text: str, charset: str) -> str:
    return text.encode("latin-1").decode(charset, "replace")


# ---- receiving -------------------------------------------------------------------------

def receive(store: Store, settings: Settings, raw: bytes, now: dt.datetime | None = None) -> Received:
    """Store a posted message before it is answered; the same message again is stored once."""
    message = parse(raw)
    sha = hashlib.sha256(raw).hexdigest()
    now = now or utcnow()
    try:
        with store.atomic():
            known = PaypalIpn.get_or_none(PaypalIpn.sha256 == sha)
            if known is not None:
                return Received(known.id, duplicate=True)
            if queued() >= MAX_QUEUED:
                raise QueueFull(f"{MAX_QUEUED} PayPal messages wait for verification; try again later")
            row = PaypalIpn.create(
                received_at=now, raw=raw, sha256=sha, size=len(raw), txn_id=message.get("txn_id")[:64] or None,
                invoice=message.get("invoice")[:127], payment_status=message.get("payment_status")[:40],
                next_attempt_at=now, give_up_at=now + dt.timedelta(hours=settings.paypal.give_up_after_hours))
    except pw.IntegrityError:        # posted twice at once: the other request stored it
        return Received(PaypalIpn.get(PaypalIpn.sha256 == sha).id, duplicate=True)
    return Received(row.id, duplicate=False)


def retry_delay(settings: Settings, attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=doubling_backoff(settings.paypal.retry_base_seconds, attempts))


def queued() -> int:
    return (PaypalIpn.select(PaypalIpn.id).where(PaypalIpn.state.in_(("pending", "verifying")))
            .limit(MAX_QUEUED).count())


# ---- settling: what PayPal's answer does --------------------------------------------------

def settle(store: Store, settings: Settings, ipn_id: int, verdict: str, now: dt.datetime) -> Settled:
    """Apply PayPal's answer (VERIFIED or INVALID) to the stored message, in one transaction."""
    try:
        with store.atomic():
            row = PaypalIpn.get_by_id(ipn_id)
            settled = _decide(store, settings, row, verdict, now)
            _record(settings, row, verdict, settled, now)
    except pw.IntegrityError:
        row = PaypalIpn.get_by_id(ipn_id)
        if not _paid_by(row.txn_id):
            raise
        # another verifier made this txn_id paid meanwhile: everything above was rolled back
        settled = Settled("replay", _why("made_paid", txn=row.txn_id))
        with store.atomic():
            _record(settings, row, verdict, settled, now)
    level = logging.INFO if settled.outcome in ("paid", "pending", "") else logging.WARNING
    log.log(level, "paypal message %s (txn %s): %s: %s", ipn_id, row.txn_id, settled.outcome or "waiting",
            settled.reason)
    return settled


def _record(settings: Settings, row: PaypalIpn, verdict: str, settled: Settled, now: dt.datetime) -> None:
    row.verdict, row.reason, row.last_error = verdict, settled.reason[:2000], ""
    row.order = settled.order_id
    if settled.wait:        # looked for again after the backoff, without asking PayPal again
        row.state, row.next_attempt_at = "pending", now + retry_delay(settings, row.attempts)
    else:
        row.state, row.outcome, row.settled_at = "done", settled.outcome, now
    row.save()


def _decide(store: Store, settings: Settings, row: PaypalIpn, verdict: str, now: dt.datetime) -> Settled:
    if verdict != "VERIFIED":
        return Settled("invalid", _why("invalid"))
    try:
        message = parse(row.raw)
    except NotAnIpn as exc:
        return Settled("malformed", str(exc))
    repeated = message.repeated(DECISION_FIELDS)
    status, txn = message.get("payment_status"), message.get("txn_id")
    if repeated:
        return Settled("malformed", _why("repeated", field=repeated[0]))
    if not status:
        return Settled("ignored", _why("not_payment", txn_type=repr(message.get('txn_type'))))
    if not txn or len(txn) > 64:
        return Settled("malformed", _why("no_txn"))
    earlier = _handled_before(row, txn, status)
    if earlier is not None:
        return Settled("replay", _why("handled", txn=txn, status=status, id=earlier.id))
    order = _order_of(message)
    receiver, ours = message.get("receiver_email").strip(), settings.paypal.receiver_email
    if receiver.lower() != ours.lower():
        why = _why("receiver", receiver=receiver or "no receiver_email", ours=ours)
        if status == "Completed":
            return _refuse(store, settings, "wrong_receiver", why, message, order, now)
        return Settled("wrong_receiver", why, order.id if order else None)
    if status == "Completed":
        return _completed(store, settings, row, message, order, now)
    if order is None:
        return Settled("unknown_invoice", _why("no_order_status", status=status, invoice=_invoice(message) or "(no invoice)"))
    return _note(store, settings, row, message, order, now)


def _completed(store, settings, row: PaypalIpn, message: IpnMessage, order: Order | None, now) -> Settled:
    invoice = _invoice(message)
    amount, currency = _money(message.get("mc_gross")), message.get("mc_currency").strip().upper()
    if order is None:
        if now < row.received_at + ORDER_WAIT:
            return Settled("", _why("waiting", invoice=invoice or "(no invoice)"), wait=True)
        text = (f"PayPal payment {message.get('txn_id')} of {message.get('mc_gross')} {currency} "
                f"names invoice {invoice or '(none)'}, and no such order arrived within "
                f"{ORDER_WAIT.total_seconds() / 3600:.0f} hours. The money is in your PayPal account; "
                "'ordermail payments ipn list' shows the message.")
        alert(settings, None, "PayPal payment for no known order", text, now)
        return Settled("unknown_invoice", _why("no_order", invoice=invoice or "(no invoice)"))
    if amount is None:
        return Settled("malformed", _why("not_amount", gross=repr(message.get('mc_gross'))), order.id)
    if currency != order.currency.upper():
        return _refuse(store, settings, "wrong_currency",
                       _why("currency", currency=currency or "no currency", other=order.currency), message, order, now)
    if amount != order.total:
        return _refuse(store, settings, "wrong_amount",
                       _why("amount", amount=amount, currency=currency, total=order.total, other=order.currency),
                       message, order, now)
    data = {"source": "paypal", "txn_id": message.get("txn_id"), "amount": str(amount), "currency": currency,
            "ipn": row.id}
    change = orders.mark_paid(store, settings, order.number, via=Via(author="system", now=now), data=data)
    if not change.done:
        return _already_paid(store, settings, message, order, data, now)
    if order.has(CANCELLED):
        alert(settings, order, "PayPal payment for a cancelled order",
              f"Order {order.number} is cancelled, and PayPal payment {data['txn_id']} of {amount} {currency} "
              "arrived for it: it is marked paid. Refund it, or ship after all.", now)
    return Settled("paid", change.summary, order.id)


def _already_paid(store, settings, message: IpnMessage, order: Order, data: dict, now) -> Settled:
    """Logged on the order; an alert when the earlier payment was another PayPal payment."""
    order = Order.get_by_id(order.id)      # as mark_paid found it, under its lock
    earlier = (Event.select().where((Event.order == order) & (Event.kind == "paid"))
               .order_by(Event.id.desc()).first())
    earlier_txn = (earlier.data or {}).get("txn_id") if earlier else None
    if earlier_txn == data["txn_id"]:     # the same payment, settled by a parallel verifier a moment ago
        return Settled("replay", _why("paid_already", txn=earlier_txn, number=order.number), order.id)
    text = (f"PayPal payment {data['txn_id']} of {data['amount']} {data['currency']} arrived; "
            f"the order was already paid on {order.paid_at:%Y-%m-%d}.")
    orders.add_event(store, settings, order.number, "system", Content(subject="PayPal: payment for a paid order",
                     text=text), via=Via(author="system", now=now), data={**data, "outcome": "already_paid"})
    if earlier_txn:
        alert(settings, order, "PayPal: order paid twice",
              f"{text} It was paid by PayPal payment {earlier_txn} before: the customer paid twice.", now)
    return Settled("already_paid", _why("already_paid", number=order.number), order.id)


def _note(store, settings, row: PaypalIpn, message: IpnMessage, order: Order, now) -> Settled:
    """A payment that is not (or no longer) complete: an internal event, and for reversals an alert."""
    status = message.get("payment_status")
    details = {"source": "paypal", "txn_id": message.get("txn_id"), "payment_status": status,
               "amount": message.get("mc_gross"), "currency": message.get("mc_currency"), "ipn": row.id}
    for key in ("pending_reason", "reason_code", "parent_txn_id"):
        if message.get(key):
            details[key] = message.get(key)
    text = (f"PayPal payment {details['txn_id']}: {status}, {details['amount']} {details['currency']}"
            + "".join(f", {key} {details[key]}" for key in ("pending_reason", "reason_code", "parent_txn_id")
                      if key in details) + ".")
    outcome = "pending" if status == "Pending" else "reversal" if status in REVERSALS else "noted"
    orders.add_event(store, settings, order.number, "system",
                     Content(subject=f"PayPal: payment {status.replace('_', ' ').lower()}", text=text),
                     via=Via(author="system", now=now), data=details)
    if outcome == "reversal":
        alert(settings, order, f"PayPal: payment {status.replace('_', ' ').lower()}",
              f"{text} The order is unchanged: if the money went back to the customer, "
              f"write 'refunded {order.number}'.", now)
    return Settled(outcome, text, order.id)


def _refuse(store, settings, outcome: str, why: str, message: IpnMessage, order: Order | None, now) -> Settled:
    """A verified payment that does not pay the order: logged on it, and the owner told."""
    if order is None:
        return Settled(outcome, why)
    text = (f"PayPal payment {message.get('txn_id')} for order {order.number} was not taken as its payment: "
            f"{why}. The order stays unpaid; check the payment in PayPal and mark it by hand if it is right.")
    orders.add_event(store, settings, order.number, "system", Content(subject="PayPal: payment not taken", text=text),
                     via=Via(author="system", now=now),
                     data={"source": "paypal", "txn_id": message.get("txn_id"), "outcome": outcome,
                           "amount": message.get("mc_gross"), "currency": message.get("mc_currency")})
    alert(settings, order, "PayPal: payment not taken", text, now)
    return Settled(outcome, why, order.id)


def _handled_before(row: PaypalIpn, txn: str, status: str) -> PaypalIpn | None:
    return (PaypalIpn.select().where((PaypalIpn.txn_id == txn) & (PaypalIpn.id != row.id)
                                     & (PaypalIpn.payment_status == status) & (PaypalIpn.verdict == "VERIFIED")
                                     & (PaypalIpn.state == "done") & (PaypalIpn.outcome != "malformed"))
            .order_by(PaypalIpn.id).first())


def _paid_by(txn_id: str | None) -> PaypalIpn | None:
    if not txn_id:
        return None
    return PaypalIpn.get_or_none((PaypalIpn.txn_id == txn_id) & (PaypalIpn.outcome == "paid"))


def _order_of(message: IpnMessage) -> Order | None:
    """The order named by `invoice`; for a refund without one, the order its parent payment paid."""
    invoice = _invoice(message)
    order = Order.get_or_none(Order.number == invoice) if invoice else None
    if order is None:
        parent = _paid_by(message.get("parent_txn_id"))
        order = Order.get_or_none(Order.id == parent.order_id) if parent and parent.order_id else None
    return order


def _invoice(message: IpnMessage) -> str:
    return message.get("invoice").strip().lstrip("#")


def _money(text: str) -> decimal.Decimal | None:
    try:
        amount = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        return None
    return amount if amount.is_finite() else None


# ---- alerts ------------------------------------------------------------------------------

def alert(settings: Settings, order: Order | None, subject: str, text: str, now: dt.datetime) -> int:
    """Queue an owner alert, at most ALERTS_PER_HOUR to an address an hour; returns how many were queued."""
    queued_now = 0
    for owner in settings.owner.addresses:
        if orders.alerts_since(owner, "paypal", now - dt.timedelta(hours=1)) >= ALERTS_PER_HOUR:
            log.warning("paypal: no alert mailed to %s (%d within the hour already): %s",
                        owner, ALERTS_PER_HOUR, subject)
            continue
        orders.queue_mail(settings, "owner_alert", owner, order=order, now=now,
                          data={"topic": "paypal", "subject": subject, "text": text})
        queued_now += 1
    return queued_now


# ---- the owner's hand --------------------------------------------------------------------

class IpnNotFound(OrdermailError):
    def __init__(self, ipn_id: int):
        super().__init__(f"no PayPal message {ipn_id}")


def list_messages(state: str | None = None, limit: int = 50) -> list[PaypalIpn]:
    return newest(PaypalIpn, state, limit)


def get_message(ipn_id: int) -> PaypalIpn:
    row = PaypalIpn.get_or_none(PaypalIpn.id == ipn_id)
    if row is None:
        raise IpnNotFound(ipn_id)
    return row


def retry(store: Store, settings: Settings, ipn_id: int, now: dt.datetime | None = None) -> PaypalIpn:
    """Verify and settle a message again now (after giving up, or once its order exists)."""
    now = now or utcnow()
    with store.atomic():
        row = get_message(ipn_id)
        if row.outcome == "paid":
            raise Refused(f"PayPal message {ipn_id} made order {row.invoice} paid; it is not taken again")
        if row.state == "verifying" and row.next_attempt_at > now:
            raise Refused(f"PayPal message {ipn_id} is being verified right now")
        row.state, row.outcome, row.next_attempt_at, row.attempts = "pending", "", now, 0
        row.give_up_at = now + dt.timedelta(hours=settings.paypal.give_up_after_hours)
        if row.verdict != "VERIFIED":    # a verified message keeps PayPal's word: its bytes cannot change
            row.verdict = ""
        row.save()
    return row
