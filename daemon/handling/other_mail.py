"""What happens to bounces, automatic replies and unmatched mail.

None of these is ever answered: a bounce or an auto-reply answered is how
mail loops start, and an unmatched mail goes to the owner, not back.
"""
from __future__ import annotations

from daemon.orders import service as orders
from daemon.orders.service import Content, Via
from daemon.store.models import Order, OutboxMessage


def handle_bounce(ctx) -> str:
    bounce = ctx.bounce
    sent = _returned_mail(ctx)
    order = sent.order if sent is not None else _token_order(ctx)
    if order is None:
        return "kept; it answers no mail of ours"
    ctx.message.order = order
    change = orders.record_bounce(
        ctx.store, ctx.settings, order.number,
        Content(subject=f"Delivery failed{': ' + bounce.status if bounce.status else ''}",
                text=bounce.diagnostic),
        data={"status": bounce.status, "permanent": bounce.permanent, "recipient": bounce.recipient,
              "original_message_id": bounce.original_message_id, "counts": _counts(bounce, sent)},
        via=Via(author="system", message_id=ctx.mail.message_id, now=ctx.now))
    return change.summary


def _returned_mail(ctx) -> OutboxMessage | None:
    """Our mail that the bounce names (by the Message-ID it quotes), if it belongs to an order."""
    original = ctx.bounce.original_message_id
    sent = OutboxMessage.get_or_none(OutboxMessage.message_id == original) if original else None
    return sent if sent is not None and sent.order_id is not None else None


def _token_order(ctx) -> Order | None:
    target = ctx.target
    return target.order if target is not None and target.how == "token" else None


def _counts(bounce, sent: OutboxMessage | None) -> bool:
    """Whether the bounce may flag an address: only when it names a mail we sent to that very address.

    A reply or bounce address is in every mail we send (Reply-To, Return-Path):
    anyone who saw one can send a delivery report to it. Only one that quotes
    the Message-ID of our mail to the address it reports as failed is ours.
    """
    if sent is None:
        return False
    return (bounce.recipient or sent.recipient).lower() == sent.recipient.lower()


def handle_auto_reply(ctx) -> str:
    target = ctx.target
    if target is None:
        return f"kept, not answered ({ctx.automatic})"
    ctx.message.order = target.order
    change = orders.add_event(
        ctx.store, ctx.settings, target.order.number, "system",
        Content(subject=f"Automatic reply received ({ctx.automatic})",
                text=ctx.mail.trimmed.text[:2000]),
        data={"reason": "auto_reply"},
        via=Via(author="system", message_id=ctx.mail.message_id, now=ctx.now))
    return change.summary + "; not answered"


def handle_at_bounce_address(ctx) -> str:
    """Mail to an order's bounce address that is no delivery report.

    That address is only ever the envelope sender of our own mail, so this
    is no customer's reply: a report of a kind not recognised, or a program
    answering the wrong address. Kept on the order's log, never public, and
    shown to the owner as unmatched mail.
    """
    order = ctx.target.order
    ctx.message.order = order
    change = orders.add_event(
        ctx.store, ctx.settings, order.number, "system",
        Content(subject="Mail to the bounce address (no delivery report)", text=ctx.mail.trimmed.text[:2000]),
        data={"reason": "bounce_address"},
        via=Via(author="system", message_id=ctx.mail.message_id, now=ctx.now))
    return f"{change.summary}; {handle_unmatched(ctx)}"


def handle_unmatched(ctx) -> str:
    for owner in ctx.settings.owner.addresses:
        orders.queue_mail(ctx.settings, "unmatched_forward", owner, inbound=ctx.message, now=ctx.now)
    return "forwarded to the owner" if ctx.settings.owner.addresses else "kept (no owner address configured)"
