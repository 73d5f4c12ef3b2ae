"""Rate limits kept in memory: so many hits per key in a sliding hour.

Per process (each gunicorn worker counts alone, so the effective limit is
the configured one times the workers) — good enough to make guessing status
links or flooding the sign-in form pointless, without a write to the
database on every miss. The limit on sign-in mails *per address* is counted
in the database instead (statuspage/signin.py), where every process sees it.
"""
from __future__ import annotations

import collections
import threading
import time


class Throttle:
    def __init__(self, limit: int, window_seconds: float = 3600, *, max_keys: int = 50_000, clock=time.monotonic):
        self.limit, self.window, self.max_keys, self.clock = limit, window_seconds, max_keys, clock
        self._hits: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str) -> bool:
        """Whether `key` has used up its hits in the window."""
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                return False
            self._expire(hits, self.clock())
            return len(hits) >= self.limit

    def hit(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.max_keys:
                    self._prune(now)
                hits = self._hits[key] = collections.deque()
            self._expire(hits, now)
            if len(hits) < self.limit:      # one blocked key never holds more than `limit` entries
                hits.append(now)

    def retry_after(self, key: str) -> int:
        """Seconds until the oldest hit of `key` leaves the window."""
        with self._lock:
            hits = self._hits.get(key)
            return max(1, int(hits[0] + self.window - self.clock()) + 1) if hits else 1

    def _expire(self, hits: collections.deque, now: float) -> None:
        while hits and hits[0] <= now - self.window:
            hits.popleft()

    def _prune(self, now: float) -> None:
        """Drop keys without hits in the window; if all are busy, the oldest half."""
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:
            for key in sorted(self._hits, key=lambda k: self._hits[k][-1])[: self.max_keys // 2]:
                del self._hits[key]


def client_address(settings, environ) -> str:
    """Who asks: the peer, or behind a trusted proxy ([web] trust_forwarded_for) the last
    address of X-Forwarded-For (the one the proxy added; the ones before are the client's word)."""
    if settings.web.trust_forwarded_for:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.rsplit(",", 1)[-1].strip()
    return environ.get("REMOTE_ADDR", "")
