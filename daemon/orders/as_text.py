"""Orders as plain text: `order show`, `orders list`, and command receipts."""
from __future__ import annotations

from daemon.config import Settings
from daemon.orders.as_json import adjustment
from daemon.store.models import INTERNAL_KINDS, Event, Order, OrderItem

STATUS_ORDER = ("paid", "shipped", "cancelled", "refunded")


def status_line(order: Order) -> str:
    words = [word for word in STATUS_ORDER if order.status_words()[word]]
    return ", ".join(words) if words else "open (not paid)"


def order_detail(order: Order, events: list[Event], settings: Settings) -> str:
    """The order and its whole log, internal entries marked."""
    lines = [
        f"Order {order.number} — {status_line(order)}",
        f"Customer:  {order.customer_name} <{order.customer_email}>",
        f"Created:   {_when(order.created_at)}",
        f"Total:     {order.total} {order.currency} ({order.payment_method})",
    ]
    difference = adjustment(order)
    if difference:
        lines.append(f"           the items add up to {order.total - difference} {order.currency}; the total counts "
                     f"({difference:+} {order.currency} shipping, fees and discounts)")
    if order.refunded_amount is not None:
        lines.append(f"Refunded:  {order.refunded_amount} {order.currency}")
    if order.tracking_code or order.carrier:
        lines.append(f"Shipping:  {order.carrier or ''} {order.tracking_code or ''}".rstrip())
    if order.email_bounced_at:
        lines.append(f"MAIL BOUNCED: {order.email_bounced_at:%Y-%m-%d} {order.email_bounce}")
    lines.append(f"Status page: {settings.status_url(order.status_token)}")
    lines.append("Items:")
    for item in order.items.order_by(OrderItem.position):
        sku = f" [{item.sku}]" if item.sku else ""
        lines.append(f"  {item.quantity} × {item.name}{sku} à {item.unit_price}")
    lines.append("Log:")
    lines.extend(_event_lines(event) for event in events)
    return "\n".join(lines)


def _event_lines(event: Event) -> str:
    marks = []
    if event.kind in INTERNAL_KINDS:
        marks.append("internal")
    if event.notified:
        marks.append("customer notified")
    head = f"  {_when(event.created_at)}  {event.kind:<14} by {event.author}"
    if marks:
        head += f"  ({', '.join(marks)})"
    body = "\n".join(f"      {line}" for line in _body(event).splitlines())
    return f"{head}\n{body}" if body else head


def _body(event: Event) -> str:
    parts = [event.subject] if event.subject else []
    if event.body_text:
        parts.append(event.body_text)
    parts.extend(f"[file {a.filename}, {a.size} bytes]" for a in event.attachments)
    return "\n".join(parts)


def order_table(orders: list[Order], more: bool = False) -> str:
    """One line per order, newest first."""
    if not orders:
        return "no orders match"
    rows = [("NUMBER", "CREATED", "CUSTOMER", "TOTAL", "STATUS")]
    rows += [(o.number, o.created_at.strftime("%Y-%m-%d"), _clip(o.customer_name, 28),
              f"{o.total} {o.currency}", status_line(o)) for o in orders]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
             for row in rows]
    if more:
        lines.append("… more orders match: narrow the filter or raise --limit")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
