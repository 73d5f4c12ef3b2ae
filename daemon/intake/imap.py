"""The IMAP door: take mail from a hosted mailbox (aioimaplib), store first, then mark.

A session connects (implicit TLS per `[inbound.imap] tls`, certificate and
host name verified against `ca_file` or else the system's CA store), logs
in, selects the folder, takes every message not yet taken, then waits in
IDLE — or, where the server has no IDLE, sleeps `poll_seconds` — and takes
again. IDLE is
renewed every `poll_seconds` (and always before the servers' 30 minutes), so
a notification lost in a race costs at most that long.

Taking one message, by UID: its size first; one over `[inbound]
max_message_bytes` is never downloaded — a small stand-in with its addressing
headers and a note takes its place, so the owner learns of it and it is not
fetched again. Otherwise the raw bytes (a partial fetch capped at the limit,
whatever the size said), the recipients from its headers, `Spool.put` — and
only after the commit the mark: MOVE to `done_folder`, else the keyword
$OrdermailTaken (not \\Seen, which people change). A crash between commit and
mark takes the message again; the worker finds the same bytes and marks the
second copy `duplicate`.

Any failure (connection, server, store) ends the session with one log line;
the next starts after a back-off of 1 s doubling to 5 min, reset once a
session got through a whole round.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl

import aioimaplib

from daemon.mail.addresses import check_recipient
from daemon.config import Settings
from daemon.errors import MailRefused, OrdermailError, ShuttingDown, StoreUnavailable
from daemon.intake.envelope import envelope_sender, header_recipients
from daemon.store.models import utcnow
from daemon.store.database import first_line

log = logging.getLogger("ordermail.imap")

TAKEN = "$OrdermailTaken"
IDLE_RENEW_SECONDS = 28 * 60          # RFC 2177: a server may end an IDLE after 30 minutes
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0
COMMAND_TIMEOUT = 60.0
STAND_IN_HEADER_BYTES = 65536
KEPT_HEADERS = frozenset({
    "return-path", "delivered-to", "x-original-to", "from", "sender", "reply-to", "to", "cc",
    "date", "subject", "message-id", "in-reply-to", "references",
    "auto-submitted", "precedence", "x-autoreply", "x-auto-response-suppress", "list-id"})
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_LITERAL = re.compile(rb"BODY\[[^\]]*\](?:<\d+>)? \{(\d+)\}$")
_EXISTS = re.compile(rb"^\d+ EXISTS")
_SEARCH = re.compile(rb"(?:SEARCH)?[\d ]*")


class ImapTrouble(Exception):
    """The server said NO or BAD, went silent or went away: this session ends."""


class _Vanished(Exception):
    """The message was expunged by someone else between SEARCH and FETCH."""


class ImapDoor:
    """Takes mail from one IMAP folder until `stop` is set; reconnects on failure."""

    def __init__(self, settings: Settings, spool, *, timeout: float = COMMAND_TIMEOUT):
        self.settings = settings
        self.spool = spool
        self.timeout = timeout
        self.state = "stopped"      # connecting, taking, idle, polling, backoff, stopped

    async def run(self, stop: asyncio.Event) -> None:
        delay = BACKOFF_FIRST
        try:
            while not stop.is_set():
                session = _Session(self, stop)
                try:
                    await session.run()
                except ShuttingDown:
                    log.info("IMAP: the spool is closing; no more mail taken")
                    return
                except Exception as exc:
                    delay = BACKOFF_FIRST if session.good else delay
                    self._report(exc, delay)
                if stop.is_set():
                    return
                self.state = "backoff"
                await _wait(stop, delay)
                delay = min(delay * 2, BACKOFF_MAX)
        finally:
            self.state = "stopped"

    def _report(self, exc: Exception, delay: float) -> None:
        """One line for the expected troubles; a traceback for a bug."""
        imap = self.settings.inbound.imap
        where = f"IMAP {imap.user}@{imap.host}:{imap.port}"
        if isinstance(exc, (ImapTrouble, aioimaplib.AioImapException, OSError, OrdermailError)):
            log.warning("%s: %s; again in %.0f s", where, first_line(exc) or type(exc).__name__, delay)
        else:
            log.exception("%s failed; again in %.0f s", where, delay)


class _Session:
    """One connection: open, rounds of take-then-wait, LOGOUT."""

    def __init__(self, door: ImapDoor, stop: asyncio.Event):
        self.door = door
        self.settings = door.settings
        self.imap = door.settings.inbound.imap
        self.stop = stop
        self.good = False
        self.seen: set[int] = set()
        self.lost = asyncio.get_running_loop().create_future()
        self.client: aioimaplib.IMAP4 | None = None

    async def run(self) -> None:
        try:
            await self._open()
            while not self.stop.is_set():
                await self._sweep()
                self.good = True
                if not self.stop.is_set():
                    await self._wait_for_news()
            await self._logout()
        finally:
            self._close()

    # ---- connection ---------------------------------------------------------

    async def _open(self) -> None:
        self.door.state = "connecting"
        context = tls_context(self.imap.ca_file) if self.imap.tls else None
        self.client = aioimaplib.IMAP4(host=self.imap.host, port=self.imap.port, timeout=self.door.timeout,
                                       conn_lost_cb=self._on_lost, ssl_context=context)
        try:
            await self._call(self.client.wait_hello_from_server(), "greeting")
        except ssl.SSLCertVerificationError as exc:
            raise ImapTrouble(f"TLS: the server's certificate is not trusted ({exc.verify_message}); " + (
                f"it must be issued by the CA in [inbound.imap] ca_file {self.imap.ca_file}" if self.imap.ca_file
                else "for a server with its own CA or a self-signed certificate set [inbound.imap] ca_file")
            ) from None
        await self._command(self.client.login(aioimaplib.quoted(self.imap.user), self.imap.password), "LOGIN")
        await self._call(self.client.protocol.capability(), "CAPABILITY")  # the list after login
        if self.imap.done_folder:
            await self._call(self.client.create(mailbox(self.imap.done_folder)), "CREATE")  # NO: exists
        selected = await self._command(self.client.select(mailbox(self.imap.folder)), "SELECT")
        if not self.imap.done_folder and not _keywords_allowed(selected.lines):
            raise ImapTrouble(f"folder {self.imap.folder} keeps no keywords such as {TAKEN}; "
                              "set [inbound.imap] done_folder")
        log.info("IMAP %s@%s: folder %s selected (%s)", self.imap.user, self.imap.host, self.imap.folder,
                 "IDLE" if self.client.has_capability("IDLE") else f"polling every {self.imap.poll_seconds} s")

    def _on_lost(self, exc) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    async def _logout(self) -> None:
        try:
            await asyncio.wait_for(self.client.logout(), 5)
        except Exception as exc:   # leaving anyway
            log.debug("IMAP LOGOUT: %s", exc)

    def _close(self) -> None:
        if self.client is None:
            return
        transport = self.client.protocol.transport
        if transport is not None:
            transport.close()
        for task in [self.client._client_task, *self.client.tasks]:   # connect, IDLE, timers
            task.cancel()

    async def _call(self, awaitable, what: str, *, bounded: bool = True):
        """Await one command, but no longer than the timeout nor past a lost connection."""
        task = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait({task, self.lost}, timeout=self.door.timeout if bounded else None,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise ImapTrouble(f"{what}: connection lost" if self.lost.done()
                          else f"{what}: no answer within {self.door.timeout:.0f} s")

    async def _command(self, awaitable, what: str, *, bounded: bool = True):
        response = await self._call(awaitable, what, bounded=bounded)
        if response.result != "OK":
            said = next((bytes(line) for line in reversed(response.lines) if line), b"")
            raise ImapTrouble(f"{what} refused: {response.result} {said[:200].decode(errors='replace')}")
        return response

    # ---- a round: take what is there ------------------------------------------

    async def _sweep(self) -> None:
        self.door.state = "taking"
        _drain(self.client.protocol.idle_queue)   # old news: the search below sees everything
        while not self.stop.is_set():
            fresh = [uid for uid in await self._untaken() if uid not in self.seen]
            if not fresh:
                return
            for uid in fresh:
                if self.stop.is_set():
                    return
                self.seen.add(uid)
                await self._take(uid)

    async def _untaken(self) -> list[int]:
        response = await self._command(self.client.uid_search("UNKEYWORD", TAKEN, charset=None), "SEARCH")
        uids = set()
        for line in response.lines[:-1]:   # aioimaplib strips "* SEARCH"; the last is the tagged text
            if isinstance(line, bytes) and _SEARCH.fullmatch(line):
                uids.update(int(word) for word in line.split() if word.isdigit())
        return sorted(uids)

    async def _take(self, uid: int) -> None:
        limit = self.settings.inbound.max_message_bytes
        try:
            size = await self._size(uid)
            raw = await self._literal(uid, f"BODY.PEEK[]<0.{limit + 1}>") if size <= limit else b""
            if size > limit or len(raw) > limit:
                header = await self._literal(uid, f"BODY.PEEK[HEADER]<0.{STAND_IN_HEADER_BYTES}>")
                raw = stand_in(header, max(size, len(raw)), limit, self._where(uid))
                log.warning("IMAP UID %d: %d bytes, over max_message_bytes; storing a stand-in", uid, size)
        except _Vanished:
            log.info("IMAP UID %d vanished before it was taken", uid)
            return
        recipients = await asyncio.to_thread(recipients_of, raw, self.settings)
        try:
            stored = await self.door.spool.put(raw, channel="imap", envelope_from=envelope_sender(raw),
                                               recipients=recipients)
        except StoreUnavailable as exc:
            raise ImapTrouble(f"UID {uid} left untaken, the store refused it: {exc}") from None
        await self._mark(uid)
        log.info("IMAP UID %d taken as message %d", uid, stored)

    async def _size(self, uid: int) -> int:
        response = await self._command(self.client.uid("fetch", str(uid), "(RFC822.SIZE)"), "FETCH")
        for line in response.lines:
            match = isinstance(line, bytes) and _SIZE.search(line)
            if match:
                return int(match.group(1))
        raise _Vanished()

    async def _literal(self, uid: int, item: str) -> bytes:
        # unbounded: aioimaplib's own timeout restarts with every chunk of a large body
        response = await self._command(self.client.uid("fetch", str(uid), f"({item})"), "FETCH", bounded=False)
        lines = response.lines
        for line, following in zip(lines, lines[1:]):
            match = isinstance(line, bytes) and _LITERAL.search(line)
            if match and isinstance(following, bytearray) and len(following) == int(match.group(1)):
                return bytes(following)
        raise _Vanished()

    def _where(self, uid: int) -> str:
        folder = self.imap.done_folder or self.imap.folder
        return f"the mailbox {self.imap.user} on {self.imap.host}, folder {folder}" + (
            "" if self.imap.done_folder else f" (UID {uid})")

    async def _mark(self, uid: int) -> None:
        """Taken: MOVE to done_folder, or COPY + \\Deleted + EXPUNGE, or the keyword."""
        if not self.imap.done_folder:
            await self._command(self.client.uid("store", str(uid), "+FLAGS.SILENT", f"({TAKEN})"), "STORE")
            return
        target = mailbox(self.imap.done_folder)
        if self.client.has_capability("MOVE"):
            await self._command(self.client.uid("move", str(uid), target), "MOVE")
            return
        await self._command(self.client.uid("copy", str(uid), target), "COPY")
        # the keyword too: should EXPUNGE fail, the copy left behind is not taken again
        await self._command(self.client.uid("store", str(uid), "+FLAGS.SILENT", f"({TAKEN} \\Deleted)"), "STORE")
        if self.client.has_capability("UIDPLUS"):
            await self._command(self.client.uid("expunge", str(uid)), "EXPUNGE")
        else:  # plain EXPUNGE also removes what others marked \Deleted, as any client's would
            await self._command(self.client.expunge(), "EXPUNGE")

    # ---- between rounds: wait for news -----------------------------------------

    async def _wait_for_news(self) -> None:
        renew = min(self.imap.poll_seconds, IDLE_RENEW_SECONDS)
        if not self.client.has_capability("IDLE"):
            self.door.state = "polling"
            await self._idle_until(renew)
            return
        idle = await self._call(self.client.idle_start(timeout=renew + 60), "IDLE")
        self.door.state = "idle"
        try:
            await self._idle_until(renew, idle)
        finally:
            if not self.lost.done() and self.client.has_pending_idle():
                self.client.idle_done()
        await self._command(idle, "IDLE")

    async def _idle_until(self, seconds: float, idle: asyncio.Future | None = None) -> None:
        """Until new mail is announced, stop, `seconds` pass or IDLE ends; raise if the line died."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            while True:
                push = asyncio.ensure_future(self.client.protocol.idle_queue.get())
                ends = {stopping, self.lost, push} | ({idle} if idle is not None else set())
                done, _ = await asyncio.wait(ends, timeout=max(0.0, deadline - loop.time()),
                                             return_when=asyncio.FIRST_COMPLETED)
                if push not in done:
                    push.cancel()
                if self.lost.done():
                    raise ImapTrouble("connection lost while waiting for mail")
                if done != {push} or _news(push.result()):
                    return
        finally:
            stopping.cancel()


