"""The order JSON of the contract: checked on the way in, built on the way out.

`parse_new_order` turns untrusted JSON (CLI, later `POST /api/orders`) into a
`NewOrder` or raises `InputError` naming the field. `order_to_json` is the
`order show --format json` document.
"""
from __future__ import annotations

import decimal
import re
from dataclasses import dataclass

from daemon.config import SUPPORTED_LOCALES, Settings
from daemon.errors import InputError
from daemon.store.models import INTERNAL_KINDS, LONE_SURROGATE, Event, Order

# Order numbers are typed by the owner in commands: short, no spaces, and with
# a digit, so that "paid 1042 1043" can tell numbers from words.
NUMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
# No control characters (\x00-\x1f, \x7f-\x9f) in the local part: no mail system takes them,
# and the notification would fail long after the order was accepted.
# A plain dot-atom address (RFC 5322 atext): what every smarthost takes
# without SMTPUTF8. A quoted or non-ASCII local part would validate here and
# then fail in every notification, so it is refused at the door instead.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
TOP_KEYS = {"number", "customer", "items", "total", "currency", "payment_method", "locale"}
CENT = decimal.Decimal("0.01")
MAX_AMOUNT = decimal.Decimal("999999999999.99")


@dataclass(frozen=True)
class NewItem:
    sku: str
    name: str
    quantity: int
    unit_price: decimal.Decimal


@dataclass(frozen=True)
class NewOrder:
    number: str | None
    customer_name: str
    customer_email: str
    items: tuple[NewItem, ...]
    total: decimal.Decimal
    currency: str
    payment_method: str
    locale: str


def items_total(items) -> decimal.Decimal:
    """What the items add up to (quantity × unit price).

    The order's total wins over it: the total is what the customer is asked
    to pay, what payments are matched against and refunds bounded by. It
    may differ — shipping, fees and taxes the items do not list, a discount
    or coupon below — and then the difference is shown as a line of its own
    wherever the items are (`adjustment`), so neither number is dropped.
    """
    return sum((item.unit_price * item.quantity for item in items), decimal.Decimal("0.00"))


def adjustment(order: Order) -> decimal.Decimal:
    """Total minus the items: shipping and fees (above 0), discounts (below 0)."""
    return order.total - items_total(order.items)


def is_order_number(text: str) -> bool:
    return bool(NUMBER_RE.fullmatch(text)) and any(c.isdigit() for c in text)


def parse_new_order(data, settings: Settings) -> NewOrder:
    if not isinstance(data, dict):
        raise InputError("order JSON must be an object")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise InputError(f"order JSON: unknown field {unknown[0]!r}")   # repr: one line, whatever the key
    customer = data.get("customer")
    if not isinstance(customer, dict):
        raise InputError("order JSON: customer must be an object with name and email")
    return NewOrder(
        number=_number(data.get("number")),
        customer_name=_text(customer.get("name"), "customer.name", 200),
        customer_email=_email(customer.get("email")),
        items=_items(data.get("items"), settings.limits.items_per_order_max),
        total=parse_amount(data.get("total"), "order JSON: total"),
        currency=_currency(data.get("currency", "EUR")),
        payment_method=_payment_method(data.get("payment_method"), settings),
        locale=_locale(data.get("locale", settings.shop.locale)),
    )


