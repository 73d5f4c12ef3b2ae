"""How many messages the SMTP and LMTP doors take in an hour: per envelope
sender, and per client address.

Each message taken becomes an event on an order and a mail to the owner, so
one sender or one client, however busy or hostile, gets a bounded share. Over
a limit, MAIL FROM is answered "450 4.7.1 … try again later": a mail server
keeps the message queued and retries, as it does with Postfix's
smtpd_client_message_rate_limit, so nothing is lost; a person's mail client
shows the reason. The window slides over the last hour in 5-minute steps.
Sessions checked at once are counted as their messages are taken, so a
client with several connections may go past a limit by their number.

The null sender and the owner's addresses are counted too, each on its own,
with ten times the limit: an envelope sender is whatever the client writes,
so exempting them let anyone past the limit by writing `MAIL FROM:<>` or the
owner's address; the real ones (bounces of our own mail, the owner's
commands and answers) are few, and one that hears 450 is retried. Not
counted by client: clients in `connection_limit_exempt` (Postfix in front),
as for the connection limits.

The counts are decided on in memory (no query per MAIL FROM) and shared
through the database every SHARE_SECONDS (daemon/intake/shared_rates.py):
a daemon adds what it took, and takes the counts of every key that came
near a limit (half of it) on any daemon. So N daemons on one database hold
a sender or client to one limit together, and a restarted daemon goes on
with the hour's counts. Between two exchanges each daemon knows only its
own messages: a key may go past its limit by what the other daemons took
from it in the last SHARE_SECONDS. A store that fails keeps the counts in
memory until it is back; they are added then.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections import deque

from daemon.intake import shared_rates
from daemon.intake.connections import ExemptNetworks
from daemon.store.database import DATABASE_ERRORS, Store, first_line

log = logging.getLogger("ordermail.smtp")
WINDOW_SECONDS = 3600.0
BUCKET_SECONDS = 300.0    # counted in 5-minute buckets: at most 12 numbers per sender or client
MAX_TRACKED = 50_000      # senders and clients remembered at once: memory stays bounded (a few MB)
OWNER_OR_NULL_FACTOR = 10   # the null sender's and each owner address's limit, in per-sender limits
SHARE_SECONDS = 5.0       # how often the counts are exchanged with the other daemons


class MessageRates:
    """Messages taken within the last hour, by sender and by client (IPv6 by its /64)."""

    def __init__(self, per_sender: int, per_client: int, exempt: ExemptNetworks, owners: tuple[str, ...], *,
                 clock=time.time):
        """`clock`: seconds since the epoch — the buckets are shared between machines."""
        self.per_sender, self.per_client = per_sender, per_client
        self.exempt, self.clock = exempt, clock
        self.owners = frozenset(owner.lower() for owner in owners)
        self._taken: dict[str, _Count] = {}
        self._unshared: dict[str, dict[int, int]] = {}    # taken here since the last exchange
        self._forgotten = 0                                # the shared counts are deleted up to this bucket
        self._failing = False

    def refusal(self, sender: str, client: str) -> str | None:
        """The 450 reply if a message from `sender` by `client` would be one too many, else None."""
        bucket = self._bucket()
        for key, limit, who in self._keys(sender, client):
            count = self._taken.get(key)
            if count is not None and count.within_hour(bucket) >= limit:
                return f"450 4.7.1 Too many messages from {who} this hour, try again later"
        return None

    def taken(self, sender: str, client: str) -> None:
        """A message from `sender` by `client` was committed."""
        bucket = self._bucket()
        if len(self._taken) >= MAX_TRACKED:
            self._forget_expired(bucket)
        for key, _limit, _who in self._keys(sender, client):
            count = self._taken.get(key)
            if count is None:
                count = self._taken[key] = _Count()
            count.add(bucket)
            self._unshare(key, bucket, 1)

    def _unshare(self, key: str, bucket: int, n: int) -> None:
        """Count n messages of `key` for the next exchange."""
        if len(self._unshared) >= MAX_TRACKED and key not in self._unshared:
            return      # a flood while the store is away: bounded, as the counts in memory are
        buckets = self._unshared.setdefault(key, {})
        buckets[bucket] = buckets.get(bucket, 0) + n

    async def keep_shared(self, store: Store) -> None:
        """Exchange the counts with the database now and every SHARE_SECONDS, until cancelled."""
        shared_rates.bind(store)
        while True:
            try:
                await self.share(store)
            except Exception:     # never the end of sharing: the counts stay in memory meanwhile
                log.exception("sharing the message counts failed")
            await asyncio.sleep(SHARE_SECONDS)

    async def share(self, store: Store) -> None:
        """Add what was taken here to the shared counts; take the counts of the keys near a limit."""
        sending, self._unshared = self._unshared, {}
        bucket = self._bucket()
        near = {"sender": max(self.per_sender // 2, 1), "client": max(self.per_client // 2, 1)}
        taken = {(key, b): n for key, buckets in sending.items() for b, n in buckets.items()}
        since = bucket - _Count.SPAN
        try:
            shared = await asyncio.to_thread(shared_rates.exchange, store, taken, since, near,
                                             forget=self._forgotten < since)
            self._forgotten = since
        except DATABASE_ERRORS as exc:
            # Kept for the next exchange. (Had the store committed before it
            # failed, they are counted twice: a limit reached a little early.)
            for (key, b), n in taken.items():
                self._unshare(key, b, n)
            if not self._failing:
                log.warning("message counts not shared: the store failed: %s", first_line(exc))
            self._failing = True
            return
        self._failing = False
        for key, buckets in shared.items():     # all daemons' counts, and what was taken here meanwhile
            self._taken[key] = _Count.of(buckets, self._unshared.get(key, {}))

    def _bucket(self) -> int:
        return int(self.clock() // BUCKET_SECONDS)

    def _keys(self, sender: str, client: str):
        sender = (sender or "").lower()
        if sender == "<>":
            yield "sender <>", self.per_sender * OWNER_OR_NULL_FACTOR, "the null sender"
        elif sender in self.owners:
            yield f"sender {sender}", self.per_sender * OWNER_OR_NULL_FACTOR, sender
        elif sender:
            yield f"sender {sender}", self.per_sender, sender
        if client and not self.exempt.contains(client):
            who = _client_key(client)
            yield f"client {who}", self.per_client, who

    def _forget_expired(self, bucket: int) -> None:
        for key in [k for k, count in self._taken.items() if count.within_hour(bucket) == 0]:
            del self._taken[key]
        # A flood of distinct senders: start afresh rather than grow, and
        # rather than sweep again for every new one near the mark.
        if len(self._taken) >= MAX_TRACKED * 0.9:
            self._taken.clear()


@functools.lru_cache(maxsize=4096)
def _client_key(client: str) -> str:
    """An IPv4 address as it is; an IPv6 one by its /64, which one host commonly has whole."""
    try:
        address = ipaddress.ip_address(client.partition("%")[0])
    except ValueError:
        return client
    return str(ipaddress.ip_network(f"{address}/64", strict=False)) if address.version == 6 else client


class _Count:
    """Messages per 5-minute bucket over the last hour, and their sum."""
    __slots__ = ("buckets", "total")
    SPAN = int(WINDOW_SECONDS // BUCKET_SECONDS)

    def __init__(self):
        self.buckets: deque[list[int]] = deque()     # [bucket, messages], oldest first
        self.total = 0

    @classmethod
    def of(cls, *counts: dict[int, int]) -> "_Count":
        """The sum of {bucket: messages} counts."""
        merged: dict[int, int] = {}
        for count in counts:
            for bucket, n in count.items():
                merged[bucket] = merged.get(bucket, 0) + n
        made = cls()
        made.buckets.extend([bucket, n] for bucket, n in sorted(merged.items()))
        made.total = sum(merged.values())
        return made

    def within_hour(self, bucket: int) -> int:
        while self.buckets and self.buckets[0][0] <= bucket - self.SPAN:
            self.total -= self.buckets.popleft()[1]
        return self.total

    def add(self, bucket: int) -> None:
        self.within_hour(bucket)
        if self.buckets and self.buckets[-1][0] == bucket:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([bucket, 1])
        self.total += 1
