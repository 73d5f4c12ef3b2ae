"""The MIME tree of a raw mail: fed to the stdlib parser in 64 KB slices, with
big leaf bodies cut out before parsing and read from the raw bytes after.

Split from daemon/mail/parsing.py, whose `parse_mail` and `attachment_data`
start here; mail/parts.py decodes the cut bodies.
"""
from __future__ import annotations

import binascii
import re
import secrets
from email.feedparser import BytesFeedParser
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

FEED_CHUNK = 65_536


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
