"""Who may post to the machine routes: signed bodies, read within bounds, taken once.

`POST /api/orders` (the contract): `X-Ordermail-Signature: sha256=<hex>`, the
HMAC-SHA256 of the raw body keyed with `[api] secret`. A plain HMAC of a body
cannot tell a replay from the original, so ordermail remembers every
signature it accepted, in the same transaction as the order it made: the
exact same body sent again is refused (401), forever, and nothing is stored.

The extension (optional, the plain form keeps working): a client that adds
`X-Ordermail-Timestamp: <unix seconds>` signs `<timestamp>.<body>` instead.
Such a request is valid for `WINDOW_SECONDS` either side of our clock and is
remembered too, so within the window it is taken once and after it not at
all — while the same body may be sent again later under a new timestamp
(two identical orders without a number, on purpose).

WooCommerce and Shopify sign with the base64 HMAC-SHA256 of the body; a
duplicate delivery of theirs is caught by its order number (webhooks.py).
Every comparison is constant-time.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time

import peewee as pw

from daemon import user_numbers
from daemon.store.models import Counter
from daemon.store.database import Store

WINDOW_SECONDS = 300
SIGNATURE_HEADER = "X-Ordermail-Signature"
TIMESTAMP_HEADER = "X-Ordermail-Timestamp"
# Accepted signatures live in the store's key → integer table (the value is
# when they were seen): shared by every worker and daemon on the database,
# written in the order's own transaction. 32 hex digits = 128 bits.
SEEN_PREFIX = "api-sig:"


class Unauthorized(Exception):
    """The request is not signed by someone holding the key, or is a replay."""


class BodyTooLarge(Exception):
    """The request announces or sends more than the route takes."""


class RawHeaders:
    """Request headers as the server gave them (latin-1 strings, never decoded as UTF-8)."""

    def __init__(self, environ):
        self.environ = environ

    def get(self, name: str, default: str = "") -> str:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"), default)

    def __contains__(self, name: str) -> bool:
        return ("HTTP_" + name.upper().replace("-", "_")) in self.environ


def read_body(environ, limit: int) -> bytes:
    """The raw body, refused before reading when it announces more than `limit`."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    stream = environ["wsgi.input"]
    body = stream.read(length) if length >= 0 else stream.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    return body


def check_ordermail(secret: str, body: bytes, headers, now: float | None = None) -> str:
    """Verify the contract's header (and the optional timestamp); return the replay key."""
    given = headers.get(SIGNATURE_HEADER, "")
    if not given:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header")
    scheme, _, hexdigest = given.strip().partition("=")
    if scheme.lower() != "sha256" or not hexdigest:
        raise Unauthorized(f"{SIGNATURE_HEADER} must be sha256=<hex HMAC-SHA256 of the body>")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    signed = body if not stamp else _stamped(stamp, body, time.time() if now is None else now)
    expected = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), _latin1(hexdigest.strip().lower())):
        form = f"{TIMESTAMP_HEADER} + '.' + body" if stamp else "the body"
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match {form}")
    return SEEN_PREFIX + expected[:32]


def _stamped(stamp: str, body: bytes, now: float) -> bytes:
    seconds = user_numbers.whole_number(stamp.strip())
    if seconds is None:
        raise Unauthorized(f"{TIMESTAMP_HEADER} must be unix seconds")
    if abs(now - seconds) > WINDOW_SECONDS:
        raise Unauthorized(f"{TIMESTAMP_HEADER} is more than {WINDOW_SECONDS} s away from our clock")
    return stamp.strip().encode("ascii") + b"." + body


def check_base64(secret: str, body: bytes, given: str, header: str) -> None:
    """WooCommerce's and Shopify's form: base64 of the HMAC-SHA256 of the body."""
    if not given:
        raise Unauthorized(f"missing {header} header")
    expected = base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, _latin1(given.strip())):
        raise Unauthorized(f"{header} does not match the body")


def remember(store: Store, key: str) -> None:
    """Note an accepted signature in the caller's transaction; Unauthorized if seen before."""
    try:
        with store.atomic():   # a savepoint: a clash leaves the caller's transaction usable
            Counter.create(name=key, value=int(time.time()))
    except pw.IntegrityError:
        raise Unauthorized("replayed request: this signed body was accepted before") from None


def _latin1(text: str) -> bytes:
    return text.encode("latin-1", "replace")   # WSGI header values are latin-1 strings
