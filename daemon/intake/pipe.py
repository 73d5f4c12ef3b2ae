"""`ordermail deliver`: the pipe door, for an MTA's pipe transport or procmail.

Reads one message from stdin, checks size and recipients, commits it, then
handles it at once (so a pipe-only set-up needs no running daemon; a running
daemon's worker would find it claimed). Exit codes are sysexits: 0 taken,
65 bad data, 67 no such recipient, 75 try again later. Once the message is
committed the exit is 0: if handling it fails, it waits for a worker or
`ordermail inbound retry`, and is not refused.
"""
from __future__ import annotations

import sys

from daemon.mail.addresses import check_recipient
from daemon.errors import EX_OK, MailRefused, TooLarge, UnknownRecipient
from daemon.handling.inbound import handle_now
from daemon.intake.envelope import envelope_sender, header_recipients
from daemon.intake.spool import store_message
from daemon.store.models import utcnow
from daemon.store.database import first_line


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
    _handle_now(store, settings, message_id)
    print(f"taken as {message_id}", file=sys.stderr)
    return EX_OK


def _handle_now(store, settings, message_id: int) -> None:
    """Handle the committed message; if the store fails now, it waits.

    The message is taken whatever happens here: a "try again" exit would
    have the MTA deliver it a second time.
    """
    try:
        handle_now(store, settings, message_id)
    except Exception as exc:
        print(f"ordermail: message {message_id} is taken; handling it failed ({first_line(exc)}); "
              f"the daemon's worker, or 'ordermail inbound retry {message_id}', will handle it", file=sys.stderr)


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
