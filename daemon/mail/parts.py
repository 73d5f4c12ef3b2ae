"""The leaves of a mail: which part is its text, its HTML or a file, and each
part's decoded bytes, text, and attachment record.

Split from daemon/mail/parsing.py, which builds `InboundMail` from these.
"""
from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32
from io import BytesIO

from daemon.mail.headers import (MAX_HEADER_CHARS, _header_str, decode_bytes, decode_words,
                                  normalise_message_id, unflow)
from daemon.mail.tree import _as_bytes, _b64_size, _raw_body, _restore, _restore_all

MAX_PARTS = 1_000
MAX_TEXT_BYTES = 2**20            # bytes of one text part decoded into `text`/`html`
MAX_DEPTH = 50
KEEP_REPORT_BYTES = 2**20         # delivery reports are kept up to this whatever the threshold


@dataclass(frozen=True)
class AttachmentInfo:
    filename: str
    content_type: str
    size: int                     # decoded bytes
    content_id: str | None        # "<…>" when shown inline (cid:)
    is_inline: bool
    data: bytes | None = field(default=None, repr=False)   # None above keep_attachment_bytes
    message_id: str | None = None  # of an attached message/rfc822 or text/rfc822-headers



def _leaves(msg: Message, defects: list[str]) -> list[tuple[str, Message, str]]:
    """(kind, part, content type) of every leaf in document order; kind is
    "text", "html" or "attachment".

    Attached messages (message/*) are one attachment each: their insides are
    not the customer's text. A text part with a file name shown inline is a
    file when the mail has a text part without a name to be its body: Apple
    Mail sends every attached file inline (a .txt or .csv, an MT940 .sta as
    text/plain), before or after the text typed, and Outlook and others
    their pictures; a bank statement must not be read as the mail's text.
    Without such a part (a one-part mail whose text carries a name, mailers
    that name every part) the first of them is the body, the rest files.
    """
    leaves = list(_walk(msg, defects))
    has_body = any(kind in ("text", "html") for kind, _, _ in leaves)
    settled, body_named = [], has_body
    for kind, part, ctype in leaves:
        if kind in NAMED_TEXT:
            kind, body_named = ("attachment" if body_named else NAMED_TEXT[kind]), True
        settled.append((kind, part, ctype))
    return settled


# A text part shown inline with a file name: the body, or a file (see _leaves).
NAMED_TEXT = {"named text": "text", "named html": "html"}


def _walk(msg: Message, defects: list[str]):
    """Yield (kind, part, content type) in document order, iteratively (kind as `_kind`)."""
    stack, seen = [(msg, 0)], 0
    while stack:
        part, depth = stack.pop()
        seen += 1
        if seen > MAX_PARTS or depth > MAX_DEPTH:
            defects.append("too many or too deeply nested MIME parts: rest ignored")
            return
        ctype = _ctype(part)
        for defect in getattr(part, "defects", ()):
            defects.append(f"{type(defect).__name__} in {ctype}")
        kind = _kind(part, ctype)
        if kind == "container":
            children = part.get_payload()
            stack.extend((child, depth + 1) for child in reversed(children)
                         if isinstance(child, Message))
        else:
            yield kind, part, ctype


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _kind(part: Message, ctype: str) -> str:
    """"container", "attachment", "text", "html", or "named text"/"named html"
    (shown inline, with a file name: `_leaves` decides)."""
    maintype = ctype.split("/")[0]
    if maintype == "multipart" and part.is_multipart():
        return "container"
    disposition = _disposition(part)
    if maintype == "message" or disposition not in ("", "inline"):
        return "attachment"
    if ctype == "text/html":
        kind = "html"
    elif ctype == "text/plain" or maintype == "multipart":   # multipart without boundary
        kind = "text"
    else:
        return "attachment"
    if not _filename(part):
        return kind
    # a name and no disposition: a file; shown inline: a file unless it is the only text
    return "named " + kind if disposition == "inline" else "attachment"


def _disposition(part: Message) -> str:
    value = _header_str(part.get("content-disposition", ""))
    return value.split(";", 1)[0].strip().lower()


