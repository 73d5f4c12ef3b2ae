"""Customer replies: trimmed onto their order, files left out, the owner told.

Only the order's own customer writes a `customer_reply`. A valid reply
address used by anyone else (a forward, a CC, a spoof) never changes who the
customer is: the text lands as an internal event and the owner is told.
Customers cannot send files: attachments are not stored, the event counts
them, and the customer gets one friendly note a day at most.
"""
from __future__ import annotations

from daemon.orders import service as orders
from daemon.orders.service import Content, Via


def handle_customer_reply(ctx) -> str:
    target, mail = ctx.target, ctx.mail
    order = target.order
    from_customer = mail.from_address == order.customer_email
    files = len(mail.attachments)
    change = _log_reply(ctx, order, from_customer, files, target.how)
    ctx.message.order = order
    if not change.done:
        return change.summary
    for owner in ctx.settings.owner.addresses:
        orders.queue_mail(ctx.settings, "reply_forward", owner, order=order, event=change.event_id,
                          inbound=ctx.message, data={"from_customer": from_customer}, now=ctx.now)
    if files and from_customer and not orders.mailed_recently("files_refused", order.customer_email, ctx.now):
        orders.queue_mail(ctx.settings, "files_refused", order.customer_email, order=order,
                          event=change.event_id, data={"files": files}, now=ctx.now)
    return change.summary + (f"; {files} file(s) left out" if files else "")


def _log_reply(ctx, order, from_customer: bool, files: int, how: str):
    mail = ctx.mail
    text = _bounded(mail.trimmed.text, ctx.settings.limits.event_body_max_chars)
    data = {"files_left_out": files, "matched_by": how}
    if from_customer:
        return orders.add_event(ctx.store, ctx.settings, order.number, "customer_reply",
                                Content(subject=mail.subject, text=text), data=data,
                                via=Via(author="customer", message_id=mail.message_id, now=ctx.now))
    sender = mail.from_address or "an unknown sender"
    return orders.add_event(ctx.store, ctx.settings, order.number, "system",
                            Content(subject=f"Reply from another address: {sender}", text=text),
                            data={**data, "from": mail.from_address, "reason": "reply_from_other_address"},
                            via=Via(author="system", message_id=mail.message_id, now=ctx.now))


def _bounded(text: str, limit: int) -> str:
    """A reply longer than an event may hold keeps its beginning, and says so."""
    if len(text) <= limit:
        return text
    note = f"\n[… {len(text) - limit + 200:,} more characters left out; the whole mail is kept]"
    return text[: limit - 200] + note
