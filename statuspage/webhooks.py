"""WooCommerce's and Shopify's order webhooks, mapped onto the contract's order JSON.

Each shop sends its own documented order document (WooCommerce: the REST API
v3 order of topic `order.created`; Shopify: the Admin API order of topic
`orders/create`). `woocommerce_order` and `shopify_order` turn it into the
order JSON that `orders.create_order` checks like any other input, so a
malformed field is reported by the same one-line error naming it.

The shop's own order number is kept, so the owner's commands and the
customer's mails speak of the same number as the shop. Shops retry a
delivery they think failed, so an order whose number exists already (for
the same customer) is a duplicate: answered as taken, nothing done.

Paid topics (Shopify `orders/paid`, WooCommerce `order.updated` with a
paid status) carry the same order document. They mark the order paid
through the domain service, which mails the customer as `paid` does; again
they change nothing twice. Shops deliver topics in any order (Shopify says
so outright), so a paid topic for an order whose creation has not arrived
creates it, paid — and the creation, when it comes, is a duplicate.
"""
from __future__ import annotations

import decimal
from dataclasses import dataclass

from daemon.orders import numbers as order_numbers, service as orders
from daemon.config import SUPPORTED_LOCALES, Settings
from daemon.errors import InputError, Refused
from daemon.orders.as_json import is_order_number
from daemon.store.models import Order
from daemon.store.database import Store

# Well-known payment ids of both shops, used when our side has a table of
# that name; `[api] payment_methods` comes first and may say otherwise.
KNOWN_PAYMENT_METHODS = {
    "bacs": "bank_transfer", "bank_transfer": "bank_transfer",
    "paypal": "paypal", "ppcp-gateway": "paypal", "ppec_paypal": "paypal",
    "PayPal Express Checkout": "paypal",
}
# A billing country says the language only where the country has one.
COUNTRY_LOCALES = {
    "DE": "de", "AT": "de", "LI": "de",
    "FR": "fr", "MC": "fr",
    "GB": "en", "IE": "en", "US": "en", "AU": "en", "NZ": "en",
}
# WooCommerce's statuses of a paid order (its wc_get_is_paid_statuses).
WOOCOMMERCE_PAID_STATUSES = ("processing", "completed")
# Language plugins that store the order's language in WooCommerce meta data.
WOOCOMMERCE_LANGUAGE_KEYS = ("wpml_language", "_wpml_language", "pll_language", "language", "_locale")
NAME_LIMIT, ITEM_LIMIT, SKU_LIMIT = 200, 300, 64


@dataclass(frozen=True)
class Mapped:
    """A shop's order in our terms: the order JSON, and whether it is paid already."""
    data: dict
    paid: bool


@dataclass(frozen=True)
class Taken:
    order: Order
    created: bool          # False: a duplicate delivery, nothing done


@dataclass(frozen=True)
class Paid:
    order: Order
    created: bool          # its creation had not arrived: created, paid
    marked: bool           # False: it was paid already, nothing done


# ---- WooCommerce ------------------------------------------------------------------

def woocommerce_order(payload, settings: Settings) -> Mapped:
    doc = _object(payload, "WooCommerce order")
    billing = _object(doc.get("billing") or {}, "billing")
    shipping = doc.get("shipping") if isinstance(doc.get("shipping"), dict) else {}
    name = _full_name(billing) or _full_name(shipping)
    data = {
        "number": _number(doc.get("number") or doc.get("id")),
        "customer": {"name": name or str(billing.get("email") or ""), "email": billing.get("email")},
        "items": [_woocommerce_item(item, i) for i, item in enumerate(_list(doc.get("line_items"), "line_items"))],
        "total": doc.get("total"),
        "currency": doc.get("currency") or "EUR",
        "payment_method": payment_method(str(doc.get("payment_method") or ""), settings),
        "locale": (_woocommerce_language(doc.get("meta_data")) or _country_locale(billing.get("country"))
                   or settings.shop.locale),
    }
    return Mapped(data, paid=bool(doc.get("date_paid") or doc.get("date_paid_gmt")))


def woocommerce_says_paid(document) -> bool:
    """Whether an `order.updated` delivery tells of a paid order (any other change is ignored)."""
    return isinstance(document, dict) and document.get("status") in WOOCOMMERCE_PAID_STATUSES


def _woocommerce_item(item, index: int) -> dict:
    item = _object(item, f"line_items[{index}]")
    quantity = item.get("quantity")
    return {"sku": _clip(item.get("sku"), SKU_LIMIT), "name": _clip(item.get("name"), ITEM_LIMIT),
            "quantity": quantity, "unit_price": _woocommerce_unit_price(item, quantity)}


def _woocommerce_unit_price(item: dict, quantity) -> str | object:
    """What the customer paid per piece: line subtotal with its tax, before coupons."""
    try:
        gross = decimal.Decimal(str(item["subtotal"])) + decimal.Decimal(str(item.get("subtotal_tax") or 0))
        return str((gross / quantity).quantize(decimal.Decimal("0.01")))
    except (KeyError, TypeError, ArithmeticError, decimal.InvalidOperation):
        return item.get("price")   # checked (and named) by the order JSON parser


def _woocommerce_language(meta) -> str | None:
    for entry in meta if isinstance(meta, list) else ():
        if isinstance(entry, dict) and entry.get("key") in WOOCOMMERCE_LANGUAGE_KEYS:
            locale = _language_locale(entry.get("value"))
            if locale:
                return locale
    return None


