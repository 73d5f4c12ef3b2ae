"""What the pages show of an order, shared by the customer's page and the owner's dashboard.

Query functions and plain views (SimpleNamespace) for the templates: no
HTML is built here except the owner's message bodies, which are sanitised
again on the way out (they were sanitised before storage too) and get their
`cid:` images pointed at our file route. Images elsewhere are dropped: the
CSP would block them anyway, and they would tell a stranger who reads.
"""
from __future__ import annotations

import decimal
import functools
import html
import re
from collections import defaultdict
from types import SimpleNamespace as View

from babel.numbers import format_decimal
from markupsafe import Markup

from daemon.outbound import notify
from daemon.store import compiled
from daemon.mail.richtext import sanitize_html, text_to_html
from daemon.store.models import INTERNAL_KINDS, Attachment, Event, Order, OrderItem
from statuspage.i18n import translator

# What a customer may see: a list of what is public, so a new kind stays hidden until added here.
PUBLIC_KINDS = ("created", "paid", "shipped", "cancelled", "refunded", "message", "customer_reply",
                "payment_reminder")
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
STATUS_KEYS = ("paid", "shipped", "cancelled", "refunded")
_IMG = re.compile(r"""<img\b(?:[^>"']|"[^"]*"|'[^']*')*>""", re.IGNORECASE)
_ATTR = {name: re.compile(rf'\s{name}="([^"]*)"', re.IGNORECASE) for name in ("src", "alt")}


def items(order: Order, lang: str) -> list[View]:
    money = functools.partial(notify.money, currency=order.currency, lang=lang)
    found = compiled.run(OrderItem, "items", lambda: OrderItem.select().where(OrderItem.order == 0)
                         .order_by(OrderItem.position), order.id)
    return [View(name=i.name, sku=i.sku, quantity=i.quantity, price=money(i.unit_price),
                 line_total=money(i.unit_price * i.quantity), amount=i.unit_price * i.quantity) for i in found]


def adjustment(order: Order, items: list[View], lang: str) -> str | None:
    """Shipping, fees and discounts: what the total differs from its `items` by (order_json.items_total)."""
    difference = order.total - sum((item.amount for item in items), decimal.Decimal("0.00"))
    return notify.money(difference, order.currency, lang=lang) if difference else None


def status_label(order: Order, lang: str) -> str:
    """The one word for where the order stands."""
    _ = translator(lang)
    for key, label in (("refunded", _("refunded")), ("cancelled", _("cancelled")),
                       ("shipped", _("shipped")), ("paid", _("paid"))):
        if order.status_words()[key]:
            return label
    return _("received")


def badges(order: Order, lang: str) -> list[View]:
    _ = translator(lang)
    words = [key for key in STATUS_KEYS if order.status_words()[key]]
    labels = {"paid": _("paid"), "shipped": _("shipped"), "cancelled": _("cancelled"),
              "refunded": _("refunded"), "open": _("not paid")}
    return [View(key=key, label=labels[key]) for key in (words or ["open"])]


def tracking(order: Order) -> View | None:
    if not order.tracking_code and not order.carrier:
        return None
    carrier, url = notify.tracking_link(order.carrier, order.tracking_code)
    return View(code=order.tracking_code or "", carrier=carrier, url=url)


def events(order: Order, *, public: bool) -> list[Event]:
    if not public:
        return list(Event.select().where(Event.order == order).order_by(Event.id))
    found = compiled.run(Event, "public_events", lambda: Event.select().where(
        (Event.order == 0) & Event.kind.in_(PUBLIC_KINDS)).order_by(Event.id), order.id, *PUBLIC_KINDS)
    # a status change the owner undid is gone for the customer; the owner still sees it
    return [e for e in found if e.kind not in INTERNAL_KINDS and not (e.data or {}).get("undone")]


def event_views(order: Order, found: list[Event], lang: str, file_url, renderer, *, owner: bool) -> list[View]:
    files = defaultdict(list)
    wanted = {e.id for e in found}
    attachments = compiled.run(Attachment, "order_files", lambda: Attachment.select(Attachment).join(Event)
                               .where(Event.order == 0).order_by(Attachment.id), order.id)
    for attachment in attachments:
        if attachment.event_id in wanted:
            files[attachment.event_id].append(attachment)
    return [event_view(order, e, files[e.id], lang, file_url, renderer, owner=owner) for e in found]


