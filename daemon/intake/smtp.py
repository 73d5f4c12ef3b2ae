"""SMTP and LMTP doors (aiosmtpd) on the daemon's own event loop.

The server owns the protocol; `Door` implements only the hooks: RCPT checks
the recipient (refused while the sender is connected: no backscatter), DATA
commits the raw bytes through the spool and answers 250 only after that.
LMTP answers once per recipient, as Postfix's lmtp transport expects.
"""
from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import time
from dataclasses import replace
from io import BytesIO

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from daemon.mail.addresses import Recipient, check_recipient
from daemon.config import Settings
from daemon.errors import AutoSubmittedCommand, MailRefused, ShuttingDown, StoreUnavailable, TooLarge, smtp_reply
from daemon.mail.parsing import parse_mail
from daemon.intake.connections import ConnectionLimits, ExemptNetworks, Gate
from daemon.intake.rates import MessageRates
from daemon.intake.spool import ANSWER_WITHIN_SECONDS
from daemon.store.models import utcnow
from daemon.store.database import DATABASE_ERRORS, first_line

log = logging.getLogger("ordermail.smtp")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# "<local@domain>" with spaces or tabs around; what follows is checked too
_PLAIN_PATH = re.compile(rf"[ \t]*<(?P<address>{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>[ \t]*")
MAX_RECIPIENTS = 100
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
SHARE_STOP_SECONDS = 5.0     # the last exchange of the message counts, on stop


class Door:
    """aiosmtpd handler shared by the SMTP and LMTP listeners."""

    def __init__(self, settings: Settings, spool, rates: MessageRates, *, lmtp: bool):
        self.settings = settings
        self.spool = spool
        self.lmtp = lmtp
        self.accepting = True
        self.in_flight = 0
        self.recipients = RecipientCache(settings)
        inbound = settings.inbound
        self.limits = ConnectionLimits(inbound.max_connections, inbound.max_connections_per_client,
                                       inbound.connection_limit_exempt)
        self.rates = rates

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        refusal = self.rates.refusal(address, _client(session))
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self.accepting:
            return ShuttingDown.smtp
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        try:
            recipient = await self.recipients.check(address)
        except MailRefused as exc:
            return smtp_reply(exc)
        except DATABASE_ERRORS as exc:        # the store's trouble, not the address's: one line
            log.warning("recipient check for %s: the store failed: %s", address, first_line(exc))
            return smtp_reply(exc)
        except Exception as exc:
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
        if status.startswith("250"):
            self.rates.taken(envelope.mail_from, _client(session))
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


def _client(session) -> str:
    """The client's IP address ("" for a Unix socket)."""
    peer = session.peer
    return peer[0] if isinstance(peer, tuple) and peer else ""


