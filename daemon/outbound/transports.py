"""How a mail leaves: written into a maildir, or sent over up to `smtp_connections`
reused SMTP connections; each attempt comes back as a `Result`.

Split from daemon/outbound/outbox.py, which claims the rows, hands them to a
transport and marks what became of them.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from daemon.config import Settings
from daemon.outbound import notify

log = logging.getLogger("ordermail.outbox")
SMTP_TIMEOUT = 30.0
IDLE_CONNECTION_SECONDS = 50.0    # reuse a connection idle for less (servers drop them at ~60–300 s)


@dataclass(frozen=True)
class Result:
    """What became of one mail: sent, or why not and whether that is final."""
    row_id: int
    ok: bool
    permanent: bool = False
    error: str = ""


class MaildirTransport:
    """Standard maildir delivery: write into tmp/, fsync, move into new/, fsync new/.

    A mail's file name comes from its Message-ID, so after a crash between
    delivery and marking the second attempt finds the file still in new/ (or
    in cur/, read, with no other flags than S) and does not write it twice.
    """

    def __init__(self, path: str):
        self.root = Path(path)
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")

    async def deliver(self, items) -> list[Result]:
        results = [self._write(row_id, mail) for row_id, mail in items]
        if any(r.ok for r in results):
            _fsync_dir(self.root / "new")
        return results

    def _write(self, row_id: int, mail: notify.OutgoingMail) -> Result:
        name = f"{hashlib.sha256(mail.message_id.encode()).hexdigest()[:24]}.ordermail.{self._host}"
        try:
            for sub in ("tmp", "new", "cur"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if self._delivered(name):
                return Result(row_id, True)
            tmp = self.root / "tmp" / name
            with open(tmp, "wb") as out:
                out.write(self._envelope_headers(mail) + mail.raw.replace(b"\r\n", b"\n"))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.root / "new" / name)
            return Result(row_id, True)
        except OSError as exc:
            return Result(row_id, False, False, f"maildir {self.root}: {exc.strerror or exc}")

    def _delivered(self, name: str) -> bool:
        return any(path.exists() for path in (self.root / "new" / name, self.root / "cur" / f"{name}:2,",
                                              self.root / "cur" / f"{name}:2,S"))

    @staticmethod
    def _envelope_headers(mail: notify.OutgoingMail) -> bytes:
        """What a delivering MTA adds: the envelope, readable by whoever looks into the maildir."""
        return f"Return-Path: <{mail.envelope_from}>\nDelivered-To: {mail.recipient}\n".encode("ascii")

    async def close(self) -> None:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SmtpTransport:
    """Up to `smtp_connections` aiosmtplib connections, each reused while it lives."""

    def __init__(self, settings: Settings, batch_seconds: float):
        self.settings = settings
        self.batch_seconds = batch_seconds     # a batch ends before its claim's lease runs out
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []

    async def deliver(self, items) -> list[Result]:
        if not items:
            return []
        queue, results = deque(items), []
        state = {"down": None}
        workers = min(self.settings.outbound.smtp_connections, len(items))
        budget = self.batch_seconds
        try:
            await asyncio.wait_for(asyncio.gather(*(self._worker(queue, results, state)
                                                    for _ in range(workers))), budget)
        except asyncio.TimeoutError:
            log.warning("outbox: a batch took longer than %.0f s; the rest is retried", budget)
        return results

    async def _worker(self, queue: deque, results: list, state: dict) -> None:
        conn = None
        try:
            while queue:
                row_id, mail = queue.popleft()
                if state["down"]:
                    results.append(Result(row_id, False, False, state["down"]))
                    continue
                conn, result = await self._send(conn, row_id, mail, state)
                results.append(result)
        except asyncio.CancelledError:
            if conn is not None:
                conn.close()     # cut off mid-conversation: never reuse it
            raise
        if conn is not None and conn.is_connected:
            self._idle.append((conn, time.monotonic()))

    async def _send(self, conn, row_id: int, mail, state: dict):
        """Send one mail; a reused connection that turns out dead is replaced once."""
        for fresh in (False, True):
            if conn is None or fresh:
                try:
                    conn = await self._connect(reuse=not fresh)
                except Exception as exc:
                    state["down"] = f"cannot reach {self._where()}: {_describe(exc)}"
                    return None, Result(row_id, False, False, state["down"])
            try:
                await conn.sendmail(mail.envelope_from, [mail.recipient], mail.raw,
                                    mail_options=_options(conn, mail.raw), timeout=SMTP_TIMEOUT)
                return conn, Result(row_id, True)
            except aiosmtplib.SMTPServerDisconnected as exc:
                conn = None
                if fresh:
                    return None, Result(row_id, False, False, _describe(exc))
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused, ValueError) as exc:
                return (conn if conn.is_connected else None), _classify(row_id, exc)   # the server answered
            except Exception as exc:
                conn.close()     # a timeout or a broken stream: the conversation's state is unknown
                return None, _classify(row_id, exc)
        raise AssertionError("unreachable")

    async def _connect(self, reuse: bool) -> aiosmtplib.SMTP:
        while reuse and self._idle:
            conn, since = self._idle.pop()
            if conn.is_connected and time.monotonic() - since < IDLE_CONNECTION_SECONDS:
                return conn
            await _quit(conn)
        out = self.settings.outbound
        conn = aiosmtplib.SMTP(
            hostname=out.smtp_host, port=out.smtp_port, use_tls=out.smtp_tls == "tls",
            start_tls=out.smtp_tls == "starttls", timeout=SMTP_TIMEOUT,
            username=out.smtp_user or None, password=out.smtp_password if out.smtp_user else None,
            cert_bundle=out.smtp_ca_file or None, local_hostname=self.settings.shop.domain)
        await conn.connect()
        return conn

    def _where(self) -> str:
        return f"{self.settings.outbound.smtp_host}:{self.settings.outbound.smtp_port}"

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await _quit(conn)


def _options(conn: aiosmtplib.SMTP, raw: bytes) -> list[str]:
    return ["BODY=8BITMIME"] if not raw.isascii() and conn.supports_extension("8bitmime") else []


async def _quit(conn: aiosmtplib.SMTP) -> None:
    try:
        if conn.is_connected:
            await conn.quit(timeout=5)
    except Exception:
        conn.close()


def _classify(row_id: int, exc: Exception) -> Result:
    """5xx to our mail is final; everything else (4xx, auth, TLS, network) is retried."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        exc = exc.recipients[0]
    if isinstance(exc, ValueError):
        return Result(row_id, False, True, f"address refused before sending: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException) and not isinstance(
            exc, (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPConnectError, aiosmtplib.SMTPHeloError)):
        return Result(row_id, False, 500 <= exc.code < 600, f"{exc.code} {exc.message}".strip())
    return Result(row_id, False, False, _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return f"{exc.code} {exc.message}".strip()
    return f"{type(exc).__name__}: {exc}".strip()
