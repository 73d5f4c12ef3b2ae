"""SMTP and LMTP doors (aiosmtpd) on the daemon's own event loop.

The server owns the protocol; `Door` implements only the hooks: RCPT checks
the recipient (refused while the sender is connected: no backscatter), DATA
commits the raw bytes through the spool and answers 250 only after that.
LMTP answers once per recipient, as Postfix's lmtp transport expects.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import replace
from io import BytesIO

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from daemon.addresses import Recipient, check_recipient
from daemon.config import Settings
from daemon.errors import AutoSubmittedCommand, MailRefused, ShuttingDown, TooLarge, smtp_reply
from daemon.inbound_mail import parse_mail
from daemon.store import utcnow

log = logging.getLogger("ordermail.smtp")
MAX_RECIPIENTS = 100
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"


class Door:
    """aiosmtpd handler shared by the SMTP and LMTP listeners."""

    def __init__(self, settings: Settings, spool, *, lmtp: bool):
        self.settings = settings
        self.spool = spool
        self.lmtp = lmtp
        self.accepting = True
        self.in_flight = 0
        self.recipients = RecipientCache(settings)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.accepting:
            return ShuttingDown.smtp
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        try:
            recipient = await self.recipients.check(address)
        except Exception as exc:
            if not isinstance(exc, MailRefused):
                log.exception("recipient check failed for %s", address)
            return smtp_reply(exc)
        envelope.rcpt_tos.append(address)
        if recipient.kind == "command":
            envelope.to_command = True
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.in_flight += 1
        try:
            status = await self._take(envelope)
        finally:
            self.in_flight -= 1
        return "\r\n".join([status] * len(envelope.rcpt_tos)) if self.lmtp else status

    async def _take(self, envelope) -> str:
        try:
            if not self.accepting:
                raise ShuttingDown()
            if getattr(envelope, "to_command", False):
                await asyncio.to_thread(_refuse_automatic, bytes(envelope.original_content), envelope.mail_from)
            message_id = await self.spool.put(
                bytes(envelope.original_content), channel="lmtp" if self.lmtp else "smtp",
                envelope_from=envelope.mail_from or "", recipients=envelope.rcpt_tos)
        except Exception as exc:
            if not isinstance(exc, MailRefused):
                log.warning("message not taken: %s", exc)
            return smtp_reply(exc)
        return f"250 2.0.0 OK queued as {message_id}"


class RecipientCache:
    """Recipients found good lately, so a busy reply address costs no query per RCPT.

    A check looks the order up in the store (in a thread: the event loop never
    waits for the database). An address found good is taken again without
    asking for a minute; the worker checks every recipient again when it
    handles the mail, so an order deleted meanwhile costs nothing: its mail
    goes to the owner as unmatched. Refusals are not kept.
    """

    def __init__(self, settings: Settings, *, seconds: float = 60.0, size: int = 10_000):
        self.settings, self.seconds, self.size = settings, seconds, size
        self._good: dict[tuple[str, dt.date], tuple[float, Recipient]] = {}

    async def check(self, address: str) -> Recipient:
        """The recipient, or the refusal (MailRefused) it deserves."""
        today = utcnow().date()
        key = (address.lower(), today)
        kept = self._good.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        recipient = await asyncio.to_thread(check_recipient, address, self.settings, today)
        if len(self._good) >= self.size:     # bounded: start afresh rather than grow
            self._good.clear()
        self._good[key] = (time.monotonic() + self.seconds, replace(recipient, order=None))
        return recipient


def _refuse_automatic(raw: bytes, envelope_from: str) -> None:
    """Automatic mail at the command address is refused while the sender waits."""
    reason = parse_mail(raw, envelope_from=envelope_from or "").auto_submitted
    if reason:
        raise AutoSubmittedCommand(f"automatic mail ({reason}) at the command address")


class _EnhancedCodes:
    """aiosmtpd's own size refusals, given the enhanced status code (RFC 3463).

    Lines may be as long as the whole message may be: real mail has 100 KB
    header lines and pasted quotes without line breaks, and refusing them
    loses the mail; memory stays bounded by the size limit.
    """

    def __init__(self, *args, line_length_limit: int, **kwargs):
        self.line_length_limit = line_length_limit
        super().__init__(*args, **kwargs)

    async def smtp_DATA(self, arg: str) -> None:
        """DATA read into one buffer.

        aiosmtpd keeps every line as an object of its own until the end and
        then joins them: four times a message's size in memory, most of it
        never given back. Here the lines go into one growing buffer that
        becomes the message without a copy: a 25 MB mail costs about 1.1x
        its size while it arrives.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content = await self._read_data()
        if content is None:
            self._set_post_data_state()
            await self.push(TooLarge.smtp)
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)

    async def _read_data(self) -> bytes | None:
        """The message up to the lone dot, dots unstuffed; None when over the limit.

        A BytesIO, not a bytearray: it grows one bytes object in place, and
        getvalue() hands that very object on (shrunk to size), where
        bytes(bytearray) would copy the whole message once more.
        """
        buffer, size, limit, too_large = BytesIO(), 0, self.data_size_limit, False
        while True:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as overrun:     # a line longer than any message may be
                await self._reader.readexactly(overrun.consumed)
                too_large, buffer = True, BytesIO()
                continue
            if line == b".\r\n":
                return None if too_large else buffer.getvalue()
            if too_large:
                continue
            size += buffer.write(line[1:] if line[:1] == b"." else line)
            if limit and size > limit:
                too_large, buffer = True, BytesIO()

    async def push(self, status: str):
        if status.startswith("552 Error"):
            status = TooLarge.smtp
        await super().push(status)


class SMTPDoor(_EnhancedCodes, SMTP):
    pass


class LMTPDoor(_EnhancedCodes, LMTP):
    pass


class Listeners:
    """The SMTP and LMTP servers that are configured; started and stopped together."""

    def __init__(self, settings: Settings, spool):
        self.settings = settings
        self.spool = spool
        self.doors: list[Door] = []
        self.servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        inbound = self.settings.inbound
        for listen, lmtp in ((inbound.smtp_listen, False), (inbound.lmtp_listen, True)):
            if listen:
                await self._start_one(listen, lmtp)

    async def _start_one(self, listen: str, lmtp: bool) -> None:
        host, _, port = listen.rpartition(":")
        door = Door(self.settings, self.spool, lmtp=lmtp)
        protocol = LMTPDoor if lmtp else SMTPDoor
        loop = asyncio.get_running_loop()

        def factory():
            return protocol(door, hostname=self.settings.shop.domain, loop=loop,
                            data_size_limit=self.settings.inbound.max_message_bytes,
                            line_length_limit=self.settings.inbound.max_message_bytes + 2,
                            enable_SMTPUTF8=True, timeout=300)

        server = await loop.create_server(factory, host.strip("[]"), int(port))
        self.doors.append(door)
        self.servers.append(server)
        log.info("%s listening on %s", "LMTP" if lmtp else "SMTP", listen)

    async def stop(self, drain_seconds: float = 20.0) -> None:
        """Refuse new mail (421), let messages in DATA finish committing, close."""
        for door in self.doors:
            door.accepting = False
        for server in self.servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + drain_seconds
        while any(d.in_flight for d in self.doors) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
