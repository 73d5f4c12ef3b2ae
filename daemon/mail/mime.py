"""Writing MIME: the bytes of an outgoing mail, built directly and safely.

Why not `email.message.EmailMessage`: building and flattening one
notification with it takes 3–6 ms (the header registry parses every value it
is given, then refolds it), more than sending it takes; this writer needs a
tenth of that, and the benchmark depends on it. It writes only what we send:
UTF-8 text as quoted-printable, files as base64, multiparts, one attached
message — and it never lets a value break out of its header:

- every header value is cleaned first: CR, LF and other control characters
  (also U+2028/U+2029/U+0085) become a space, so a name or subject with a line
  break in it cannot start a header of its own;
- non-ASCII text (and text that looks like an encoded word) becomes RFC 2047
  base64 encoded words; an ASCII display name is always a quoted string, so
  `Erika <x@evil>, Bob` stays one name of one address;
- addresses must be plain `local@domain`, or `BadAddress` is raised;
- file names are RFC 2231-encoded parameters.

Line endings are CRLF (the wire form); maildir delivery turns them into LF.
"""
from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_ADDR_SPEC = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_PARAM_SAFE = re.compile(r"^[\x20-\x7e]*$")
_BLANKS = re.compile(r"[ \t]+")
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")
_FROM_LINE = re.compile(rb"^From ", re.MULTILINE)
_ATTR_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
CRLF = "\r\n"
MAX_LINE = 998
WORD_BYTES = 39            # UTF-8 bytes per encoded word: 52 base64 chars, 64 in all


class BadAddress(ValueError):
    """An address that cannot be written into a header safely."""


def clean(value: object) -> str:
    """One line of text: control characters (CR, LF, …) become one space."""
    return _CONTROL.sub(" ", str(value or "")).strip()


# ---- headers ------------------------------------------------------------------

def address(addr: str, name: str = "") -> str:
    """`"Name" <local@domain>`, the name quoted or encoded, the address checked."""
    addr = addr.strip()
    if not _ADDR_SPEC.match(addr) or len(addr) > 320:
        raise BadAddress(f"not a plain mail address: {clean(addr)[:80]!r}")
    name = clean(name)
    if not name:
        return f"<{addr}>"
    return f"{_phrase(name)} <{addr}>"


def _phrase(name: str) -> str:
    if name.isascii() and "=?" not in name:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return " ".join(_encoded_words(name))


def header(name: str, value: str) -> str:
    """`Name: value` for unstructured text, cleaned, encoded and folded."""
    words = _words(value)
    plain = " ".join(words)
    if plain.isascii() and "=?" not in plain and all(len(w) < 900 for w in words):
        return _fold(name, words)
    return _fold(name, _encoded_words(plain))


def raw_header(name: str, value: str) -> str:
    """A structured value we built ourselves (addresses, ids, parameters)."""
    return _fold(name, _words(value))


def _words(value: str) -> list[str]:
    """Split at spaces and tabs only: a no-break space stays inside its word."""
    return [w for w in _BLANKS.split(clean(value)) if w]


def _encoded_words(text: str) -> list[str]:
    words, chunk, size = [], [], 0
    for char in text:
        n = len(char.encode("utf-8"))
        if size + n > WORD_BYTES:
            words.append(_word("".join(chunk)))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    if chunk:
        words.append(_word("".join(chunk)))
    return words


def _word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


def _fold(name: str, words: list[str]) -> str:
    """Fold between words so lines stay within 78 characters where words allow."""
    lines, line = [], f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = f" {word}"
        else:
            line = f"{line} {word}"
    lines.append(line)
    return CRLF.join(lines)


def param(name: str, value: str) -> str:
    """A MIME parameter; RFC 2231 (`name*=utf-8''…`) when it is not plain ASCII."""
    value = clean(value)
    if _PARAM_SAFE.match(value) and '"' not in value and "\\" not in value:
        return f'{name}="{value}"'
    encoded = "".join(chr(b) if chr(b) in _ATTR_CHARS else f"%{b:02X}" for b in value.encode("utf-8"))
    return f"{name}*=utf-8''{encoded}"


# ---- parts --------------------------------------------------------------------

@dataclass
class Part:
    """A MIME entity: header lines and either a body or child parts."""
    headers: list[str]
    body: bytes = b""
    children: list["Part"] = field(default_factory=list)
    boundary: str = ""

    def to_bytes(self) -> bytes:
        head = CRLF.join(self.headers).encode("ascii") + b"\r\n\r\n"
        if not self.children:
            return head + self.body
        mark = self.boundary.encode("ascii")
        pieces = [head]
        for child in self.children:
            pieces += [b"--", mark, b"\r\n", child.to_bytes(), b"\r\n"]
        pieces += [b"--", mark, b"--\r\n"]
        return b"".join(pieces)


def text(content: str, subtype: str = "plain") -> Part:
    """UTF-8 text as quoted-printable (readable, 7-bit, long lines soft-broken)."""
    data = _ANY_NEWLINE.sub(b"\r\n", content.encode("utf-8"))
    qp = binascii.b2a_qp(data, istext=True)
    qp = _FROM_LINE.sub(b"=46rom ", qp)   # no mbox "From " line survives a maildir copy
    return Part([f'Content-Type: text/{subtype}; charset="utf-8"',
                 "Content-Transfer-Encoding: quoted-printable"], qp)


def binary(data: bytes, content_type: str, filename: str, *, inline_id: str | None = None) -> Part:
    """A file as base64: an attachment, or an inline image with its Content-ID."""
    ctype = content_type if re.fullmatch(r"[\w.+-]+/[\w.+-]+", content_type or "") else "application/octet-stream"
    name = safe_filename(filename)
    disposition = "inline" if inline_id else "attachment"
    headers = [raw_header("Content-Type", f"{ctype}; {param('name', name)}"),
               raw_header("Content-Disposition", f"{disposition}; {param('filename', name)}"),
               "Content-Transfer-Encoding: base64"]
    if inline_id:
        headers.append(raw_header("Content-ID", f"<{inline_id}>"))
    return Part(headers, base64.encodebytes(data).replace(b"\n", b"\r\n"))


def message(raw: bytes, filename: str = "original.eml") -> Part:
    """A received mail attached as message/rfc822 — as base64 .eml if it has lines too long for that."""
    data = _ANY_NEWLINE.sub(b"\r\n", raw)
    if any(len(line) > MAX_LINE for line in data.split(b"\r\n")):
        return binary(raw, "application/octet-stream", filename)
    cte = "7bit" if data.isascii() else "8bit"
    return Part(["Content-Type: message/rfc822",
                 raw_header("Content-Disposition", f"attachment; {param('filename', filename)}"),
                 f"Content-Transfer-Encoding: {cte}"], data)


def multipart(subtype: str, children: list[Part]) -> Part:
    """Several parts; a single child needs no wrapper and is returned as it is."""
    if len(children) == 1:
        return children[0]
    boundary = "=_om_" + secrets.token_hex(12)
    return Part([f'Content-Type: multipart/{subtype}; boundary="{boundary}"'], children=children,
                boundary=boundary)


def safe_filename(name: str) -> str:
    name = clean(name).replace("/", "_").replace("\\", "_").lstrip(".") or "file"
    return name[-120:]


def document(headers: list[str], root: Part) -> bytes:
    """The whole mail: our header lines, MIME-Version, then the root part."""
    top = Part(headers + ["MIME-Version: 1.0"] + root.headers, root.body, root.children, root.boundary)
    return top.to_bytes()
