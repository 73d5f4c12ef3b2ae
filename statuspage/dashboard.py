"""The owner's side: orders by filter, one order's whole log, CSV, mailto: commands.

Read-only by design: every change stays in the mail workflow, so each order
offers `mailto:` links to the command address with the command written
(`paid 1042`), as the owner would type it. The filter is the one language
of the CLI and of mail (`daemon.orders.filters`), taken from `?q=`, so a filter is
a bookmark.
"""
from __future__ import annotations

import csv
import io
import math
from types import SimpleNamespace as View
from urllib.parse import quote, urlencode

from daemon.orders import filters, service as orders
from daemon.outbound import notify
from daemon.config import Settings
from daemon.store.models import Attachment, Blob, Order
from statuspage import links, views
from statuspage.i18n import translator

PAGE_SIZE = 50
SORTS = ("newest", "oldest")
CSV_COLUMNS = ("number", "created_at", "customer_name", "customer_email", "total", "currency",
               "payment_method", "status", "paid_at", "shipped_at", "cancelled_at", "refunded_at",
               "refunded_amount", "carrier", "tracking_code", "status_url")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def dashboard(settings: Settings, q: str, sort: str, page: int, renderer) -> View:
    """One page of the orders a filter finds; raises FilterSyntaxError (with its column)."""
    lang = settings.shop.locale
    node = filters.parse(q)
    count = filters.count_orders(q)
    pages = max(1, math.ceil(count / PAGE_SIZE))
    page = min(max(1, page), pages)
    found = page_of_orders(q, node, sort, (page - 1) * PAGE_SIZE)
    link = lambda n: renderer.url("/admin?" + urlencode(_params(q, sort, n)))  # noqa: E731
    return View(q=q, sort=sort, page=page, pages=pages, count=count, error=None,
                rows=[row(settings, o, lang, renderer) for o in found],
                prev_url=link(page - 1) if page > 1 else None, next_url=link(page + 1) if page < pages else None,
                csv_url=renderer.url("/admin/orders.csv?" + urlencode({"q": q, "sort": sort})))


def check_filter(q: str) -> None:
    """Raises FilterSyntaxError (naming the column) if `q` is not a filter."""
    filters.parse(q)


def failed(q: str, sort: str, error: str) -> View:
    return View(q=q, sort=sort, page=1, pages=1, count=0, error=error, rows=[], prev_url=None, next_url=None,
                csv_url="")


def page_of_orders(q: str, node, sort: str, offset: int, limit: int | None = PAGE_SIZE) -> list[Order]:
    if sort == "newest":
        return filters.find_orders(q, limit=limit, offset=offset)
    query = Order.select().where(filters.condition(node)).order_by(Order.created_at.asc(), Order.id.asc())
    return list(query.limit(limit).offset(offset) if limit else query.offset(offset))


def row(settings: Settings, order: Order, lang: str, renderer) -> View:
    return View(number=order.number, url=renderer.url(f"/admin/orders/{quote(order.number)}"),
                placed=renderer.when(order.created_at, lang=lang), iso=views._iso(order.created_at),
                customer=order.customer_name, email=order.customer_email,
                total=notify.money(order.total, order.currency, lang=lang), badges=views.badges(order, lang),
                tracking=" ".join(filter(None, (order.carrier, order.tracking_code))),
                actions=actions(settings, order, lang))


def actions(settings: Settings, order: Order, lang: str) -> list[View]:
    """The commands that make sense now, as mailto: links to the command address."""
    if not settings.owner.secret:
        return []          # no command address without a secret
    _ = translator(lang)
    words, n = order.status_words(), order.number
    fully_refunded = order.refunded_amount is not None and order.refunded_amount >= order.total
    wanted = [
        (not words["paid"] and not words["cancelled"], _("Mark paid"), f"paid {n}"),
        (not words["shipped"] and not words["cancelled"], _("Mark shipped"), f"shipped {n} tracking "),
        (not words["shipped"] and not words["cancelled"], _("Cancel"), f"cancelled {n}"),
        (words["paid"] and not fully_refunded, _("Refund"), f"refunded {n} full"),
        (True, _("Message"), f"message {n}"),
        (True, _("Note"), f"note {n}"),
    ]
    return [View(label=label, command=command.strip(), href=mailto(settings.command_address, command))
            for show, label, command in wanted if show]


def mailto(address: str, subject: str) -> str:
    return f"mailto:{quote(address, safe='@+')}?subject={quote(subject, safe='')}"


def order_detail(settings: Settings, number: str, renderer, now) -> View:
    lang = settings.shop.locale
    order = orders.find_order(number)
    file_url = lambda attachment_id: renderer.url(f"/admin/files/{attachment_id}")  # noqa: E731
    method = settings.payment.get(order.payment_method)
    items = views.items(order, lang)
    return View(
        number=order.number, customer=order.customer_name, email=order.customer_email,
        placed=renderer.when(order.created_at, lang=lang), badges=views.badges(order, lang),
        total=notify.money(order.total, order.currency, lang=lang), adjustment=views.adjustment(order, items, lang),
        refunded=notify.money(order.refunded_amount, order.currency, lang=lang) if order.refunded_amount else None,
        payment_label=method.label if method and method.label else order.payment_method,
        tracking=views.tracking(order), status_url=settings.status_url(order.status_token),
        expired=links.is_expired(order, settings, now), actions=actions(settings, order, lang),
        items=items,
        events=views.event_views(order, views.events(order, public=False), lang, file_url, renderer, owner=True))


def any_file(attachment_id: int) -> tuple[Attachment, bytes] | None:
    attachment = (Attachment.select(Attachment, Blob).join(Blob).where(Attachment.id == attachment_id).first())
    return None if attachment is None else (attachment, attachment.blob.data)


def csv_chunks(settings: Settings, q: str, sort: str):
    """The whole filter as CSV (UTF-8 with BOM, for spreadsheets), a chunk per 500 orders."""
    node = filters.parse(q)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")
    writer.writerow(CSV_COLUMNS)
    offset = 0
    while True:
        batch = page_of_orders(q, node, sort, offset, limit=500)
        for order in batch:
            writer.writerow([_cell(value) for value in csv_row(settings, order)])
        yield buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        if len(batch) < 500:
            return
        offset += 500


def csv_row(settings: Settings, order: Order) -> list:
    words = [w for w in views.STATUS_KEYS if order.status_words()[w]]
    return [order.number, views._iso(order.created_at), order.customer_name, order.customer_email,
            order.total, order.currency, order.payment_method, " ".join(words) or "open",
            views._iso(order.paid_at), views._iso(order.shipped_at), views._iso(order.cancelled_at),
            views._iso(order.refunded_at), order.refunded_amount if order.refunded_amount is not None else "",
            order.carrier or "", order.tracking_code or "", settings.status_url(order.status_token)]


def _cell(value) -> str:
    """A spreadsheet must not run what a customer typed: a leading = + - @ is quoted away."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _params(q: str, sort: str, page: int) -> dict:
    params = {"q": q} if q else {}
    if sort != "newest":
        params["sort"] = sort
    if page > 1:
        params["page"] = page
    return params
