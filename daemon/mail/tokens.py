"""Reply tokens: the part after '+' in orders+TOKEN@shop.example.

A token names an order and a purpose and proves that we made it:

    version (1 byte) | order id (4) | purpose (1) | issued day (2) | MAC (10)

base32-encoded in lower case (mail systems may fold the case of a local
part) to 29 characters. The MAC is an 80-bit truncated HMAC-SHA256 keyed by
the order's own reply secret, so rotating that secret revokes every token of
one order and nothing else. Reading a token needs no table of issued tokens
(learnt from Gitea's mail tokens); checking it is constant-time.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import struct
from dataclasses import dataclass

VERSION = 1
MAC_BYTES = 10
_LAYOUT = struct.Struct(">BIBH")
EPOCH = dt.date(2020, 1, 1)

# Purposes: a customer replying to a notification; the owner answering a
# forwarded customer reply; a bounce coming back to a notification (VERP).
CUSTOMER_REPLY, OWNER_ANSWER, BOUNCE = 1, 2, 3
PURPOSES = {CUSTOMER_REPLY: "customer reply", OWNER_ANSWER: "owner answer", BOUNCE: "bounce"}


@dataclass(frozen=True)
class Claim:
    """What a token says before it is checked against the order's secret."""
    order_id: int
    purpose: int
    issued: dt.date
    body: bytes
    mac: bytes


def make_token(order_id: int, reply_secret: str, purpose: int, issued: dt.date) -> str:
    day = min(max((issued - EPOCH).days, 0), 0xFFFF)
    body = _LAYOUT.pack(VERSION, order_id, purpose, day)
    raw = body + _mac(reply_secret, body)
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def read_token(token: str) -> Claim | None:
    """Decode the structure; None for anything that is not one of our tokens."""
    if len(token) != 29:
        return None
    try:
        raw = base64.b32decode(token.upper() + "===")
    except (binascii.Error, ValueError):
        return None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != token.upper():
        return None          # the last character's unused bit set: one token has one spelling
    body, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size:]
    version, order_id, purpose, day = _LAYOUT.unpack(body)
    if version != VERSION or purpose not in PURPOSES:
        return None
    return Claim(order_id, purpose, EPOCH + dt.timedelta(days=day), body, mac)


def is_genuine(claim: Claim, reply_secret: str) -> bool:
    return hmac.compare_digest(claim.mac, _mac(reply_secret, claim.body))


def is_expired(claim: Claim, today: dt.date, max_age_days: int) -> bool:
    return max_age_days > 0 and (today - claim.issued).days > max_age_days


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode("ascii"), body, hashlib.sha256).digest()[:MAC_BYTES]
