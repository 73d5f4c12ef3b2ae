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
and decoded, or only counted, from the raw bytes (see `_parse_cut`). A 25 MB
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

import binascii
import functools
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from email import errors
from email.feedparser import BytesFeedParser
from email.parser import BytesHeaderParser
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Compat32, compat32
from html.parser import HTMLParser
from io import BytesIO

from daemon.mail.headers import (MAX_HEADER_CHARS, _addresses, _date, _header_str, _Headers, _mailbox,
                                  decode_bytes, decode_words, message_ids, normalise_message_id, one_line,
                                  unflow)
from daemon.mail.trimming import TrimmedReply, html_to_text, trim_reply

MAX_SUBJECT = 998                 # RFC 5322 line limit
MAX_PARTS = 1_000
MAX_HTML_RENDERED = 2**20         # characters of an HTML-only body rendered into `text`
MAX_TEXT_BYTES = 2**20            # bytes of one text part decoded into `text`/`html`
MAX_DEPTH = 50
FEED_CHUNK = 65_536
KEEP_ATTACHMENT_BYTES = 32 * 2**20
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


# ---- the tree --------------------------------------------------------------

def _as_bytes(raw) -> bytes:
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return bytes(raw) if not isinstance(raw, bytes) else raw


def _parse_tree(raw: bytes, defects: list[str]) -> Message | None:
    """Feed the parser in slices: no full-size str copy, no StringIO."""
    msg = _parse_cut(raw)
    if msg is not None:
        return msg
    try:
        parser = BytesFeedParser(policy=compat32)
        view = memoryview(raw)
        for start in range(0, len(raw), FEED_CHUNK):
            parser.feed(bytes(view[start:start + FEED_CHUNK]))
        return parser.close()
    except RecursionError:
        defects.append("MIME nesting too deep: headers only")
    except Exception as exc:
        defects.append(f"MIME parse failed ({type(exc).__name__}): headers only")
    try:
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        parser = BytesFeedParser(policy=compat32)
        parser.feed(head + b"\n\n")
        return parser.close()
    except Exception:
        defects.append("headers unreadable")
        return None


# ---- big leaf bodies kept out of the parser ------------------------------------
#
# The feedparser keeps a leaf's body as a list of line objects, joins them and
# then copies the join once more to drop the last line break: a 25 MB base64
# photo costs ~2.7x its size before anything is decoded. So the bodies of big
# leaves are cut out before parsing: each run of lines that follows a part's
# header block up to the next line starting with "--" is replaced by one
# placeholder line, the (now small) rest is parsed, and the part whose whole
# payload is that placeholder gets the raw slice (`_raw_body`) instead; its
# bytes are decoded from the slice, or only counted when not kept.
#
# Why the result is the same as a full parse: no line of a cut run can end a
# body (every boundary line starts with "--", and the run has no bare CR, so
# the parser's lines are ours), so a parser that reads the placeholder as a
# body line reads the whole run as body lines, in the same state before and
# after. The placeholder is accepted only where that is certain: in the
# payload of a part without defects (a header block cut short, a missing
# start boundary or a multipart without boundary all leave a defect on the
# part that takes the text). A payload that is more than the placeholder (a
# text with a "-- " line further down) gets the cut text back at once. A
# placeholder anywhere else (preamble, epilogue, headers), and the raw bytes
# are parsed in full.

CUT_MIN = 64 * 1024               # leaf bodies at least this long are cut out before parsing
CUT_MAX_HEADER = 65_536           # a part's header block longer than this: not cut
HEADER_END = re.compile(rb"\r?\n\r?\n")   # the blank line after a mail's header block, CRLF or LF
_HEADER_LINE = re.compile(rb"(From |[\041-\071\073-\176]*:|[\t ])")   # the feedparser's headerRE
_B64_JUNK = bytes(c for c in range(256)
                  if not (chr(c).isascii() and (chr(c).isalnum() or chr(c) in "+/")))


def _parse_cut(raw: bytes) -> Message | None:
    """The parse with big leaf bodies cut out; None if nothing was cut or if
    the placeholders did not land where they must (then parse in full)."""
    if len(raw) < CUT_MIN:
        return None
    try:
        cuts = _cut_regions(raw)
        if not cuts:
            return None
        nonce = secrets.token_hex(16)
        eols = ["\r\n" if raw[end - 2:end] == b"\r\n" else "\n" for _, end in cuts]
        parser = BytesFeedParser(policy=compat32)
        view, pos = memoryview(raw), 0
        for number, (start, end) in enumerate(cuts):
            _feed(parser, view, pos, start)
            parser.feed(f"ordermail-cut-{nonce}-{number}{eols[number]}".encode("ascii"))
            pos = end
        _feed(parser, view, pos, len(raw))
        msg = parser.close()
        marks = re.compile(f"ordermail-cut-{nonce}-(\\d+)(\r\n|\n)?")
        found: set[int] = set()
        stack = [msg]
        while stack:
            part = stack.pop()
            payload = part._payload
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
            elif isinstance(payload, str) and nonce in payload:
                if part.defects or not _uncut(part, raw, cuts, eols, marks, found):
                    return None
        return msg if len(found) == len(cuts) else None
    except Exception:   # RecursionError and all: the full parse decides what to report
        return None


