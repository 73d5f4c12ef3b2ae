"""`ordermail deliver`: the pipe door, for an MTA's pipe transport or procmail.

Reads one message from stdin, checks size and recipients, commits it, then
handles it at once (so a pipe-only set-up needs no running daemon; a running
daemon's worker would find it claimed). Exit codes are sysexits: 0 taken,
65 bad data, 67 no such recipient, 75 try again later.
"""
from __future__ import annotations

import sys

from daemon.addresses import check_recipient
from daemon.errors import EX_OK, MailRefused, TooLarge, UnknownRecipient
from daemon.inbound import claim, process_claimed
from daemon.intake.envelope import envelope_sender, header_recipients
from daemon.intake.spool import store_message
from daemon.store import utcnow


def deliver(store, settings, stdin, recipients: list[str], envelope_from: str | None = None) -> int:
    raw = stdin.read(settings.inbound.max_message_bytes + 1)
    if len(raw) > settings.inbound.max_message_bytes:
        raise TooLarge(f"message larger than {settings.inbound.max_message_bytes} bytes")
    ours = _our_recipients(recipients or header_recipients(raw), settings)
    if envelope_from is None:
        sender = envelope_sender(raw)
    else:
        sender = envelope_from or "<>"      # --sender '' is the null sender of a bounce
    with store.atomic():
        message_id = store_message(raw, channel="pipe", envelope_from=sender, recipients=ours)
    if claim(message_id):
        process_claimed(store, settings, [message_id])
    print(f"taken as {message_id}", file=sys.stderr)
    return EX_OK


def _our_recipients(addresses: list[str], settings) -> list[str]:
    """The addresses we take; refuse the whole message when none is ours."""
    ours, refusal = [], None
    for address in addresses:
        try:
            check_recipient(address, settings, utcnow().date())
            ours.append(address)
        except MailRefused as exc:
            refusal = refusal or exc
    if not ours:
        raise refusal or UnknownRecipient("the message names no recipient")
    return ours
