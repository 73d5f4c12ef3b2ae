"""Parse once: raw bytes become one frozen `InboundMail`, and nothing later reads headers.

`parse_mail` never raises. Broken MIME, unknown or hostile charsets, 8-bit
headers, a missing From, base64 garbage, 100 KB header lines and deep nesting
all degrade to the best value that can be had, with what was wrong listed in
`defects` for the log.

Why the stdlib parser and not the `mail-parser` package: the speed the field
notes credit to mail-parser comes from the compat32 policy, which we use
directly. mail-parser itself parses through `message_from_bytes` (a full str
copy, then a StringIO: ~7.7x the message size at peak), keeps every attachment
as a second, base64 copy, and eagerly builds dicts, JSON views and Received
analyses we never read: it takes 1.5-2.5x as long as `parse_mail` on our
scenario mails. Here `BytesFeedParser(policy=compat32)` is fed 64 KB slices,
base64 is decoded straight from the parsed str by binascii (the stdlib
`get_payload(decode=True)` splits it into lines first: ~5.5x at peak), and
headers are decoded by our own RFC 2047 decoder (daemon/mail/headers.py), which
never uses an escape codec. Big leaf bodies (a photo) never reach the feedparser, which
would hold them as lines, joined, and copied (~2.7x): they are cut out first
and decoded, or only counted, from the raw bytes (see mail/tree.py). A 25 MB
reply with a photo peaks at 0.02x its size under tracemalloc when its
attachments are not kept, and at 0.75x (the decoded file) when they are.

Attachments keep their decoded bytes (`data`) up to `keep_attachment_bytes`
(default 32 MiB, above the default 25 MiB message limit, so normally all of
them). Above it, `data` is None and `attachment_data(raw, index)` decodes that
one attachment again from the stored raw bytes.

`auto_submitted` names the first sign that a machine sent the mail. Bounces
carry such signs too (null sender, `Auto-Submitted: auto-replied`): the router
must ask `bounces.find_bounce` before treating a mail as an auto-reply.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from email import errors
from email.message import Message

from daemon.mail.headers import (MAX_HEADER_CHARS, _addresses, _date, _header_str, _Headers, _mailbox,
                                  message_ids, normalise_message_id, one_line)
from daemon.mail.html_text import _html_text
from daemon.mail.machine_sent import _auto_reason, _envelope
from daemon.mail.parts import AttachmentInfo, _attachment, _ctype, _leaves, _part_bytes, _part_text
from daemon.mail.trimming import TrimmedReply, trim_reply
from daemon.mail.tree import _as_bytes, _parse_tree

MAX_SUBJECT = 998                 # RFC 5322 line limit
KEEP_ATTACHMENT_BYTES = 32 * 2**20
HEADER_END = re.compile(rb"\r?\n\r?\n")   # the blank line after a mail's header block, CRLF or LF


@dataclass(frozen=True)
class InboundMail:
    message_id: str | None
    from_address: str | None
    from_name: str
    sender_address: str | None
    reply_to: tuple[str, ...]
    to: tuple[str, ...]
    cc: tuple[str, ...]
    delivered_to: tuple[str, ...]
    subject: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: datetime | None         # aware, UTC
    text: str
    html: str
    attachments: tuple[AttachmentInfo, ...]
    auto_submitted: str | None
    authentication_results: tuple[str, ...]
    headers_ok: bool
    defects: tuple[str, ...]
    envelope_from: str | None = None   # reverse-path as given, else Return-Path; "<>" = null
    content_type: str = "text/plain"   # of the whole message
    size: int = 0                      # of the raw bytes

    @functools.cached_property
    def trimmed(self) -> TrimmedReply:
        """What the sender wrote in `text`: quoted history and signature cut
        (worked out once, when first asked). The subject tells a forward
        ("Fwd:", "WG:") whose header block opens the forwarded mail."""
        return trim_reply(self.text, self.subject)


# ---- entry points ----------------------------------------------------------

def parse_mail(raw: bytes, *, envelope_from: str = "",
               keep_attachment_bytes: int = KEEP_ATTACHMENT_BYTES) -> InboundMail:
    """The one parse of a received mail; never raises.

    `envelope_from` is the SMTP reverse-path: "<>" for the null sender (as
    aiosmtpd gives it), "" when unknown (then the top Return-Path is read).
    Our own mail coming back is recognised by routing, by its exact
    Message-ID in the outbox (`routing.Context.automatic`).
    """
    raw = _as_bytes(raw)
    defects: list[str] = []
    msg = _parse_tree(raw, defects)
    if msg is None:
        return _empty(raw, defects)
    try:
        return _build(msg, raw, envelope_from, keep_attachment_bytes, defects)
    except Exception as exc:  # a bug or an input we did not foresee: degrade, don't crash
        defects.append(f"parse error: {type(exc).__name__}: {exc}"[:300])
        return _empty(raw, defects)


def attachment_data(raw: bytes, index: int) -> bytes:
    """The decoded bytes of attachment `index` (as listed by `parse_mail`)."""
    msg = _parse_tree(_as_bytes(raw), [])
    if msg is None:
        raise IndexError(index)
    attachments = [part for kind, part, _ in _leaves(msg, []) if kind == "attachment"]
    return _part_bytes(attachments[index], [])


# ---- assembling the value ---------------------------------------------------------

# A broken header block (not merely odd values): headers_ok is False.
_HEADER_DEFECTS = (errors.MissingHeaderBodySeparatorDefect, errors.MisplacedEnvelopeHeaderDefect,
                   errors.FirstHeaderLineIsContinuationDefect, errors.HeaderDefect)


def _build(msg: Message, raw: bytes, envelope_from: str, keep: int, defects: list[str]) -> InboundMail:
    h = _Headers(msg, defects)
    before = len(defects)
    from_address, from_name = _mailbox(h.first("from"), "From", defects)
    if not h.first("from").strip():
        defects.append("From: missing")
    headers_ok = len(defects) == before and not any(
        isinstance(d, _HEADER_DEFECTS) for d in getattr(msg, "defects", ()))
    sender, _ = _mailbox(h.first("sender"), "Sender", defects)
    subject = one_line(h.text("subject", defects), MAX_SUBJECT)
    message_id = normalise_message_id(h.first("message-id"))
    envelope = _envelope(envelope_from, h)
    texts, htmls, attachments = _body(msg, keep, defects)
    return InboundMail(
        message_id=message_id,
        from_address=from_address,
        from_name=one_line(from_name, 200),
        sender_address=sender,
        reply_to=tuple(a for _, a in _addresses(h.all("reply-to"), defects)),
        to=tuple(a for _, a in _addresses(h.all("to"), defects)),
        cc=tuple(a for _, a in _addresses(h.all("cc"), defects)),
        delivered_to=_delivered_to(msg),
        subject=subject,
        in_reply_to=message_ids(" ".join(h.all("in-reply-to"))),
        references=message_ids(" ".join(h.all("references"))),
        date=_date(h.first("date"), defects),
        text="\n".join(texts) if texts else _html_text("\n".join(htmls), defects),
        html="\n".join(htmls),
        attachments=tuple(attachments),
        auto_submitted=_auto_reason(h, subject, envelope),
        authentication_results=tuple(one_line(_header_str(v), MAX_HEADER_CHARS)
                                     for v in h.all("authentication-results")),
        headers_ok=headers_ok,
        defects=tuple(dict.fromkeys(defects)),
        envelope_from=envelope,
        content_type=_ctype(msg),
        size=len(raw),
    )


def _delivered_to(msg: Message) -> tuple[str, ...]:
    found = []
    for name, value in msg.raw_items():
        if name.lower() in ("delivered-to", "x-original-to"):
            addr = _header_str(value).strip().strip("<>").strip().lower()
            if addr:
                found.append(addr[:320])
    return tuple(found)


def _body(msg: Message, keep: int, defects: list[str]):
    texts, htmls, attachments = [], [], []
    for kind, part, ctype in _leaves(msg, defects):
        try:
            if kind == "attachment":
                attachments.append(_attachment(part, ctype, keep, defects))
            elif kind == "html":
                htmls.append(_part_text(part, ctype, defects))
            else:
                texts.append(_part_text(part, ctype, defects))
        except Exception as exc:   # one broken part must not cost the others
            defects.append(f"{ctype} part skipped: {type(exc).__name__}")
    return [t for t in texts if t.strip()], [h for h in htmls if h.strip()], attachments


def _empty(raw: bytes, defects: list[str]) -> InboundMail:
    return InboundMail(
        message_id=None, from_address=None, from_name="", sender_address=None,
        reply_to=(), to=(), cc=(), delivered_to=(), subject="", in_reply_to=(),
        references=(), date=None, text="", html="", attachments=(), auto_submitted=None,
        authentication_results=(), headers_ok=False, defects=tuple(defects), size=len(raw))