class RecipientCache:
    """Recipients found good lately, so a busy reply address costs no query per RCPT.

    A check looks the order up in the store (in a thread: the event loop never
    waits for the database). An address found good is taken again without
    asking for a minute, so for a minute it may be taken for an order that
    was deleted meanwhile — by this daemon or another one on the database.
    The worker checks every recipient again when it handles the mail, so
    that costs nothing: the mail goes to the owner as unmatched, its raw
    bytes kept. Refusals are not kept. A store that
    fails or hangs is "try again later" (451) within `answer_within`; the
    thread's connection, if the server dropped it, is replaced by the store
    at its next lookup.
    """

    def __init__(self, settings: Settings, *, seconds: float = 60.0, size: int = 10_000,
                 answer_within: float = ANSWER_WITHIN_SECONDS):
        self.settings, self.seconds, self.size = settings, seconds, size
        self.answer_within = answer_within
        self._good: dict[tuple[str, dt.date], tuple[float, Recipient]] = {}

    async def check(self, address: str) -> Recipient:
        """The recipient, or the refusal (MailRefused) it deserves."""
        today = utcnow().date()
        key = (address.lower(), today)
        kept = self._good.get(key)
        if kept is not None and kept[0] > time.monotonic():
            return kept[1]
        try:
            async with asyncio.timeout(self.answer_within):
                recipient = await asyncio.to_thread(check_recipient, address, self.settings, today)
        except TimeoutError:
            raise StoreUnavailable(f"no answer from the store within {self.answer_within:.0f} s") from None
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
    """What we change in aiosmtpd's servers: its own size refusals given the
    enhanced status code (RFC 3463), DATA read into one buffer, the
    everyday MAIL/RCPT path read without the header parser, and the
    listener told when the session ends (its connection limits).

    Lines may be as long as the whole message may be: real mail has 100 KB
    header lines and pasted quotes without line breaks, and refusing them
    loses the mail; memory stays bounded by the size limit.
    """

    def __init__(self, *args, line_length_limit: int, data_timeout: float, **kwargs):
        self.line_length_limit = line_length_limit
        self.data_timeout = data_timeout
        self.released = lambda: None      # the connection gate sets what frees this session's place
        self._phase = "command"           # what the session waits for: command, data, or our commit
        self._active_at = 0.0             # when the client last sent anything (the loop's clock)
        super().__init__(*args, **kwargs)

    def data_received(self, data: bytes) -> None:
        self._active_at = self.loop.time()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        """Idle too long: say 421 and close (aiosmtpd closes without a word).

        While a message arrives, the time counts from the last bytes that
        came, not from DATA: a 25 MB mail at 2 KB/s takes hours and is fine
        as long as it keeps coming (RFC 5321 4.5.3.2: timeouts are per block).
        A deadline is looked at when it passes rather than moved for every
        piece that arrives.
        """
        if self.transport is None:
            return
        reading = self._phase == "data"
        limit = self.data_timeout if self._phase != "command" else self._timeout_duration
        idle = self.loop.time() - self._active_at
        if reading and idle < limit:
            self._timeout_handle = self.loop.call_later(limit - idle, self._timeout_cb)
            return
        peer = self.session.peer[0] if isinstance(self.session.peer, tuple) else "a local client"
        if reading:
            log.warning("SMTP session from %s closed: no data for %d s in the middle of a message "
                        "(421 sent; the sender retries)", peer, limit)
        elif self._phase == "commit":
            log.warning("SMTP session from %s closed: the message was not stored within %d s (421 sent)",
                        peer, limit)
        else:
            log.info("SMTP session from %s closed: no command for %d s (421 sent)", peer, limit)
        self.transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
        self.transport.close()

    def connection_lost(self, error) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.released()

    def _getaddr(self, arg: str):
        """aiosmtpd's (address, rest of the line), for `<local@domain>` paths by a pattern.

        aiosmtpd runs every MAIL FROM and RCPT TO through the email header
        parser (and defines a class on each call): a third of the daemon's
        time per mail. A plain path — dot-atom local part, plain domain,
        nothing but spaces around — gives the same through a pattern; any
        other form (quotes, comments, source routes, no brackets, <>,
        non-ASCII) still goes to aiosmtpd. Where aiosmtpd's parser breaks on
        a path (IndexError on "<"), the path is malformed, and aiosmtpd answers
        that (553 5.1.3) instead of "500 Error: (IndexError) …".
        """
        plain = _PLAIN_PATH.match(arg or "")
        rest = arg[plain.end():] if plain else ""
        if plain is None or rest[:1].isspace() or rest[:1] == "(":   # other spaces, a comment
            try:
                return super()._getaddr(arg)
            except Exception:     # the client's broken path, not ours: a syntax error
                return None, None
        address = plain["address"]
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        """DATA read into one buffer.

        aiosmtpd keeps every line as an object of its own until the end and
        then joins them: four times a message's size in memory, most of it
        never given back. Here the pieces read go into one growing buffer
        that becomes the message without a copy: a 25 MB mail costs about
        1.1x its size while it arrives.
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
        self._active_at, self._phase = self.loop.time(), "data"
        self._reset_timeout(self.data_timeout)
        try:
            content = await self._read_data()
        finally:
            self._phase = "commit"
            if self.transport is not None:      # not for a session that is gone
                self._reset_timeout(self.data_timeout)
        if content is None:
            status = TooLarge.smtp
        else:
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)
        self._phase = "command"
        if self.transport is not None:
            self._reset_timeout()

    async def _read_data(self) -> bytes | None:
        """The message up to the lone dot, dots unstuffed; None when over the limit.

        Read in pieces of up to _CHUNK bytes, not line by line (one await a
        line cost a tenth of the daemon's time). The end is the first line
        "." (RFC 5321 4.1.1.4): ".\r\n" as the first line, or right after
        it, both looked at once, or else the first "\r\n.\r\n", which
        readuntil finds. The first line is waited for with the chunk limit,
        so the mail arriving meanwhile does not pause the socket (as it
        would while the limit is 0 for the look at the front). While DATA
        lasts the reader's limit is _CHUNK, not the size of a whole message:
        a readuntil that finds no end within it raises LimitOverrunError and
        says how many bytes surely hold no start of one; those are taken in
        pieces. So the reader never holds much more than two chunks (it
        pauses the socket at twice its limit), and the message is held once.
        _Message takes the dots off, across piece boundaries too.
        """
        reader = self._reader
        line_limit = reader._limit       # lines longer than this refuse the message, as always
        message = _Message(self.data_size_limit, line_limit)
        try:
            reader._limit = _CHUNK
            first = await _first_line(reader)
            if first == b".\r\n":
                return b""
            message.add(first)
            if first[-2:] in (b"", b"\r\n") and await _lone_dot_first(reader):   # the end right after it
                return message.value()
            while True:
                try:
                    piece = await reader.readuntil(_DATA_END)
                except asyncio.LimitOverrunError as no_end:
                    await _take(reader, no_end.consumed, message)
                    continue
                message.add(piece[:-3])          # its CRLF ends the last line; ".\r\n" is the end
                return message.value()
        finally:
            reader._limit = line_limit

    async def push(self, status: str):
        if status.startswith("552 Error"):
            status = TooLarge.smtp
        await super().push(status)


_DATA_END = b"\r\n.\r\n"
_CHUNK = 256 * 1024      # bytes taken from the reader at a time during DATA


async def _first_line(reader: asyncio.StreamReader) -> bytes:
    """DATA's first line up to its LF (b"" when longer than the reader's limit:
    then it stays in the reader for the pieces)."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        return b""