# ---- the message: recipients, sender, stand-in --------------------------------------

def recipients_of(raw: bytes, settings: Settings) -> list[str]:
    """Ours among Delivered-To, X-Original-To, To and Cc, in that order; else the shop address."""
    today = utcnow().date()
    ours, seen = [], set()
    for address in header_recipients(raw):
        if address.lower() in seen:
            continue
        seen.add(address.lower())
        try:
            check_recipient(address, settings, today)
        except MailRefused:
            continue
        ours.append(address)
    return ours or [settings.shop.address]


def stand_in(header: bytes, size: int, limit: int, where: str) -> bytes:
    """A small message in place of one too large to take: its addressing headers and a note."""
    kept = [f for f in _header_fields(header) if f.split(b":", 1)[0].strip().lower().decode(errors="replace")
            in KEPT_HEADERS]
    note = (f"This message came in by IMAP but was too large to take: {size} bytes, more than\n"
            f"[inbound] max_message_bytes ({limit}). Its content was not read. The original\n"
            f"stays in {where}.\n")
    head = (f"X-Ordermail-Too-Large: {size} bytes, limit {limit}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
    return b"".join(kept) + head.encode() + note.replace("\n", "\r\n").encode()


def _header_fields(header: bytes) -> list[bytes]:
    """Header fields with their continuation lines; a field cut off at the end is dropped."""
    fields: list[bytes] = []
    complete = False
    for line in header.splitlines(keepends=True):
        if line.strip() == b"":
            complete = True
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    if not complete and fields:
        fields.pop()
    return [f if f.endswith(b"\n") else f + b"\r\n" for f in fields]


# ---- IMAP details ------------------------------------------------------------------

def tls_context(ca_file: str) -> ssl.SSLContext:
    """Certificate and host name verified: against `ca_file` (PEM) if set, else the system's CA store."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise ImapTrouble(f"[inbound.imap] ca_file {ca_file}: no CA certificate could be read from it "
                          f"({first_line(exc) or type(exc).__name__})") from None


def mailbox(name: str) -> str:
    """A mailbox name as a quoted IMAP string, in modified UTF-7 (RFC 3501, 5.1.3)."""
    out, run = [], []

    def flush():
        if run:
            encoded = base64.b64encode("".join(run).encode("utf-16-be")).rstrip(b"=").replace(b"/", b",")
            out.append("&" + encoded.decode() + "-")
            run.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return aioimaplib.quoted("".join(out))


def _keywords_allowed(select_lines) -> bool:
    """Whether PERMANENTFLAGS lets us keep our keyword (no PERMANENTFLAGS: all are kept)."""
    for line in select_lines:
        match = isinstance(line, bytes) and re.search(rb"\[PERMANENTFLAGS \(([^)]*)\)", line)
        if match:
            flags = match.group(1).split()
            return b"\\*" in flags or TAKEN.encode() in flags
    return True


def _news(lines) -> bool:
    return lines is aioimaplib.STOP_WAIT_SERVER_PUSH or any(
        isinstance(line, (bytes, bytearray)) and _EXISTS.match(line) for line in lines)


def _drain(queue: asyncio.Queue) -> None:
    while not queue.empty():
        queue.get_nowait()


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