def _uncut(part: Message, raw: bytes, cuts: list[tuple[int, int]], eols: list[str],
           marks: re.Pattern, found: set[int]) -> bool:
    """Point a leaf whose payload is one placeholder at its raw body; put the
    cut text back into any other payload with placeholders. False: not as it must be.

    A placeholder line keeps its line break, except at the end of a payload
    that a boundary follows: then the cut body loses its last line break too.
    """
    payload, pieces, at = part._payload, [], 0
    for mark in marks.finditer(payload):
        number = int(mark.group(1))
        if number >= len(cuts) or number in found:
            return False
        start, end = cuts[number]
        if mark.group(2) is None:
            if mark.end() != len(payload):
                return False
            end -= len(eols[number])
        elif mark.group(2) != eols[number]:
            return False
        found.add(number)
        if mark.start() == 0 and mark.end() == len(payload):      # the whole payload
            part._raw_body = (raw, start, end)
            return True
        pieces += [payload[at:mark.start()], raw[start:end].decode("ascii", "surrogateescape")]
        at = mark.end()
    if not pieces:
        return False
    pieces.append(payload[at:])
    part._payload = "".join(pieces)
    return True


def _feed(parser: BytesFeedParser, view: memoryview, start: int, end: int) -> None:
    for at in range(start, end, FEED_CHUNK):
        parser.feed(bytes(view[at:min(at + FEED_CHUNK, end)]))