async def _lone_dot_first(reader: asyncio.StreamReader) -> bool:
    """Whether the line at the reader's front (at a line start) is the lone dot (then consumed).

    With the limit at 0, readuntil returns only a separator right at the
    front; anything else raises LimitOverrunError and stays in the buffer.
    """
    limit, reader._limit = reader._limit, 0
    try:
        await reader.readuntil(b".\r\n")
    except asyncio.LimitOverrunError:
        return False
    finally:
        reader._limit = limit
    return True


async def _take(reader: asyncio.StreamReader, count: int, message: _Message) -> None:
    """The next count bytes into message, no more than a chunk copied at once."""
    while count > 0:
        piece = await reader.readexactly(min(count, _CHUNK))
        message.add(piece)
        count -= len(piece)


class _Message:
    """DATA's raw bytes in, split anywhere; the message out, dots unstuffed, or None.

    A line starts after every CRLF and at the very start. One that starts
    with "." loses that dot: inside a piece, every "\r\n." becomes "\r\n";
    at a piece's start the last two raw bytes before it tell (a CRLF may be
    split between two pieces). The message is refused (None; what still
    comes is dropped) once its unstuffed size passes size_limit, or when a
    line is longer than line_limit without its CRLF: the reader's limit,
    which refused such lines when DATA was read line by line.
    """

    def __init__(self, size_limit: int | None, line_limit: int):
        self.size_limit, self.line_limit = size_limit, line_limit
        self.buffer, self.size, self.refused = BytesIO(), 0, False
        self.before = b"\r\n"     # the last two raw bytes: DATA starts a line
        self.open_line = 0        # raw bytes of the line not ended yet

    def add(self, piece: bytes) -> None:
        if self.refused or not piece:
            return
        if self._longest_line(piece) > self.line_limit:
            self.refuse()
            return
        self.size += self.buffer.write(_unstuff(piece, self.before))
        self.before = (self.before + piece[-2:])[-2:]
        if self.size_limit and self.size > self.size_limit:
            self.refuse()

    def refuse(self) -> None:
        self.refused, self.buffer = True, BytesIO()

    def value(self) -> bytes | None:
        """A BytesIO's getvalue() hands its own bytes on, shrunk to size: no copy."""
        return None if self.refused else self.buffer.getvalue()

    def _longest_line(self, piece: bytes) -> int:
        """The longest line ended in piece (without CRLF); counts the one left open."""
        longest, start = 0, 0
        if self.before[1:] == b"\r" and piece[:1] == b"\n":      # a CRLF split between pieces
            longest, start, self.open_line = self.open_line - 1, 1, 0
        first = piece.find(b"\r\n", start)
        if first == -1:
            self.open_line += len(piece) - start
            return longest
        last = piece.rfind(b"\r\n")
        longest = max(longest, self.open_line + first - start)
        if last - first - 2 > self.line_limit:             # room for a long line in between
            longest = max(longest, *map(len, piece[first + 2:last].split(b"\r\n")))
        self.open_line = len(piece) - last - 2
        return longest


