"""Header values: RFC 2047 words, charsets without escape codecs, the address
fast path, message ids and dates.

Split from daemon/mail/parsing.py, which reads every header through these;
bounces.py decodes its words and ids with them too.
"""
from __future__ import annotations

import binascii
import codecs
import functools
import re
from datetime import datetime, timezone
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime


# ---- charsets and header words ----------------------------------------------

MAX_HEADER_CHARS = 65_536         # longer values are cut (and recorded) before decoding
MAX_REFERENCES = 100              # keep the first and the last 99

_ESCAPE_CODECS = frozenset({"unicode-escape", "raw-unicode-escape", "idna", "punycode",
                            "undefined", "palmos"})
_CHARSET_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
                    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
                    "iso_8859-1": "cp1252", "us-ascii": "ascii", "ascii": "ascii"}


@functools.lru_cache(maxsize=256)
def _codec(charset: str | None) -> str | None:
    """A safe text codec for a declared charset, or None (unknown or unsafe)."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    # escape codecs would turn a customer's backslashes into other characters
    if not getattr(info, "_is_text_encoding", True) or info.name in _ESCAPE_CODECS:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None, defects: list[str], where: str = "") -> str:
    """Text from bytes, without NUL characters (nothing shows them; the store
    drops them anyway); never fails."""
    text = _decode_bytes(data, charset, defects, where)
    return _without_nul(text, where, defects) if "\x00" in text else text


def _without_nul(text: str, where: str, defects: list[str]) -> str:
    defects.append(f"{where}: NUL characters removed")
    return text.replace("\x00", "")


def _decode_bytes(data: bytes, charset: str | None, defects: list[str], where: str = "") -> str:
    """Text from bytes; never fails.

    Non-ASCII bytes that are valid UTF-8 are read as UTF-8 whatever the label
    says (mislabelled UTF-8 is common, valid UTF-8 by accident is not); else the
    declared charset; else (undeclared, unknown, or not decodable as declared)
    Windows-1252, then Latin-1, which take any byte.
    """
    codec = _codec(charset)
    if codec and codec.startswith(("utf-16", "utf-32")):
        return data.decode(codec, "replace")
    if not data.isascii():
        try:
            text = data.decode("utf-8")
            if codec not in (None, "utf-8", "ascii"):
                defects.append(f"{where} labelled {charset[:40]!r} but UTF-8: read as UTF-8")
            elif charset and not codec:
                defects.append(f"unknown charset {charset[:40]!r} in {where}: read as UTF-8")
            return text
        except UnicodeDecodeError:
            pass
    if codec:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            # A UTF-8 label on Latin-1 bytes is the usual mix-up (old clients,
            # scripts): Windows-1252 reads "Grüße" where "replace" makes "Gr��e".
            defects.append(f"bytes not in {charset[:40]!r} in {where}: read as Windows-1252")
    if charset and not codec:
        defects.append(f"unknown charset {charset[:40]!r} in {where}: read as Windows-1252")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([qQbB])\?([^?\s]*)\?=")


def decode_words(value: str, defects: list[str]) -> str:
    """RFC 2047 encoded words to text; whitespace between adjacent words goes."""
    if "=?" not in value:
        return value
    out, pos, after_word = [], 0, False
    for m in _ENCODED_WORD.finditer(value):
        gap = value[pos:m.start()]
        if not (after_word and not gap.strip()):
            out.append(gap)
        out.append(_decode_word(m, defects))
        pos, after_word = m.end(), True
    out.append(value[pos:])
    return "".join(out)


def _decode_word(m: re.Match, defects: list[str]) -> str:
    charset, encoding, text = m.groups()
    raw = text.encode("ascii", "surrogateescape")
    try:
        if encoding in "bB":
            data = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
        else:
            data = binascii.a2b_qp(raw, header=True)
    except (binascii.Error, ValueError):
        defects.append("undecodable encoded word kept as is")
        return m.group(0)
    return decode_bytes(data, charset, defects, "header")


def _header_str(value) -> str:
    """A header value as text: 8-bit bytes (kept by the parser as surrogates) decoded."""
    if value is None:
        return ""
    value = str(value)
    if value.isascii():
        return value
    return decode_bytes(value.encode("utf-8", "surrogateescape"), None, [], "header")


def _unfold(value: str) -> str:
    if "\n" not in value and "\r" not in value:   # the usual one-line value
        return value
    return re.sub(r"[\r\n]+", "", re.sub(r"\r?\n(?=[ \t])", "", value))


def one_line(value: str, limit: int) -> str:
    return re.sub(r"\s+", " ", value).strip()[:limit]


def unflow(text: str, delsp: bool = False) -> str:
    """RFC 3676 format=flowed: join soft-broken lines of the same quote depth."""
    out: list[str] = []
    joining = False
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        content = content[1:] if content.startswith(" ") else content   # space-stuffing
        soft = content.endswith(" ") and content.rstrip() != "--"
        if soft and delsp:
            content = content[:-1]
        if joining and out and out[-1][0] == depth:
            out[-1] = (depth, out[-1][1] + content)
        else:
            out.append((depth, content))
        joining = soft
    return "\n".join(("> " * d if d else "") + c for d, c in out)


# ---- headers ------------------------------------------------------------------

class _Headers:
    """The raw header fields, looked up case-insensitively, in order."""

    def __init__(self, msg: Message, defects: list[str]):
        self.fields: dict[str, list[str]] = {}
        for name, value in msg.raw_items():
            value = str(value)
            if len(value) > MAX_HEADER_CHARS:
                defects.append(f"{name[:40]}: {len(value)} characters, cut")
                value = value[:MAX_HEADER_CHARS]
            if not value.isascii():
                defects.append(f"{name[:40]}: raw 8-bit bytes")
            if "\x00" in value:
                value = _without_nul(value, name[:40], defects)
            self.fields.setdefault(name.lower(), []).append(_unfold(value))

    def all(self, name: str) -> list[str]:
        return self.fields.get(name, [])

    def first(self, name: str) -> str:
        values = self.fields.get(name)
        return values[0] if values else ""

    def text(self, name: str, defects: list[str]) -> str:
        return decode_words(_header_str(self.first(name)), defects)


# Why a fast path: getaddresses walks a header character by character in
# Python and cost a quarter of parse_mail on a typical reply. Nearly every
# real header is a comma-separated list of `addr@dom`, `Name <addr@dom>` or
# `"Quoted Name" <addr@dom>` in plain ASCII; for exactly those the pairs are
# read off a regex, the same as getaddresses (strict or not) plus the
# clean-up below would give. Anything else (encoded words, comments, groups,
# backslashes, empty list elements, non-ASCII, other whitespace, quoted local
# parts, domain literals ...) falls back to getaddresses.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDR = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PHRASE_WORD = r"[!#-'*+\-./0-9=?A-Z^-~]+"      # printable ASCII but ()<>@,:;"[]\ and space
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:(?P<bare>{_SIMPLE_ADDR})"
    rf"|(?:\"(?P<quoted>[ !#-\[\]-~]*)\"|(?P<phrase>{_PHRASE_WORD}(?:[ \t]+{_PHRASE_WORD})*))?"
    rf"[ \t]*<(?P<angle>{_SIMPLE_ADDR})>)[ \t]*")


def _simple_addresses(value: str) -> list[tuple[str, str]] | None:
    """The pairs of a header in the simple forms only; None: let getaddresses decide."""
    if "=?" in value or not value.isascii():
        return None
    pairs, pos, end = [], 0, len(value)
    while True:
        m = _SIMPLE_MAILBOX.match(value, pos)
        if m is None:
            return None
        if m["bare"]:
            pairs.append(("", m["bare"].lower()))
        else:
            name = m["quoted"] if m["quoted"] is not None else " ".join((m["phrase"] or "").split())
            pairs.append((name.strip(), m["angle"].lower()))
        pos = m.end()
        if pos == end:
            return pairs
        if value[pos] != ",":
            return None
        pos += 1


def _addresses(values: list[str], defects: list[str]) -> list[tuple[str, str]]:
    """(display name, lowercased addr-spec) pairs; addresses are never decoded first."""
    if not values:
        return []
    simple = _simple_addresses(", ".join(values))
    if simple is not None:
        return simple
    try:
        pairs = getaddresses(values)
    except Exception:   # RecursionError on deeply nested comments, among others
        defects.append("address header unparseable: addresses picked by pattern")
        pairs = [("", a) for v in values for a in re.findall(r"[^\s<>(),;:\"]+@[^\s<>(),;:\"]+", v)]
    result = []
    for name, addr in pairs:
        addr = _header_str(addr).strip().lower()
        if "@" in addr.strip("@"):
            result.append((decode_words(_header_str(name), defects).strip(), addr))
    return result


def _mailbox(value: str, label: str, defects: list[str]) -> tuple[str | None, str]:
    """The one mailbox of From or Sender. With "a@x <b@y>" the angle address wins."""
    if not value.strip():
        return None, ""
    pairs = _addresses([value], defects)
    angle = [] if len(pairs) == 1 else re.findall(r"<\s*([^<>\s]+@[^<>\s]+)\s*>", value)
    if len(angle) == 1:
        defects.append(f"{label}: ambiguous mailbox, took the <address>")
        name = value[: value.find("<")].strip().strip('"').strip()
        return _header_str(angle[0]).lower(), decode_words(_header_str(name), defects)
    if not pairs:
        defects.append(f"{label}: no address")
        return None, ""
    if len(pairs) > 1:
        defects.append(f"{label}: {len(pairs)} mailboxes, took the first")
    return pairs[0][1], pairs[0][0]


_ID = re.compile(r"<([^<>]+)>")


def normalise_message_id(value: str) -> str | None:
    ids = message_ids(value)
    return ids[0] if ids else None


def message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs in a header, each as "<id@host>" without inner whitespace."""
    value = _header_str(value)      # RFC 6532 ids are UTF-8; raw 8-bit bytes came as surrogates
    found = [re.sub(r"\s+", "", m) for m in _ID.findall(value)]
    if not found:   # bare ids from sloppy mailers
        found = [t.strip("<>,;\"'") for t in value.split() if "@" in t]
    ids = [f"<{i}>" for i in found if i]
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    return tuple(ids)


def _date(value: str, defects: list[str]) -> datetime | None:
    if not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except Exception:
        defects.append("Date: unparseable")
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except (OverflowError, ValueError):
        defects.append("Date: out of range")
        return None