# ---- Shopify ------------------------------------------------------------------------

def shopify_order(payload, settings: Settings) -> Mapped:
    doc = _object(payload, "Shopify order")
    customer = doc.get("customer") if isinstance(doc.get("customer"), dict) else {}
    billing = doc.get("billing_address") if isinstance(doc.get("billing_address"), dict) else {}
    email = doc.get("email") or doc.get("contact_email") or customer.get("email")
    name = _full_name(customer) or _full_name(billing) or str(billing.get("name") or "") or str(email or "")
    gateways = doc.get("payment_gateway_names") or [doc.get("gateway") or ""]
    data = {
        "number": _shopify_number(doc),
        "customer": {"name": _clip(name, NAME_LIMIT), "email": email},
        "items": [_shopify_item(item, i) for i, item in enumerate(_list(doc.get("line_items"), "line_items"))],
        "total": doc.get("total_price"),
        "currency": doc.get("currency") or "EUR",
        "payment_method": payment_method(str(gateways[0] if isinstance(gateways, list) and gateways else ""),
                                         settings),
        "locale": (_language_locale(doc.get("customer_locale")) or _country_locale(billing.get("country_code"))
                   or settings.shop.locale),
    }
    return Mapped(data, paid=doc.get("financial_status") == "paid")


def _shopify_number(doc: dict):
    """The name the shop shows ("#1001" → "1001"), else its order_number."""
    name = str(doc.get("name") or "").lstrip("#")
    return name if is_order_number(name) else _number(doc.get("order_number"))


def _shopify_item(item, index: int) -> dict:
    item = _object(item, f"line_items[{index}]")
    return {"sku": _clip(item.get("sku"), SKU_LIMIT), "name": _clip(item.get("name") or item.get("title"), ITEM_LIMIT),
            "quantity": item.get("quantity"), "unit_price": item.get("price")}


# ---- shared -------------------------------------------------------------------------

def payment_method(theirs: str, settings: Settings) -> str:
    """Their payment id → the name of one of our [payment.*] tables."""
    table = dict(entry.split("=", 1) for entry in settings.api.payment_methods)
    table = {k.strip(): v.strip() for k, v in table.items()}
    if theirs in table:
        return table[theirs]
    if theirs in settings.payment:
        return theirs
    known = KNOWN_PAYMENT_METHODS.get(theirs)
    if known in settings.payment:
        return known
    if "*" in table:
        return table["*"]
    raise InputError(f"payment method {theirs!r} of the shop is not mapped: add \"{theirs}=…\" "
                     f"to [api] payment_methods (ours: {', '.join(sorted(settings.payment))})")


def take(store: Store, settings: Settings, mapped: Mapped, *, source: str) -> Taken:
    """Create the order (paid, if the shop says so) once; a repeat delivery changes nothing.

    Paid at creation, the customer gets the order mail only (it shows no
    payment instructions for a paid order), not a second one about the payment.
    """
    number = mapped.data.get("number")
    existing = _same_order(number, mapped.data)
    if existing is not None:
        return Taken(existing, created=False)
    try:
        with store.atomic():
            order = orders.create_order(store, settings, mapped.data)
            if mapped.paid:
                orders.mark_paid(store, settings, order.number, via=orders.Via(author="system", quiet=True),
                                 data={"source": source})
    except Refused:
        existing = _same_order(number, mapped.data)   # a parallel delivery was quicker
        if existing is None:
            raise
        return Taken(existing, created=False)
    return Taken(Order.get_by_id(order.id), created=True)


def take_paid(store: Store, settings: Settings, mapped: Mapped, *, source: str) -> Paid:
    """The shop says the order is paid: mark it (the customer is told), or create it paid."""
    existing = _same_order(mapped.data.get("number"), mapped.data)
    if existing is None:
        taken = take(store, settings, Mapped(mapped.data, paid=True), source=source)
        if taken.created:
            return Paid(taken.order, created=True, marked=True)
        existing = taken.order      # a parallel delivery created it meanwhile
    change = orders.mark_paid(store, settings, existing.number, via=orders.Via(author="system"),
                              data={"source": source})
    return Paid(Order.get_by_id(existing.id), created=False, marked=change.done)


def _same_order(number, data: dict) -> Order | None:
    """The order of this number, if it exists; Refused if it is another customer's."""
    order = Order.get_or_none(order_numbers.matching(number)) if isinstance(number, str) else None
    if order is None:
        return None
    email = str((data.get("customer") or {}).get("email") or "").strip().lower()
    if order.customer_email != email:
        raise Refused(f"order {number} exists already, for another customer")
    return order


def _object(value, what: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object")
    return value


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise InputError(f"{what} must be a list")
    return value


def _number(value):
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _full_name(part: dict) -> str:
    return _clip(" ".join(str(part.get(k) or "").strip() for k in ("first_name", "last_name")).strip(), NAME_LIMIT)


def _clip(value, limit: int):
    if not isinstance(value, str):
        return value
    return " ".join(value.split())[:limit]   # one line, within our field's length


def _language_locale(value) -> str | None:
    language = str(value or "").replace("_", "-").split("-")[0].lower()
    return language if language in SUPPORTED_LOCALES else None


def _country_locale(value) -> str | None:
    return COUNTRY_LOCALES.get(str(value or "").upper())
