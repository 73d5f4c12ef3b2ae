"""The IPN verification queue: each stored message posted back to PayPal, retried while PayPal cannot be reached.

    pending ──claim──▶ verifying ──VERIFIED / INVALID──▶ done   (paypal.settle)
       ▲                  │──no connection, not 200, no verdict──▶ pending (backoff) … ▶ failed (owner told)
       └──lease expired───┘

- **The post-back is PayPal's documented one**: `cmd=_notify-validate&`
  followed by the body exactly as it was posted — the same fields in the
  same order and encoding (the bytes were stored, never re-encoded) — as an
  HTTPS POST with a User-Agent (PayPal refuses requests without one).
  PayPal answers VERIFIED or INVALID.
- **Claim first.** A message is taken in a transaction (`FOR UPDATE SKIP
  LOCKED` on PostgreSQL) and marked `verifying` with a lease; several
  daemons never verify the same one, and a lease that runs out (its daemon
  died) hands it out again. A restart loses nothing: the stored message is
  the queue, whichever process took it in (the daemon's web server or
  gunicorn).
- **Backoff.** No connection, an HTTP error or an answer that is neither
  verdict waits `[paypal] retry_base_seconds`, doubling up to an hour;
  after `give_up_after_hours` the message is `failed` and the owner told
  (`ordermail payments ipn retry ID` takes it up again). While PayPal is
  unreachable the verifier pauses for `retry_base_seconds` between tries,
  so a long queue costs one failed connection per pause, not one per message.

Who runs it: `PaypalVerifier`, a thread in the daemon's first worker process
(daemon/workers.py), looking every two seconds; the scheduler's
`paypal-ipn` job as a safety net and for `ordermail jobs run paypal-ipn`.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass

import urllib3

from daemon.payments import paypal
from daemon.config import Settings
from daemon.store.models import PaypalIpn, utcnow
from daemon.store.database import Store, first_line

log = logging.getLogger("ordermail.paypal")
LEASE = dt.timedelta(minutes=2)                 # far above the post-back's own timeouts
TIMEOUT = urllib3.Timeout(connect=10.0, read=30.0)
ANSWER_MAX_BYTES = 1024                         # "VERIFIED" or "INVALID"; anything longer is no verdict
USER_AGENT = "ordermail-ipn-verifier/1 (+https://developer.paypal.com/api/nvp-soap/ipn/IPNImplementation/)"
VERDICTS = (b"VERIFIED", b"INVALID")
INVALID_KEEP = dt.timedelta(days=30)            # forged messages are kept this long, then dropped
HOUSEKEEPING_SECONDS = 3600


class Unreachable(Exception):
    """PayPal gave no verdict: no connection, an HTTP error, or an answer that is neither."""


class PostBack:
    """PayPal's verification endpoint, over urllib3: certificates verified, no redirects, no retries
    of its own (the queue retries, with its backoff)."""

    def __init__(self, settings: Settings):
        self.url = settings.paypal.ipn_verify_url
        self.pool = urllib3.PoolManager(timeout=TIMEOUT, retries=False, maxsize=1)

    def verdict(self, raw: bytes) -> str:
        try:
            response = self.pool.request(
                "POST", self.url, body=b"cmd=_notify-validate&" + raw, redirect=False, preload_content=False,
                headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT,
                         "Connection": "close"})
            try:
                answer = response.read(ANSWER_MAX_BYTES + 1)
            finally:
                response.close()
        except urllib3.exceptions.HTTPError as exc:
            raise Unreachable(f"cannot reach {self.url}: {_describe(exc)}") from None
        if response.status != 200:
            raise Unreachable(f"{self.url} answered HTTP {response.status}")
        if answer.strip() not in VERDICTS:
            raise Unreachable(f"{self.url} answered neither VERIFIED nor INVALID: {answer[:60]!r}")
        return answer.strip().decode("ascii")

    def close(self) -> None:
        self.pool.clear()


def _describe(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)     # MaxRetryError and ProtocolError wrap the cause
    return first_line(reason if isinstance(reason, Exception) else exc)


@dataclass(frozen=True)
class Pass:
    """One round through the due messages."""
    settled: int
    unreachable: str = ""      # why PayPal gave no verdict, when that ended the round


# ---- one pass ----------------------------------------------------------------------------

def verify_due(store: Store, settings: Settings, now: dt.datetime | None = None, *,
               post_back: PostBack | None = None, stopping=lambda: False) -> Pass:
    """Verify and settle each message due at `now` (None: the clock), one at a time;
    the round ends early when PayPal cannot be reached."""
    own = post_back is None
    post_back = post_back or PostBack(settings)
    settled = 0
    try:
        while not stopping():
            moment = now or utcnow()
            row = claim_next(store, moment)
            if row is None:
                break
            problem = _verify(store, settings, row, post_back, moment)
            if problem:
                return Pass(settled, problem)
            settled += 1
    finally:
        if own:
            post_back.close()
    return Pass(settled)


def claim_next(store: Store, now: dt.datetime) -> PaypalIpn | None:
    """Take the message due first, with a lease; None when nothing is due."""
    due = (PaypalIpn.state == "pending") & (PaypalIpn.next_attempt_at <= now)
    expired = (PaypalIpn.state == "verifying") & (PaypalIpn.next_attempt_at < now)
    if not PaypalIpn.select(PaypalIpn.id).where(due | expired).exists():   # no write transaction for nothing
        return None
    with store.atomic():
        PaypalIpn.update(state="pending").where(expired).execute()     # its verifier died: hand it out again
        query = PaypalIpn.select().where(due).order_by(PaypalIpn.next_attempt_at, PaypalIpn.id).limit(1)
        if store.backend == "postgresql":
            query = query.for_update(skip_locked=True)
        row = query.first()
        if row is None:
            return None
        row.state, row.next_attempt_at, row.attempts = "verifying", now + LEASE, row.attempts + 1
        row.save(only=[PaypalIpn.state, PaypalIpn.next_attempt_at, PaypalIpn.attempts])
    return row


def _verify(store: Store, settings: Settings, row: PaypalIpn, post_back: PostBack, now: dt.datetime) -> str:
    """Ask PayPal (unless it said VERIFIED before and the message waits for its order) and settle;
    returns why PayPal could not be asked, or ""."""
    if row.verdict == "VERIFIED":
        paypal.settle(store, settings, row.id, row.verdict, now)
        return ""
    try:
        verdict = post_back.verdict(row.raw)
    except Unreachable as exc:
        _put_off(store, settings, row, str(exc), now)
        return str(exc)
    paypal.settle(store, settings, row.id, verdict, now)
    return ""


def _put_off(store: Store, settings: Settings, row: PaypalIpn, error: str, now: dt.datetime) -> None:
    """Try again after the backoff — or give up, and tell the owner."""
    with store.atomic():
        if now < row.give_up_at:
            retry_at = now + paypal.retry_delay(settings, row.attempts)
            (PaypalIpn.update(state="pending", next_attempt_at=retry_at, last_error=error[:2000])
             .where((PaypalIpn.id == row.id) & (PaypalIpn.state == "verifying")).execute())
            log.warning("paypal message %s: %s; trying again at %s", row.id, error, f"{retry_at:%H:%M:%S}")
            return
        (PaypalIpn.update(state="failed", last_error=error[:2000],
                          reason=f"PayPal could not be asked in {row.attempts} attempts")
         .where((PaypalIpn.id == row.id) & (PaypalIpn.state == "verifying")).execute())
        paypal.alert(settings, None, "PayPal message not verified",
                     f"PayPal message {row.id} (txn {row.txn_id or '?'}, invoice {row.invoice or '?'}, "
                     f"{row.payment_status or '?'}) could not be verified: PayPal did not answer in "
                     f"{row.attempts} attempts until {row.give_up_at:%Y-%m-%d %H:%M} UTC. Last error: {error}. "
                     f"Nothing was marked paid. Once PayPal answers again: "
                     f"'ordermail payments ipn retry {row.id}'.", now)
    log.error("paypal message %s: gave up after %d attempts: %s", row.id, row.attempts, error)


def drop_old_invalid(store: Store, now: dt.datetime) -> int:
    """Forged messages (PayPal said INVALID) are kept INVALID_KEEP, then dropped: anyone may post them."""
    with store.atomic():
        return (PaypalIpn.delete().where((PaypalIpn.outcome == "invalid")
                                         & (PaypalIpn.settled_at < now - INVALID_KEEP)).execute())


# ---- the worker ---------------------------------------------------------------------------

class PaypalVerifier:
    """Runs `verify_due` in a thread until stopped: every `idle_seconds`; after PayPal could not
    be reached, not before `[paypal] retry_base_seconds`."""

    def __init__(self, store: Store, settings: Settings, *, idle_seconds: float = 2.0):
        self.store, self.settings, self.idle_seconds = store, settings, idle_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paypal-verifier", daemon=True)
        self._housekept = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the message in hand (its post-back times out within 40 s), end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        post_back = PostBack(self.settings)
        try:
            while not self._stop.is_set():
                self._stop.wait(self._round(post_back))
        finally:
            post_back.close()
            self.store.db.close()

    def _round(self, post_back: PostBack) -> float:
        """One pass; returns how long to pause."""
        try:
            if time.monotonic() - self._housekept >= HOUSEKEEPING_SECONDS:
                dropped = drop_old_invalid(self.store, utcnow())
                if dropped:
                    log.info("dropped %d forged PayPal message(s) older than %s days", dropped, INVALID_KEEP.days)
                self._housekept = time.monotonic()
            done = verify_due(self.store, self.settings, post_back=post_back, stopping=self._stop.is_set)
        except Exception:
            log.exception("paypal verifier: pass failed; trying again")
            self.store.db.close()
            return self.idle_seconds
        return float(self.settings.paypal.retry_base_seconds) if done.unreachable else self.idle_seconds