def parse_amount(value, field: str) -> decimal.Decimal:
    """A money amount: a JSON number or a string like "24.90" or "24,90"."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"{field} must be an amount like \"24.90\", not {value!r}")
    text = str(value).strip().replace(",", ".") if isinstance(value, str) else repr(value)
    try:
        amount = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise InputError(f"{field} must be an amount like \"24.90\", not {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
        raise InputError(f"{field} must be an amount of 0 or more, not {value!r}")
    if amount != amount.quantize(CENT):
        raise InputError(f"{field} has more than two decimal places: {value!r}")
    return amount.quantize(CENT)


def _number(value) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not is_order_number(text):
        raise InputError(f"order JSON: number must be up to 32 letters, digits, '-' or '_' "
                         f"with at least one digit, not {value!r}")
    return text


def _text(value, field: str, limit: int, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InputError(f"order JSON: {field} must be a non-empty string")
    if len(value) > limit or any(c in value for c in "\r\n\0"):
        raise InputError(f"order JSON: {field} must be one line of at most {limit} characters")
    surrogate = LONE_SURROGATE.search(value)
    if surrogate:   # JSON lets "\ud800" through; no text holds it (found by fuzzing)
        raise InputError(f"order JSON: {field} is not Unicode text (a lone \\u{ord(surrogate.group()):04x})")
    return value.strip()


def _email(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError("order JSON: customer.email is missing")
    address = value.strip()
    if len(address) > 254 or not EMAIL_RE.fullmatch(address):
        raise InputError(f"order JSON: customer.email {value!r} is not a mail address "
                         "(a plain one like name@example.org)")
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain}".lower()


def _items(value, limit: int) -> tuple[NewItem, ...]:
    if not isinstance(value, list) or not value:
        raise InputError("order JSON: items must be a non-empty list")
    if len(value) > limit:
        raise InputError(f"order JSON: at most {limit} items per order")
    return tuple(_item(item, f"items[{i}]") for i, item in enumerate(value))


def _item(item, where: str) -> NewItem:
    if not isinstance(item, dict):
        raise InputError(f"order JSON: {where} must be an object")
    unknown = sorted(set(item) - {"sku", "name", "quantity", "unit_price"})
    if unknown:
        raise InputError(f"order JSON: {where} has an unknown field {unknown[0]!r}")
    quantity = item.get("quantity")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= 1_000_000:
        raise InputError(f"order JSON: {where}.quantity must be a whole number of at least 1, not {quantity!r}")
    return NewItem(sku=_text(item.get("sku"), f"{where}.sku", 64, required=False),
                   name=_text(item.get("name"), f"{where}.name", 300),
                   quantity=quantity,
                   unit_price=parse_amount(item.get("unit_price"), f"order JSON: {where}.unit_price"))


def _currency(value) -> str:
    if not isinstance(value, str) or not CURRENCY_RE.fullmatch(value):
        raise InputError(f"order JSON: currency must be a three-letter code like EUR, not {value!r}")
    return value


def _payment_method(value, settings: Settings) -> str:
    known = ", ".join(sorted(settings.payment))
    if not isinstance(value, str) or value not in settings.payment:
        raise InputError(f"order JSON: unknown payment_method {value!r} (configured: {known})")
    return value


def _locale(value) -> str:
    if value not in SUPPORTED_LOCALES:
        raise InputError(f"order JSON: locale must be one of {', '.join(SUPPORTED_LOCALES)}, not {value!r}")
    return value


def order_to_json(order: Order, settings: Settings, events: list[Event]) -> dict:
    """The contract's `order show --format json` document."""
    return {
        "number": order.number,
        "customer": {"name": order.customer_name, "email": order.customer_email},
        "items": [{"sku": item.sku, "name": item.name, "quantity": item.quantity,
                   "unit_price": str(item.unit_price)}
                  for item in order.items.order_by(order.items.model.position)],
        "total": str(order.total), "items_total": str(items_total(order.items)), "currency": order.currency,
        "payment_method": order.payment_method, "locale": order.locale,
        "status": order.status_words(),
        "status_url": settings.status_url(order.status_token),
        "created_at": _iso(order.created_at),
        "paid_at": _iso(order.paid_at), "shipped_at": _iso(order.shipped_at),
        "cancelled_at": _iso(order.cancelled_at), "refunded_at": _iso(order.refunded_at),
        "refunded_amount": None if order.refunded_amount is None else str(order.refunded_amount),
        "tracking_code": order.tracking_code, "carrier": order.carrier,
        "email_bounced_at": _iso(order.email_bounced_at), "email_bounce": order.email_bounce or None,
        "events": [event_to_json(event) for event in events],
    }


def event_to_json(event: Event) -> dict:
    return {
        "kind": event.kind,
        "visibility": "internal" if event.kind in INTERNAL_KINDS else "public",
        "author": event.author, "subject": event.subject,
        "body": event.body_text, "body_html": event.body_html,
        "notified": event.notified,
        "attachments": [{"filename": a.filename, "content_type": a.content_type,
                         "size": a.size, "sha256": a.blob_id, "inline": a.content_id is not None}
                        for a in event.attachments],
        "created_at": _iso(event.created_at),
        "message_id": event.message_id,
        "data": event.data,
    }


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat(timespec="seconds") + "Z"
