"""How many SMTP/LMTP sessions a listener holds: in all, and per client address.

Each session may hold a message of up to `max_message_bytes` in memory
while it arrives, so the number of sessions bounds the daemon's memory;
one client, however busy or hostile, gets a share of them. A connection
over a limit is answered "421 4.7.0 … try again later" at once and closed,
before any session starts: a mail server retries it later, as it would
with Postfix's own connection limits. Clients in the exempt networks
(loopback by default: Postfix in front, the pipe's and the tests' own
clients) count towards the total only, as in Postfix's
smtpd_client_event_limit_exceptions.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import Counter

log = logging.getLogger("ordermail.smtp")
REFUSALS_LOGGED_EVERY_SECONDS = 60


class ConnectionLimits:
    """The open sessions of one listener, counted; `admit` says whether one more may start."""

    def __init__(self, total: int, per_client: int, exempt: tuple[str, ...]):
        self.total, self.per_client = total, per_client
        self.exempt = ExemptNetworks(exempt)
        self.open = 0
        self.by_client: Counter[str] = Counter()
        self.refusals = RefusalLog()

    def admit(self, client: str) -> str | None:
        """Count a new session from `client` (an IP address), or say why not."""
        if self.open >= self.total:
            return self._refuse(client, "Too many connections")
        limited = not self.exempt.contains(client)
        if limited and self.by_client[client] >= self.per_client:
            return self._refuse(client, f"Too many connections from {client}")
        self.open += 1
        if limited:
            self.by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        """A session admitted for `client` ended."""
        self.open -= 1
        if client in self.by_client:
            self.by_client[client] -= 1
            if not self.by_client[client]:
                del self.by_client[client]

    def _refuse(self, client: str, reason: str) -> str:
        self.refusals.count(client, reason)
        return reason


class RefusalLog:
    """Refused connections, logged without flooding the log.

    The first refusal after a quiet spell is logged at once; those that
    follow within `window` seconds are summed up in one line when it ends
    (or when the listener stops), so a burst of 103 says 103, not 1.
    """
    MAX_REASONS = 100       # distinct reasons kept per window: a flood from many clients stays bounded

    def __init__(self, window: float = REFUSALS_LOGGED_EVERY_SECONDS, clock=time.monotonic):
        self.window, self.clock = window, clock
        self.pending: Counter[str] = Counter()
        self.others = 0           # refusals whose reason did not fit into `pending`
        self._window_ends: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    def count(self, client: str, reason: str) -> None:
        now = self.clock()
        if self._window_ends is not None and now >= self._window_ends:
            self.flush()
        if self._window_ends is None:
            log.warning("connection from %s refused: %s (more within %d s are summed up in one line)",
                        client or "an unknown client", reason.lower(), self.window)
            self._window_ends = now + self.window
            self._flush_later()
        elif len(self.pending) < self.MAX_REASONS or reason.lower() in self.pending:
            self.pending[reason.lower()] += 1
        else:
            self.others += 1

    def flush(self) -> None:
        """Log what was refused since the window's first line, and close the window
        (the next refusal is logged at once and opens another)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        total = sum(self.pending.values()) + self.others
        if total:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in self.pending.most_common(5))
            rest = total - sum(count for _, count in self.pending.most_common(5))
            log.warning("%d more connection(s) refused within %d s (%s%s)", total, self.window, reasons,
                        f", other reasons: {rest}" if rest else "")
        self.pending.clear()
        self.others = 0
        self._window_ends = None

    def _flush_later(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:       # no event loop (a test's direct call): the next refusal or flush() logs
            return
        self._timer = loop.call_later(self.window, self.flush)


class ExemptNetworks:
    """The networks whose clients no per-client limit applies to."""

    def __init__(self, networks: tuple[str, ...]):
        self.networks = tuple(ipaddress.ip_network(network, strict=False) for network in networks)
        # Asked for every connection and message: parsing an address costs µs.
        self.contains = functools.lru_cache(maxsize=4096)(self._look_up)

    def _look_up(self, client: str) -> bool:
        try:
            address = ipaddress.ip_address(client.partition("%")[0])   # an IPv6 zone is not part of it
        except ValueError:       # no address (a Unix socket): nobody to tell apart
            return True
        return any(address in network for network in self.networks)


class Gate(asyncio.Protocol):
    """The first protocol of every connection: it admits the session or refuses with 421.

    An admitted connection is handed to the session protocol (`make_session()`)
    at once; the session calls `released` when it ends. A refused one gets
    its 421 line before any greeting, and is closed.
    """

    def __init__(self, limits: ConnectionLimits, make_session, hostname: str):
        self.limits, self.make_session, self.hostname = limits, make_session, hostname

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) and peer else ""
        refusal = self.limits.admit(client)
        if refusal is not None:
            transport.write(f"421 4.7.0 {self.hostname} {refusal}, try again later\r\n".encode())
            transport.close()
            return
        try:
            session = self.make_session()
        except Exception:
            self.limits.release(client)       # its place is free again
            transport.abort()
            raise
        session.released = lambda: self.limits.release(client)
        transport.set_protocol(session)
        session.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        """A refused client's words go unread."""
