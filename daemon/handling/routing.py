"""Routing: what a stored mail is, as an ordered tuple of checks.

The first route whose check holds handles the mail; the order is the policy:

    bounce → auto-reply or loop → owner mail → to a bounce address
    → customer reply → unmatched

Finding the order a mail is about (`find_target`) is separate from handling
it: first a reply token in a recipient address, then our own Message-ID in
In-Reply-To/References, then an order number in the subject — the last only
when the sender is that order's customer (a number in a subject lets anyone
write to an order otherwise).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

from daemon.handling import other_mail as mail_handlers, owner_mail, replies
from daemon.mail import tokens
from daemon.orders import numbers as order_numbers
from daemon.store import compiled
from daemon.mail.addresses import Recipient
from daemon.mail.bounces import Bounce
from daemon.config import Settings
from daemon.mail.parsing import InboundMail
from daemon.store.models import InboundMessage, Order, OutboxMessage
from daemon.store.database import Store


@dataclass(frozen=True)
class Target:
    order: Order
    how: str                 # "token", "message-id" or "subject"
    purpose: int | None = None


@dataclass
class Context:
    """One stored mail being routed, with what the worker already knows of it."""
    store: Store
    settings: Settings
    message: InboundMessage
    mail: InboundMail
    recipients: tuple[Recipient, ...]
    bounce: Bounce | None
    now: dt.datetime
    # The Message-IDs of our own sent mail among a group's, looked up for the
    # whole group at once (daemon/handling/inbound.py); None: looked up for this mail.
    ours: frozenset[str] | None = None

    def sent_to(self, kind: str) -> bool:
        return any(r.kind == kind for r in self.recipients)

    @cached_property
    def target(self) -> Target | None:
        return find_target(self)

    @cached_property
    def automatic(self) -> str | None:
        """Why this mail was written by a machine, or None: never answer those."""
        if self.mail.auto_submitted:
            return self.mail.auto_submitted
        if self.mail.message_id and self._ours(self.mail.message_id):
            return "our own mail came back"
        return None

    def _ours(self, message_id: str) -> bool:
        if self.ours is not None:
            return message_id in self.ours
        return compiled.exists(OutboxMessage, "routing.ours", lambda: (
            OutboxMessage.select().where(OutboxMessage.message_id == "")), message_id)


@dataclass(frozen=True)
class Route:
    name: str
    check: Callable[[Context], bool]
    handle: Callable[[Context], str]


ROUTES = (
    Route("bounce", lambda ctx: ctx.bounce is not None, mail_handlers.handle_bounce),
    Route("auto-reply", lambda ctx: ctx.automatic is not None, mail_handlers.handle_auto_reply),
    Route("owner mail", owner_mail.is_owner_mail, owner_mail.handle),
    Route("bounce address", lambda ctx: ctx.target is not None and ctx.target.purpose == tokens.BOUNCE,
          mail_handlers.handle_at_bounce_address),
    Route("customer reply", lambda ctx: ctx.target is not None, replies.handle_customer_reply),
    Route("unmatched", lambda ctx: True, mail_handlers.handle_unmatched),
)


def our_message_ids(message_ids: list[str]) -> frozenset[str]:
    """Those of `message_ids` that our own sent mail carries, in one statement (`Context.ours`)."""
    wanted = sorted(set(filter(None, message_ids)))
    if not wanted:
        return frozenset()
    found = set()
    for chunk in compiled.padded(wanted):
        found.update(row.message_id for row in compiled.every(
            OutboxMessage, ("routing.ours_of", len(chunk)), lambda: OutboxMessage.select(OutboxMessage.message_id)
            .where(OutboxMessage.message_id.in_([""] * len(chunk))), *chunk))
    return frozenset(found)


def route(ctx: Context) -> str:
    """Handle the mail by the first route that fits; returns what was done."""
    for candidate in ROUTES:
        if candidate.check(ctx):
            return f"{candidate.name}: {candidate.handle(ctx)}"
    raise AssertionError("the last route takes everything")


def find_target(ctx: Context) -> Target | None:
    return _by_token(ctx) or _by_message_id(ctx.mail) or _by_subject(ctx.mail)


def _by_token(ctx: Context) -> Target | None:
    for recipient in ctx.recipients:
        if recipient.kind == "token" and recipient.order is not None:
            return Target(recipient.order, "token", recipient.purpose)
    return None


def _by_message_id(mail: InboundMail) -> Target | None:
    ids = [i for i in (*mail.in_reply_to, *reversed(mail.references)) if i]
    if not ids:
        return None
    # The order of the latest of our mails answered. One statement per power
    # of two of ids (the list padded with its first): a few, however many come.
    size = 1 << (len(ids) - 1).bit_length()
    order = compiled.get(Order, ("routing.by_message_id", size), lambda: (
        Order.select().join(OutboxMessage).where(OutboxMessage.message_id.in_([""] * size))
        .order_by(OutboxMessage.id.desc()).limit(1)), *ids, *[ids[0]] * (size - len(ids)), 1)
    return Target(order, "message-id", tokens.CUSTOMER_REPLY) if order is not None else None


ORDER_IN_SUBJECT = re.compile(r"(?:#|\b(?:order|bestellung|commande|nr\.?|no\.?)\s*#?\s*)([A-Za-z0-9][A-Za-z0-9_-]{0,31})",
                              re.IGNORECASE)


def _by_subject(mail: InboundMail) -> Target | None:
    if not mail.from_address:
        return None
    for number in ORDER_IN_SUBJECT.findall(mail.subject):
        for order in compiled.every(Order, "routing.by_number", lambda: Order.select().where(
                order_numbers.matching("")), order_numbers.folded(number)):
            if order.customer_email == mail.from_address:
                return Target(order, "subject", tokens.CUSTOMER_REPLY)
    return None
