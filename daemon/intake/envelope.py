"""The envelope read from headers, for doors that get none (IMAP, the pipe).

An SMTP or LMTP client tells us sender and recipients; a mailbox or a pipe
without arguments does not, so the delivering server's headers stand in.
"""
from __future__ import annotations

from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr

HEADER_RECIPIENTS = ("Delivered-To", "X-Original-To", "To", "Cc")
HEADER_WINDOW = 262_144   # headers are read from this much of the message at most


def header_recipients(raw: bytes) -> list[str]:
    """Delivered-To, X-Original-To, To and Cc addresses, in that order."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:HEADER_WINDOW])
    values = [str(v) for name in HEADER_RECIPIENTS for v in headers.get_all(name, [])]
    return [address for _, address in getaddresses(values) if address]


def envelope_sender(raw: bytes) -> str:
    """The Return-Path the delivering server wrote ("<>" for a bounce); lacking one, the From address.

    "<>" is the null sender, as aiosmtpd records it; "" would mean unknown.
    """
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:HEADER_WINDOW])
    return_path = headers.get("Return-Path")
    if return_path is not None:
        return str(return_path).strip().strip("<>").strip() or "<>"
    return parseaddr(str(headers.get("From", "")))[1]
