"""Reading a stored message's raw bytes."""
from __future__ import annotations

from daemon.store import InboundMessage


def load_raw(message_id: int) -> bytes:
    value = InboundMessage.select(InboundMessage.raw).where(InboundMessage.id == message_id).scalar()
    return bytes(value) if isinstance(value, memoryview) else value