def _cut_regions(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of each leaf body worth cutting: from the end of a part's
    header block (at the top or after a line starting with "--") to the next
    line starting with "--", or the end."""
    regions, size, pos = [], len(raw), 0
    while pos < size:
        if raw.startswith(b"--", pos):
            dash = pos
        else:
            dash = raw.find(b"\n--", pos)
            dash = size if dash < 0 else dash + 1
        if dash - pos >= CUT_MIN:
            region = _leaf_body(raw, pos, dash)
            if region:
                regions.append(region)
        if dash >= size:
            break
        pos = raw.find(b"\n", dash)
        if pos < 0:
            break
        pos += 1
    return regions


def _leaf_body(raw: bytes, start: int, end: int) -> tuple[int, int] | None:
    """The body of the part in raw[start:end] if it may be cut: a clean header
    block, not a multipart or message, and a body of whole lines, no bare CR."""
    if raw.startswith(b"\r\n", start) or raw.startswith(b"\n", start):
        head_end = start
    else:
        found = [i for i in (raw.find(b"\n\r\n", start, start + CUT_MAX_HEADER),
                             raw.find(b"\n\n", start, start + CUT_MAX_HEADER)) if 0 <= i < end]
        if not found:
            return None
        head_end = min(found) + 1
    body = head_end + (2 if raw.startswith(b"\r\n", head_end) else 1)
    if end - body < max(CUT_MIN, 1) or raw[end - 1:end] != b"\n":
        return None
    head = raw[start:head_end]
    if head.count(b"\r") != head.count(b"\r\n") or raw.count(b"\r", body, end) != raw.count(b"\r\n", body, end):
        return None
    if not all(_HEADER_LINE.match(line) for line in head.split(b"\n")[:-1]):
        return None
    try:
        maintype = BytesHeaderParser(policy=compat32).parsebytes(head).get_content_maintype()
    except Exception:
        return None
    if maintype in ("multipart", "message"):
        return None
    return body, end


def _raw_body(part: Message) -> memoryview | None:
    """The raw bytes of a leaf body that was cut out before parsing."""
    cut = getattr(part, "_raw_body", None)
    return None if cut is None else memoryview(cut[0])[cut[1]:cut[2]]


def _restore(part: Message) -> None:
    """Give a cut leaf the payload the parser would have given it."""
    body = _raw_body(part)
    if body is not None:
        part._payload = bytes(body).decode("ascii", "surrogateescape")
        del part._raw_body


def _restore_all(parts: list) -> None:
    """Put back every cut body inside these parts (an attached message is flattened whole)."""
    stack = [p for p in parts if isinstance(p, Message)]
    while stack:
        part = stack.pop()
        if isinstance(part._payload, list):
            stack.extend(p for p in part._payload if isinstance(p, Message))
        else:
            _restore(part)


def _b64_size(raw: bytes, start: int, end: int) -> tuple[int, bool] | None:
    """(len of what `_b64decode` returns, whether it repairs) for raw[start:end],
    without decoding it all at once; None when that cannot be had cheaply.

    Without "=" the decoder only skips non-alphabet bytes, and after a multiple
    of 4 alphabet characters its state is as at the start: that part gives 3
    bytes per 4 characters and cannot fail, and the rest (from the line with
    the first "=") decodes and fails alone as it would in the whole.
    """
    pad = raw.find(b"=", start, end)
    split = end if pad < 0 else max(start, raw.rfind(b"\n", start, pad) + 1)
    valid = _b64_count(raw, start, split)
    if valid % 4:
        return None
    try:
        return valid // 4 * 3 + len(binascii.a2b_base64(memoryview(raw)[split:end])), False
    except (binascii.Error, ValueError):
        total = valid + _b64_count(raw, split, end)
        return (total - total % 4) // 4 * 3, True


def _b64_count(raw: bytes, start: int, end: int) -> int:
    """How many base64 alphabet characters raw[start:end] holds."""
    step = 2**18
    return sum(len(raw[at:min(at + step, end)].translate(None, _B64_JUNK))
               for at in range(start, end, step))


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


# ---- machine-sent mail ----------------------------------------------------------

_OOO_SUBJECT = re.compile(
    r"^\s*(?:out\s+of\s+(?:the\s+)?office|automatic\s+reply|auto(?:matic)?[\s-]*reply|"
    r"autoreply|automatische\s+antwort|abwesenheitsnotiz|abwesend|"
    r"r[ée]ponse\s+automatique|absence\s+du\s+bureau|absent|"
    r"respuesta\s+autom[áa]tica|fuera\s+de\s+la\s+oficina|risposta\s+automatica|"
    r"fuori\s+ufficio|automatisch\s+antwoord|afwezig|automatisk\s+svar|"
    r"resposta\s+autom[áa]tica|vacation\s+reply|on\s+vacation)\b|^\s*auto:",
    re.IGNORECASE)


def is_out_of_office_subject(subject: str) -> bool:
    """An out-of-office or automatic-reply subject, in any of the common languages."""
    return bool(_OOO_SUBJECT.search(subject))


_SUPPRESS = re.compile(r"\b(all|oof|autoreply)\b", re.IGNORECASE)
_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply"})
_ROBOT_SENDERS = frozenset({"mailer-daemon", "postmaster"})


def _auto_reason(h: _Headers, subject: str, envelope: str | None) -> str | None:
    """Why this mail was sent by a machine, from the first sign found; None if by a person."""
    value = _header_str(h.first("auto-submitted")).split(";")[0].strip().lower()
    if value and value != "no":
        return f"Auto-Submitted: {value}"
    for name, label in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond"),
                        ("x-autogenerated", "X-Autogenerated")):
        if h.first(name).strip():
            return label
    suppress = _SUPPRESS.search(h.first("x-auto-response-suppress"))
    if suppress:
        return f"X-Auto-Response-Suppress: {suppress.group(1)}"
    precedence = h.first("precedence").strip().lower()
    if precedence in _PRECEDENCE:
        return f"Precedence: {precedence}"
    for name, label in (("x-loop", "X-Loop"), ("list-id", "List-Id"),
                        ("list-unsubscribe", "List-Unsubscribe")):
        if h.first(name).strip():
            return label
    if envelope == "<>":
        return "null sender"
    if envelope and envelope.split("@")[0] in _ROBOT_SENDERS:
        return f"{envelope.split('@')[0].lower()} sender"
    if is_out_of_office_subject(subject):
        return "out-of-office subject"
    return None


def _envelope(given: str, h: _Headers) -> str | None:
    """The reverse-path, lowercased: "<>" for the null sender, None if unknown."""
    value = (given or "").strip() or h.first("return-path").strip()
    if not value:
        return None
    address = _header_str(value).strip("<> \t").lower()
    return address[:320] or "<>"


# ---- HTML to text ----------------------------------------------------------------

class _HtmlText(HTMLParser):
    """A plain rendering of an HTML body: blocks become lines, scripts vanish."""
    BLOCKS = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
                        "blockquote", "pre", "table", "ul", "ol", "hr", "section", "article"})
    HIDDEN = frozenset({"script", "style", "head", "title", "template"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.hidden = 0
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
        if tag in self.BLOCKS:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCKS and tag != "br":
            self.out.append("\n")

    def handle_data(self, data):
        if not self.hidden:
            self.out.append(data if self.pre else re.sub(r"\s+", " ", data))


def _own_html_to_text(markup: str) -> str:
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:   # HTMLParser is lenient; this is only a last guard
        pass
    lines = [line.strip() for line in "".join(parser.out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _html_text(markup: str, defects: list[str]) -> str:
    if len(markup) > MAX_HTML_RENDERED:   # HTMLParser costs several times its input
        defects.append(f"HTML body of {len(markup)} characters: text from the first "
                       f"{MAX_HTML_RENDERED}")
        markup = markup[:MAX_HTML_RENDERED]
    if not markup:
        return ""
    try:
        return html_to_text(markup)
    except Exception as exc:   # never let the renderer cost us the mail
        defects.append(f"HTML rendering failed ({type(exc).__name__}): plain fallback")
        return _own_html_to_text(markup)


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