def _filename(part: Message) -> str:
    if not _may_name_a_file(part):   # most parts: spare the stdlib's three parameter parses
        return ""
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:
        return ""
    if isinstance(name, tuple):          # an RFC 2231 value get_param did not collapse
        name = name[2]
    name = decode_words(_header_str(name), [])
    name = re.sub(r"[\x00-\x1f\x7f]", "", name).replace("\\", "/").rsplit("/", 1)[-1]
    return name.strip()[:255]


def _may_name_a_file(part: Message) -> bool:
    """False only when neither Content-Disposition nor Content-Type can hold a
    `filename` or `name` parameter (plain or RFC 2231): no "name" in either."""
    for header in ("content-disposition", "content-type"):
        value = part.get(header)
        if value is not None and (not isinstance(value, str) or "name" in value.lower()):
            return True
    return False


# ---- bodies and attachments -------------------------------------------------

def _part_bytes(part: Message, defects: list[str], limit: int | None = None) -> bytes:
    """The decoded payload of a leaf (or the flattened message inside message/*);
    with `limit`, at most about that many bytes of it (a plain or quoted-printable
    body taken from the raw bytes is then never decoded whole)."""
    # not get_payload(): for 8-bit text it already decodes with the declared charset
    payload = part._payload
    if isinstance(payload, list):
        _restore_all(payload)
        return _flatten_list(payload)
    if not isinstance(payload, str):
        return b""
    cte = _header_str(part.get("content-transfer-encoding", "")).strip().lower()
    body = _raw_body(part)
    if body is not None and cte not in _UUENCODE:   # decoded straight from the raw bytes
        if cte == "base64":
            return _b64decode(body, defects)
        if limit is not None:
            body = body[:limit * 3 if cte == "quoted-printable" else limit]   # =XX: three bytes for one
        return binascii.a2b_qp(body) if cte == "quoted-printable" else bytes(body)
    _restore(part)
    payload = part._payload
    if cte == "base64":
        return _b64decode(payload, defects)
    if cte in _UUENCODE:
        data = part.get_payload(decode=True)
        return data if isinstance(data, bytes) else b""
    if cte == "quoted-printable" and payload.isascii():
        return binascii.a2b_qp(payload)       # takes the ASCII str itself: no extra copy
    data = payload.encode("utf-8", "surrogateescape")
    return binascii.a2b_qp(data) if cte == "quoted-printable" else data


_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")


def _b64decode(payload: str | memoryview, defects: list[str]) -> bytes:
    # a2b_base64 skips line breaks itself and takes an ASCII str without a copy
    source = payload
    if isinstance(payload, str) and not payload.isascii():
        source = payload.encode("ascii", "surrogateescape")
    try:
        return binascii.a2b_base64(source)
    except (binascii.Error, ValueError):
        defects.append("damaged base64 repaired")
    data = re.sub(rb"[^A-Za-z0-9+/]", b"", _as_bytes(source))
    try:
        return binascii.a2b_base64(data[: len(data) - len(data) % 4])
    except binascii.Error:
        return b""


class _AsReceived(Compat32):
    """Flattens headers exactly as they came (compat32 would refold them, slowly)."""

    def fold_binary(self, name, value):
        return f"{name}: {value}{self.linesep}".encode("utf-8", "surrogateescape")


_FLATTEN_POLICY = _AsReceived()


def _flatten_list(messages: list) -> bytes:
    out = BytesIO()
    for sub in messages:
        if isinstance(sub, Message):
            try:
                BytesGenerator(out, mangle_from_=False, policy=_FLATTEN_POLICY).flatten(sub)
            except Exception:
                out.write(b"\n")
    return out.getvalue()


def _part_text(part: Message, ctype: str, defects: list[str]) -> str:
    params = _params(part)
    data = _part_bytes(part, defects, limit=MAX_TEXT_BYTES + 1)
    _release(part)
    if len(data) > MAX_TEXT_BYTES:
        # Nobody writes 1 MB by hand: the rest is pasted or quoted, and an
        # event keeps far less ([limits] event_body_max_chars). The raw stays whole.
        defects.append(f"{ctype} part cut at {MAX_TEXT_BYTES} bytes")
        data = data[:MAX_TEXT_BYTES]
    text = decode_bytes(data, params.get("charset"), defects, ctype)
    del data    # a big body should exist in as few copies as possible at a time
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if params.get("format", "").lower() == "flowed":
        text = unflow(text, delsp=params.get("delsp", "").lower() == "yes")
    return text