def _unstuff(piece: bytes, before: bytes) -> bytes | memoryview:
    """piece without the first dot of its lines; before: the two raw bytes before it."""
    out = piece.replace(b"\r\n.", b"\r\n")
    if before == b"\r\n" and out[:1] == b".":         # piece starts a line
        return memoryview(out)[1:]
    if before[1:] == b"\r" and out[:2] == b"\n.":     # so does piece[1]
        return out[:1] + out[2:]
    return out


class SMTPDoor(_EnhancedCodes, SMTP):
    pass


class LMTPDoor(_EnhancedCodes, LMTP):
    pass


class Listeners:
    """The SMTP and LMTP servers that are configured; started and stopped together.

    `store`: where the message counts are shared with other daemons (none: kept in memory only)."""

    def __init__(self, settings: Settings, spool, store=None):
        self.settings = settings
        self.spool = spool
        self.store = store
        self.doors: list[Door] = []
        self.servers: list[asyncio.AbstractServer] = []
        inbound = settings.inbound
        self.rates = MessageRates(inbound.messages_per_sender_per_hour, inbound.messages_per_client_per_hour,
                                  ExemptNetworks(inbound.connection_limit_exempt),
                                  settings.owner.addresses)     # one count for both doors
        self._sharing: asyncio.Task | None = None

    async def start(self) -> None:
        inbound = self.settings.inbound
        for listen, lmtp in ((inbound.smtp_listen, False), (inbound.lmtp_listen, True)):
            if listen:
                await self._start_one(listen, lmtp)
        if self.doors and self.store is not None:
            self._sharing = asyncio.create_task(self.rates.keep_shared(self.store), name="share-rates")

    async def _start_one(self, listen: str, lmtp: bool) -> None:
        host, _, port = listen.rpartition(":")
        door = Door(self.settings, self.spool, self.rates, lmtp=lmtp)
        protocol = LMTPDoor if lmtp else SMTPDoor
        loop = asyncio.get_running_loop()

        inbound = self.settings.inbound

        def session():
            # The banner names the host and ordermail, not the library and its version.
            return protocol(door, hostname=self.settings.shop.domain, loop=loop,
                            ident="LMTP ordermail" if lmtp else "ESMTP ordermail",
                            data_size_limit=inbound.max_message_bytes,
                            line_length_limit=inbound.max_message_bytes + 2,
                            enable_SMTPUTF8=True, timeout=inbound.command_timeout_seconds,
                            data_timeout=inbound.data_timeout_seconds)

        def factory():
            return Gate(door.limits, session, self.settings.shop.domain)

        server = await loop.create_server(factory, host.strip("[]"), int(port))
        self.doors.append(door)
        self.servers.append(server)
        log.info("%s listening on %s", "LMTP" if lmtp else "SMTP", listen)

    async def stop(self, drain_seconds: float = 20.0) -> None:
        """Refuse new mail (421), let messages in DATA finish committing, close."""
        for door in self.doors:
            door.accepting = False
            door.limits.refusals.flush()
        for server in self.servers:
            server.close()
        deadline = asyncio.get_running_loop().time() + drain_seconds
        while any(d.in_flight for d in self.doors) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._sharing is not None:       # the last counts go to the other daemons (and the next start)
            self._sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.rates.share(self.store), SHARE_STOP_SECONDS)
