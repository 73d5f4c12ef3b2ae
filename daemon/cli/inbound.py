"""Received mail as the owner sees it: `ordermail inbound list|show`."""
from __future__ import annotations

from daemon.errors import InputError
from daemon.mail.parsing import parse_mail
from daemon.store.models import InboundMessage


def list_messages(state: str | None, limit: int) -> list[InboundMessage]:
    query = InboundMessage.select().order_by(InboundMessage.id.desc()).limit(max(limit, 1))
    if state:
        query = query.where(InboundMessage.state == state)
    return list(query)


def get_message(message_id: int) -> InboundMessage:
    message = InboundMessage.get_or_none(InboundMessage.id == message_id)
    if message is None:
        raise InputError(f"no received message {message_id}")
    return message


def message_json(message: InboundMessage, raw: bool = False) -> dict:
    document = {
        "id": message.id, "received_at": message.received_at.isoformat(timespec="seconds") + "Z",
        "channel": message.channel, "envelope_from": message.envelope_from,
        "recipients": message.recipients, "message_id": message.message_id,
        "size": message.size, "sha256": message.sha256, "state": message.state,
        "reason": message.reason, "attempts": message.attempts,
        "order": message.order.number if message.order_id else None,
    }
    if message.raw_pruned_at is not None:
        document["raw_pruned_at"] = message.raw_pruned_at.isoformat(timespec="seconds") + "Z"
    if raw:
        document["raw"] = None if message.raw_pruned_at else message.raw.decode("utf-8", "replace")
    return document


def message_table(messages: list[InboundMessage]) -> str:
    if not messages:
        return "no messages"
    lines = [f"{'ID':>6}  {'RECEIVED':16}  {'STATE':11}  {'FROM':30}  REASON"]
    for m in messages:
        lines.append(f"{m.id:>6}  {m.received_at:%Y-%m-%d %H:%M}  {m.state:11}  "
                     f"{(m.envelope_from or '(unknown)')[:30]:30}  {m.reason[:60]}")
    return "\n".join(lines)


def message_detail(message: InboundMessage) -> str:
    if message.raw_pruned_at is not None:
        return "\n".join(_head(message, []) + [
            f"Raw:      pruned on {message.raw_pruned_at:%Y-%m-%d} ([inbound] keep_raw_days); "
            f"Message-ID {message.message_id or '-'}, SHA-256 {message.sha256}"])
    mail = parse_mail(message.raw, envelope_from=message.envelope_from)
    head = _head(message, [f"From:     {mail.from_address or '-'}", f"Subject:  {mail.subject}"])
    return "\n".join(head + ["", message.raw.decode("utf-8", "replace")])


def _head(message: InboundMessage, sender: list[str]) -> list[str]:
    return [f"Message {message.id} ({message.channel}, {message.size} bytes) — {message.state}",
            f"Reason:   {message.reason or '-'}",
            f"Envelope: {message.envelope_from or '(unknown)'} → {', '.join(message.recipients)}",
            *sender,
            f"Order:    {message.order.number if message.order_id else '-'}"]