def _release(part: Message) -> None:
    """Drop a decoded leaf's payload from our private tree, to save memory."""
    part._payload = ""
    part.__dict__.pop("_raw_body", None)


def _params(part: Message) -> dict[str, str]:
    """The Content-Type parameters, names lowercased, RFC 2231 values collapsed."""
    value = part.get("content-type")
    if value is None:
        return {}
    if isinstance(value, str) and value.isascii() and not any(c in value for c in '"\\*<'):
        return _plain_params(value)
    try:
        pairs = part.get_params() or []
    except Exception:
        return {}
    found = {}
    for name, value in pairs[1:]:
        if isinstance(value, tuple):
            value = value[2]
        found.setdefault(str(name).lower(), _header_str(value or "").strip().strip('"'))
    return found


def _plain_params(value: str) -> dict[str, str]:
    """`_params` of a Content-Type without quotes, backslashes, RFC 2231 names
    or <…> values (`text/plain; charset=utf-8`, nearly every text part), read
    by splitting: get_params would parse, quote and unquote it to the same."""
    found = {}
    for piece in value.split(";")[1:]:
        name, eq, val = piece.partition("=")
        found.setdefault((name if eq else piece).strip().lower(), val.strip())
    return found


def _attachment(part: Message, ctype: str, keep: int, defects: list[str]) -> AttachmentInfo:
    threshold = max(keep, KEEP_REPORT_BYTES if _is_report(ctype) else 0)
    size = _cut_size(part, ctype, threshold, defects)
    if size is None:
        data = _part_bytes(part, defects)
        size = len(data)
    else:
        data = None                      # not kept, so only counted
    enclosed_id = _enclosed_message_id(part, ctype, data)
    _release(part)
    cid = _header_str(part.get("content-id", "")).strip()
    disposition = _disposition(part)
    return AttachmentInfo(
        filename=_filename(part) or _default_name(ctype),
        content_type=ctype,
        size=size,
        content_id=normalise_message_id(cid) if cid else None,
        is_inline=disposition == "inline" or (bool(cid) and disposition != "attachment"),
        data=data if size <= threshold else None,
        message_id=enclosed_id,
    )


def _cut_size(part: Message, ctype: str, threshold: int, defects: list[str]) -> int | None:
    """The decoded size of a cut leaf that will not be kept, counted without
    decoding it; None when its bytes are needed or cannot be counted cheaply."""
    cut = getattr(part, "_raw_body", None)
    if cut is None or _is_report(ctype) or ctype.startswith("message/"):
        return None
    raw, start, end = cut
    cte = _header_str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64":
        if (end - start) * 3 // 4 <= threshold:     # at most this much: it may be kept
            return None
        counted = _b64_size(raw, start, end)
        if counted is None or counted[0] <= threshold:
            return None
        if counted[1]:
            defects.append("damaged base64 repaired")
        return counted[0]
    if cte == "quoted-printable" or cte in _UUENCODE:
        return None
    return end - start if end - start > threshold else None


def _is_report(ctype: str) -> bool:
    # mail/bounces.py reads these; they are small, so keep them whatever the threshold
    return ctype.endswith("delivery-status") or ctype.endswith("rfc822-headers")


def _default_name(ctype: str) -> str:
    if ctype.startswith("message/"):
        return "message.eml"
    return "attachment." + {"text/plain": "txt", "text/html": "html"}.get(ctype, "bin")


def _enclosed_message_id(part: Message, ctype: str, data: bytes) -> str | None:
    # not get_payload(): for 8-bit bytes it decodes with the declared charset,
    # and a hostile one (idna) raised and cost us the file (found by fuzzing)
    payload = part._payload
    if ctype in ("message/rfc822", "message/global") and isinstance(payload, list) and payload:
        value = payload[0].get("message-id")
    elif ctype.endswith("rfc822-headers"):
        head = data[:MAX_HEADER_CHARS].decode("utf-8", "replace")
        found = re.search(r"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
        value = found.group(1) if found else None
    else:
        return None
    return normalise_message_id(_header_str(value)) if value else None
