"""Status links: finding an order by its link, expiry, and issuing a new link.

A status link is `<base_url>/o/<orders.status_token>` (192 random bits). It
stops working when it is re-issued — the token is replaced, so the old one
is simply unknown — or, with `[web] status_link_days`, that many days after
the order last changed or the link was last issued, whichever is later
(every mail about the order carries the link, so a change that mails the
customer also keeps it alive).

Every way of missing — unknown, malformed, expired, re-issued — costs the
same: one indexed lookup (a malformed token looks up a placeholder that can
never exist), then a constant-time comparison, then the same answer.
"""
from __future__ import annotations

import collections
import datetime as dt
import hmac
import re

from daemon.orders import service as orders
from daemon.store import compiled
from daemon.config import Settings
from daemon.orders.service import Via
from daemon.store.models import Order
from daemon.store.database import Store

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
NEVER_A_TOKEN = "!" * 32      # not URL-safe base64: no order has it


# What a visit needs to know before anything else: is the link alive, and has the page changed?
LINK_FIELDS = (Order.id, Order.status_token, Order.created_at, Order.updated_at, Order.status_token_issued_at,
               Order.status, Order.locale)
Link = collections.namedtuple("Link", [f.name for f in LINK_FIELDS])


def find_by_token(token: str, settings: Settings, now: dt.datetime) -> Link | None:
    """The live status link `token` names, else None (for every kind of miss)."""
    wellformed = bool(TOKEN_RE.fullmatch(token))
    row = compiled.first_row(Order, "link_by_token", lambda: Order.select(*LINK_FIELDS).where(Order.status_token == ""),
                             token if wellformed else NEVER_A_TOKEN)
    if row is None:
        return None
    link = Link(*(field.python_value(value) for field, value in zip(LINK_FIELDS, row)))
    if not hmac.compare_digest(link.status_token.encode(), token.encode("utf-8", "replace")):
        return None
    return None if is_expired(link, settings, now) else link


def expires_at(order: Order | Link, settings: Settings) -> dt.datetime | None:
    days = settings.web.status_link_days
    if not days:
        return None
    issued = order.status_token_issued_at or order.created_at
    return max(issued, order.updated_at) + dt.timedelta(days=days)


def is_expired(order: Order | Link, settings: Settings, now: dt.datetime) -> bool:
    end = expires_at(order, settings)
    return end is not None and now >= end


def relink(store: Store, settings: Settings, number: str, *, mail: bool = True,
           author: str = "owner", now: dt.datetime | None = None) -> Order:
    """Replace the order's status link (the old one dies at once), log it
    internally and, unless told not to, mail the new one to the customer."""
    orders.reissue_status_link(store, settings, number, mail=mail, via=Via(author=author, now=now))
    return orders.find_order(number)
