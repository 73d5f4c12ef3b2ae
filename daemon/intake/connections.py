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
        self._refused, self._logged_at = 0, 0.0

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
        # One log line a minute at most: a flood of connections must not flood the log too.
        self._refused += 1
        if time.monotonic() - self._logged_at >= REFUSALS_LOGGED_EVERY_SECONDS:
            log.warning("connection from %s refused: %s (%d refused since the last such line)",
                        client or "an unknown client", reason.lower(), self._refused)
            self._refused, self._logged_at = 0, time.monotonic()
        return reason


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
