"""The customer's side: the order page, the list of one's orders, the order's files."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace as View

from daemon.orders import numbers as order_numbers
from daemon.outbound import notify
from daemon.payments import girocode
from daemon.config import SUPPORTED_LOCALES, Settings
from daemon.store.models import Attachment, Blob, Event, Order
from statuspage import links, views
from statuspage.i18n import translator


def etag(order, renderer) -> str:
    """Changes whenever anything on the page can: every change to an order sets
    updated_at; a new link changes the token; new templates change the version."""
    parts = (renderer.version, order.id, order.status_token, order.updated_at, order.status_token_issued_at,
             order.status, order.locale)
    return '"' + hashlib.sha256(repr(parts).encode()).hexdigest()[:32] + '"'


def order_page(settings: Settings, order: Order, renderer) -> tuple[str, View]:
    lang = notify.order_language(settings, order)
    file_url = lambda attachment_id: renderer.url(f"/o/{order.status_token}/files/{attachment_id}")  # noqa: E731
    money = lambda amount: notify.money(amount, order.currency, lang=lang)  # noqa: E731
    expiry = links.expires_at(order, settings)
    items = views.items(order, lang)
    page = View(
        number=order.number, placed=notify.day(order.created_at, lang=lang),
        status_label=views.status_label(order, lang), steps=steps(order, lang, renderer),
        tracking=views.tracking(order), payment=payment(settings, order, lang, renderer),
        items=items, total=money(order.total), adjustment=views.adjustment(order, items, lang),
        refunded=money(order.refunded_amount) if order.refunded_amount else None,
        events=views.event_views(order, views.events(order, public=True), lang, file_url, renderer, owner=False),
        expires=notify.day(expiry, lang=lang) if expiry else None)
    return lang, page


def steps(order: Order, lang: str, renderer) -> list[View]:
    """received → paid → shipped; or → cancelled; refunded after either."""
    _ = translator(lang)
    words = order.status_words()
    line = [("received", _("Received"), order.created_at, False)]
    if words["cancelled"]:
        if words["paid"]:
            line.append(("paid", _("Paid"), order.paid_at, False))
        line.append(("cancelled", _("Cancelled"), order.cancelled_at, True))
    else:
        line += [("paid", _("Paid"), order.paid_at if words["paid"] else None, False),
                 ("shipped", _("Shipped"), order.shipped_at if words["shipped"] else None, False)]
    if words["refunded"]:
        line.append(("refunded", _("Refunded"), order.refunded_at, True))
    last_done = max(i for i, (_k, _l, moment, _s) in enumerate(line) if moment or i == 0)
    return [View(key=key, label=label, date=notify.day(moment, lang=lang) if moment else "",
                 iso=views._iso(moment), current=i == last_done,
                 state=("stopped" if stops else "current" if i == last_done else "done") if moment or i == 0 else "todo")
            for i, (key, label, moment, stops) in enumerate(line)]


def payment(settings: Settings, order: Order, lang: str, renderer) -> View | None:
    """How to pay, while the order waits for it; with the GiroCode where there is one."""
    words = order.status_words()
    if words["paid"] or words["cancelled"]:
        return None
    method = settings.payment.get(order.payment_method)
    total = notify.money(order.total, order.currency, lang=lang)
    text = notify.instructions(settings, method, lang, total=total, number=order.number, name=order.customer_name)
    code = notify.girocode_view(settings, order, lang)
    if code is not None:
        code.url = renderer.url(f"/o/{order.status_token}/girocode.svg")
    return View(label=(method.label if method and method.label else order.payment_method), instructions=text,
                girocode=code)


def girocode_svg(settings: Settings, order: Order) -> bytes | None:
    """The order's GiroCode as SVG while it waits for a transfer; None when there is none."""
    code = girocode.for_order(settings, order)
    return code.svg() if code is not None else None


def customer_orders(settings: Settings, email: str, lang: str, renderer, now) -> list[View]:
    found = Order.select().where(Order.customer_email == email).order_by(Order.created_at.desc(), Order.id.desc())
    return [View(number=o.number, placed=notify.day(o.created_at, lang=lang),
                 total=notify.money(o.total, o.currency, lang=lang), status_label=views.status_label(o, lang),
                 expired=links.is_expired(o, settings, now), url=renderer.url(f"/o/{o.status_token}"))
            for o in found.limit(200)]


def load_order(order_id: int) -> Order:
    return Order.get_by_id(order_id)


def customer_order(email: str, number: str) -> Order | None:
    """One of this address's orders, by number."""
    return Order.get_or_none((Order.customer_email == email) & order_numbers.matching(number))


def public_file(order_id: int, attachment_id: int) -> tuple[Attachment, bytes] | None:
    """A file of a public event of this order (never of a note or a bounce), with its bytes."""
    attachment = (Attachment.select(Attachment, Event, Blob).join(Event).switch(Attachment).join(Blob)
                  .where((Attachment.id == attachment_id) & (Event.order == order_id)
                         & Event.kind.in_(views.PUBLIC_KINDS))
                  .first())
    if attachment is None or (attachment.event.data or {}).get("undone"):
        return None
    return attachment, attachment.blob.data
