"""How many messages the SMTP and LMTP doors take in an hour: per envelope
sender, and per client address.

Each message taken becomes an event on an order and a mail to the owner, so
one sender or one client, however busy or hostile, gets a bounded share. Over
a limit, MAIL FROM is answered "450 4.7.1 … try again later": a mail server
keeps the message queued and retries, as it does with Postfix's
smtpd_client_message_rate_limit, so nothing is lost; a person's mail client
shows the reason. The window slides over the last hour.

Not counted: the null sender (bounces of our own mail are bounded by what we
send) and the owner's addresses by sender; clients in
`connection_limit_exempt` (Postfix in front) by client, as for the
connection limits. The counts live in the daemon's memory: a restart starts
them afresh, and several daemons count each on their own.
"""
from __future__ import annotations

import time
from collections import deque

from daemon.intake.connections import ExemptNetworks

WINDOW_SECONDS = 3600.0
MAX_TRACKED = 100_000     # senders and clients remembered at once: memory stays bounded


class MessageRates:
    """Messages taken within the last hour, by sender and by client."""

    def __init__(self, per_sender: int, per_client: int, exempt: ExemptNetworks, owners: tuple[str, ...], *,
                 clock=time.monotonic):
        self.per_sender, self.per_client = per_sender, per_client
        self.exempt, self.clock = exempt, clock
        self.owners = frozenset(owner.lower() for owner in owners)
        self._taken: dict[str, deque[float]] = {}

    def refusal(self, sender: str, client: str) -> str | None:
        """The 450 reply if a message from `sender` by `client` would be one too many, else None."""
        now = self.clock()
        for key, limit, who in self._keys(sender, client):
            if self._count(key, now) >= limit:
                return f"450 4.7.1 Too many messages from {who} this hour, try again later"
        return None

    def taken(self, sender: str, client: str) -> None:
        """A message from `sender` by `client` was committed."""
        now = self.clock()
        if len(self._taken) >= MAX_TRACKED:
            self._forget_expired(now)
        for key, limit, _who in self._keys(sender, client):
            times = self._taken.setdefault(key, deque(maxlen=limit))   # only the newest `limit` matter
            times.append(now)

    def _keys(self, sender: str, client: str):
        sender = (sender or "").lower()
        if sender and sender != "<>" and sender not in self.owners:
            yield f"sender {sender}", self.per_sender, sender
        if client and not self.exempt.contains(client):
            yield f"client {client}", self.per_client, client

    def _count(self, key: str, now: float) -> int:
        times = self._taken.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if not times:
            del self._taken[key]
            return 0
        return len(times)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, times in self._taken.items() if times[-1] <= now - WINDOW_SECONDS]:
            del self._taken[key]
        if len(self._taken) >= MAX_TRACKED:     # a flood of distinct senders: start afresh rather than grow
            self._taken.clear()