def event_view(order, event: Event, attachments, lang: str, file_url, renderer, *, owner: bool) -> View:
    body, used = message_html(event, attachments, file_url)
    rest = [a for a in attachments if a.id not in used]
    data = event.data or {}
    return View(
        kind=event.kind, css=event.kind, internal=event.kind in INTERNAL_KINDS, undone=bool(data.get("undone")),
        title=event_title(event, order, lang, owner=owner), author_label=_author(event.author, lang),
        notified=event.notified, when=renderer.when(event.created_at, lang=lang), iso=_iso(event.created_at),
        subject=event.subject, html=body, tracking=_event_tracking(event),
        images=[_file(a, file_url, lang) for a in rest if a.content_type.lower() in INLINE_IMAGES],
        downloads=[_file(a, file_url, lang) for a in rest if a.content_type.lower() not in INLINE_IMAGES])


def _event_tracking(event: Event) -> View | None:
    """The parcel a `shipped` entry tells of (its own code: a later update has another)."""
    data = event.data or {}
    if event.kind != "shipped" or not data.get("tracking_code"):
        return None
    carrier, url = notify.tracking_link(data.get("carrier"), data["tracking_code"])
    return View(code=data["tracking_code"], carrier=carrier, url=url)


def event_title(event: Event, order: Order, lang: str, *, owner: bool) -> str:
    _ = translator(lang)
    data = event.data or {}
    if event.kind == "refunded" and data.get("amount"):
        return _("Refunded: {amount}", amount=notify.money(data["amount"], order.currency, lang=lang))
    if event.kind == "shipped" and data.get("update"):
        return _("Shipping details updated")
    if event.kind == "customer_reply":
        return _("Message from the customer") if owner else _("Your message")
    titles = {"created": _("Order received"), "paid": _("Payment received"), "shipped": _("Shipped"),
              "cancelled": _("Order cancelled"), "refunded": _("Refunded"), "message": _("Message from the shop"),
              "payment_reminder": _("Payment reminder"),
              "note": _("Internal note"), "bounce": _("Mail bounced"), "system": _("System")}
    return titles.get(event.kind, event.kind)


def message_html(event: Event, attachments, file_url) -> tuple[Markup, set[int]]:
    """The event's body as safe HTML, its inline images pointed at `file_url`; and those images' ids."""
    if event.body_html.strip():
        body = clean(event.body_html)
    elif event.body_text.strip():
        body = text_to_html(event.body_text)
    else:
        return Markup(""), set()
    by_cid = {(a.content_id or "").strip("<> "): a for a in attachments
              if a.content_id and a.content_type.lower() in INLINE_IMAGES}
    used: set[int] = set()

    def place(match: re.Match) -> str:
        tag = match.group(0)
        src = _ATTR["src"].search(tag)
        target = html.unescape(src.group(1)).strip() if src else ""
        found = by_cid.get(target[4:].strip("<> ")) if target.lower().startswith("cid:") else None
        if found is not None:
            used.add(found.id)
            return tag[:src.start(1)] + html.escape(file_url(found.id)) + tag[src.end(1):]
        alt = _ATTR["alt"].search(tag)
        words = html.unescape(alt.group(1)).strip() if alt else ""
        return f"[{html.escape(words)}]" if words else ""

    return Markup(_IMG.sub(place, body)), used


@functools.lru_cache(maxsize=2048)
def clean(markup: str) -> str:
    """Sanitised again on every render (cached by content: the same body, the same answer)."""
    return sanitize_html(markup)


def _file(attachment: Attachment, file_url, lang: str) -> View:
    return View(id=attachment.id, url=file_url(attachment.id), filename=attachment.filename,
                content_type=attachment.content_type, size=file_size(attachment.size, lang))


def file_size(n: int, lang: str) -> str:
    unit, value = ("MB", n / 1_048_576) if n >= 1_048_576 else ("KB", max(n / 1024, 0.1))
    return f"{format_decimal(round(value, 1), format='#,##0.#', locale=lang)}\u00a0{unit}"


def _author(author: str, lang: str) -> str:
    _ = translator(lang)
    return {"owner": _("by the shop"), "customer": _("by the customer"), "system": _("automatic")}.get(author, author)


def _iso(moment) -> str:
    return moment.isoformat(timespec="seconds") + "Z" if moment else ""
