"""What the mail doors would answer now: probes for /healthz, made when asked.

The web app's own query shows that the database answers the web threads.
The doors have threads and connections of their own, and a door can be
wedged while the web answers (a dead writer thread, a lookup thread whose
connection the server dropped). So `ordermail serve` gives its web app a
`DoorProbes`, which sends a round trip down each door's own path:

- the spool: through the writer's queue, a query on the writer's own
  connection — the writer is alive, not stuck behind a hung commit, and
  connected: a DATA now would get its 250;
- recipient lookups: through the event loop and its worker threads, as the
  RCPT check goes — the loop answers, a thread is free, its connection works.

Each probe has PROBE_SECONDS to answer. Requests at the same moment share
one probe and an answer is reused for REUSE_SECONDS, so /healthz, open to
anyone, cannot be used to keep the writer busy.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future

from daemon.store.database import Store, first_line

log = logging.getLogger("ordermail.health")
PROBE_SECONDS = 5.0
REUSE_SECONDS = 1.0


class DoorProbes:
    def __init__(self, spool, loop: asyncio.AbstractEventLoop, store: Store, *,
                 seconds: float = PROBE_SECONDS, reuse_seconds: float = REUSE_SECONDS):
        self.spool, self.loop, self.store = spool, loop, store
        self.seconds, self.reuse_seconds = seconds, reuse_seconds
        self._lock = threading.Lock()
        self._answer: dict[str, str] = {}
        self._answered_at = float("-inf")

    def check(self) -> dict[str, str]:
        """{door: "ok" | "unavailable"}; what is wrong is logged (not shown to whoever asks)."""
        with self._lock:
            if time.monotonic() - self._answered_at >= self.reuse_seconds:
                problems = {"spool": self.spool.probe(self.seconds), "recipients": self._lookup()}
                for door, problem in problems.items():
                    if problem:
                        log.warning("healthz: %s: %s", door, problem)
                self._answer = {door: "unavailable" if problem else "ok" for door, problem in problems.items()}
                self._answered_at = time.monotonic()
            return dict(self._answer)

    def _lookup(self) -> str | None:
        """None when a lookup as RCPT makes it works now; else what is wrong.

        The loop hands a round trip to its default executor, as
        asyncio.to_thread does for the RCPT check."""
        answer = Future()

        def on_the_loop():
            lookup = self.loop.run_in_executor(None, lambda: self.store.db.execute_sql("SELECT 1").fetchone())
            lookup.add_done_callback(lambda done: answer.set_exception(done.exception()) if done.exception()
                                     else answer.set_result(None))
        try:
            self.loop.call_soon_threadsafe(on_the_loop)
        except RuntimeError:          # the loop is closed: the daemon is stopping
            return "the event loop is not running"
        try:
            answer.result(self.seconds)
        except TimeoutError:
            return f"no answer within {self.seconds:.0f} s"
        except Exception as exc:
            return f"the store failed: {first_line(exc)}"
        return None
