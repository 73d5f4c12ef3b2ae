"""Orders as plain text: `order show`, `orders list`, and command receipts.

Each answer is a Said: the English as a str (the log, `--format json`), said in
the shop's language where the owner reads it (receipts, the CLI's text output)."""
from __future__ import annotations

from daemon.config import Settings
from daemon.orders.as_json import adjustment
from daemon.store.models import INTERNAL_KINDS, Event, Order, OrderItem
from daemon.translations import N_, Columns, Said, joined

STATUS_ORDER = ("paid", "shipped", "cancelled", "refunded")

# The kinds of event as the owner reads them (a receipt's "1042: paid undone", the
# order's log, its status): the English is the kind itself.
KIND_WORDS = {"created": N_("created"), "paid": N_("paid"), "shipped": N_("shipped"),
              "cancelled": N_("cancelled"), "refunded": N_("refunded"), "message": N_("message"),
              "note": N_("note"), "customer_reply": N_("customer_reply"), "bounce": N_("bounce"),
              "system": N_("system"), "payment_reminder": N_("payment_reminder")}


# Who wrote an event, as the order's log names them.
AUTHOR_WORDS = {"owner": N_("owner"), "customer": N_("customer"), "system": N_("system")}


def kind_word(kind: str) -> str:
    """The kind of an event as a Said (said in the shop's language), or as it is if unknown."""
    return Said(KIND_WORDS[kind]) if kind in KIND_WORDS else kind


def status_line(order: Order) -> str:
    words = [kind_word(word) for word in STATUS_ORDER if order.status_words()[word]]
    return joined(words, ", ") if words else Said("open (not paid)")


def order_detail(order: Order, events: list[Event], settings: Settings) -> str:
    """The order and its whole log, internal entries marked."""
    lines = [
        Said("Order %(number)s — %(status)s", number=order.number, status=status_line(order)),
        Said("Customer:  %(name)s <%(email)s>", name=order.customer_name, email=order.customer_email),
        Said("Created:   %(when)s", when=_when(order.created_at)),
        Said("Total:     %(total)s %(currency)s (%(method)s)", total=order.total, currency=order.currency,
             method=order.payment_method),
    ]
    difference = adjustment(order)
    if difference:
        lines.append(Said("           the items add up to %(items)s %(currency)s; the total counts "
                          "(%(difference)s %(currency)s shipping, fees and discounts)",
                          items=order.total - difference, currency=order.currency, difference=f"{difference:+}"))
    if order.refunded_amount is not None:
        lines.append(Said("Refunded:  %(amount)s %(currency)s", amount=order.refunded_amount, currency=order.currency))
    if order.tracking_code or order.carrier:
        lines.append(Said("Shipping:  %(shipping)s",
                          shipping=f"{order.carrier or ''} {order.tracking_code or ''}".strip()))
    if order.email_bounced_at:
        lines.append(Said("MAIL BOUNCED: %(day)s %(why)s", day=f"{order.email_bounced_at:%Y-%m-%d}",
                          why=order.email_bounce))
    lines.append(Said("Status page: %(url)s", url=settings.status_url(order.status_token)))
    lines.append(Said("Items:"))
    for item in order.items.order_by(OrderItem.position):
        sku = f" [{item.sku}]" if item.sku else ""
        lines.append(f"  {item.quantity} × {item.name}{sku} à {item.unit_price}")
    lines.append(Said("Log:"))
    lines.extend(_event_lines(event) for event in events)
    return joined(lines, "\n")


def _event_lines(event: Event) -> str:
    marks = []
    if event.kind in INTERNAL_KINDS:
        marks.append(Said("internal"))
    if event.notified:
        marks.append(Said("customer notified"))
    head = Said("  %(when)s  %(kind)-14s by %(author)s", when=_when(event.created_at), kind=kind_word(event.kind),
                author=Said(AUTHOR_WORDS[event.author]) if event.author in AUTHOR_WORDS else event.author)
    if marks:
        head = joined([head, Said("  (%(marks)s)", marks=joined(marks, ", "))], "")
    body = [f"      {line}" for line in event.subject.splitlines()] if event.subject else []
    body += [f"      {line}" for line in (event.body_text or "").splitlines()]
    body += [Said("      [file %(name)s, %(size)s bytes]", name=a.filename, size=a.size) for a in event.attachments]
    return joined([head, *body], "\n")


def order_table(orders: list[Order], more: bool = False) -> str:
    """One line per order, newest first."""
    if not orders:
        return Said("no orders match")
    rows = [(Said("NUMBER"), Said("CREATED"), Said("CUSTOMER"), Said("TOTAL"), Said("STATUS"))]
    rows += [(o.number, o.created_at.strftime("%Y-%m-%d"), _clip(o.customer_name, 28),
              f"{o.total} {o.currency}", status_line(o)) for o in orders]
    lines = [Columns(rows)]
    if more:
        lines.append(Said("… more orders match: narrow the filter or raise --limit"))
    return joined(lines, "\n")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
