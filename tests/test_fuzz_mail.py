"""Properties of the mail parser and the reply trimmer, on random MIME trees.

Two kinds of mail are drawn:
- clean trees (multipart/mixed, alternative, related; text in several
  charsets and transfer encodings; HTML; files; encoded-word subjects), whose
  parse must give back exactly what was put in: the text parts in order, the
  HTML, each file's name and bytes, the subject and the sender;
- quirky mails: the same trees spoilt the way real mail is (broken or
  missing boundaries, wrong, unknown and hostile charsets, broken encoded
  words, NULs, bare CRs, 8-bit headers, missing and duplicate headers, huge
  lines, deep nesting, cut short), whose parse must never raise and must
  keep its promises (one-line subject, text without NULs, real Unicode, sizes
  that add up, each attachment fetchable again from the raw bytes).

For both, the big-body shortcut (leaf bodies cut out before parsing) and
feeding in small slices must give the same result as one full parse, and
what the trimmer keeps of the text is a part of it: its lines are lines of
the decoded body, in the same order.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import email.header
import string
from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from daemon.mail import headers, parsing as inbound_mail, parts, tree as mail_tree
from daemon.mail.parsing import InboundMail, attachment_data, parse_mail
from daemon.mail.trimming import trim_reply
from daemon.mail.trimming.shapes import INVISIBLE
from fuzzing import examples


# ---- the trees ------------------------------------------------------------------------

@dataclasses.dataclass
class Leaf:
    headers: list[bytes]
    body: bytes
    kind: str = "attachment"            # "text", "html" or "attachment": what the parse must make of it
    expect: object = None               # the decoded text, or the file's bytes
    filename: str = ""


@dataclasses.dataclass
class Multi:
    headers: list[bytes]
    boundary: bytes
    children: list
    preamble: bytes = b""
    epilogue: bytes = b""
    closed: bool = True


def render(node, eol: bytes = b"\r\n") -> bytes:
    head = eol.join(node.headers) + eol + eol
    if isinstance(node, Leaf):
        return head + node.body
    out = [head, node.preamble]
    for child in node.children:
        out += [b"--" + node.boundary + eol, render(child, eol), eol]
    if node.closed:
        out.append(b"--" + node.boundary + b"--" + eol)
    out.append(node.epilogue)
    return b"".join(out)


def _lines(text: bytes) -> bytes:
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# Text the parser must give back as it was: no NUL (taken out), no CR (line
# ends become "\n"), no lines the MIME structure would read as its own.
body_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                    max_size=120).filter(lambda t: "\n--" not in "\n" + t)
CHARSETS = ["utf-8", "UTF-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252", "koi8-r",
            "shift_jis", "gb2312", "utf-16"]
_ALIASES = {"iso-8859-1": "cp1252", "gb2312": "gb18030", "us-ascii": "ascii"}


def expected_text(data: bytes, charset: str) -> str:
    """The documented reading of a text part's bytes: UTF-16/32 as labelled;
    otherwise non-ASCII bytes that are valid UTF-8 as UTF-8 whatever the
    label; otherwise the label, then Windows-1252, then Latin-1."""
    codec = _ALIASES.get(charset.lower(), charset.lower())
    if codec.startswith("utf-16"):
        return data.decode(codec, "replace")
    if not data.isascii():
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    for candidate in (codec, "cp1252", "latin-1"):
        try:
            return data.decode(candidate)
        except UnicodeDecodeError:
            continue


@st.composite
def text_leaves(draw, subtype: str = "plain") -> Leaf:
    text = draw(body_text)
    charset = draw(st.sampled_from(CHARSETS))
    try:
        data = text.encode(charset)
    except UnicodeEncodeError:
        charset, data = "utf-8", text.encode("utf-8")
    ctes = ["base64"] if charset == "utf-16" else ["7bit", "8bit", "quoted-printable", "base64", None]
    cte = draw(st.sampled_from(ctes))
    if cte in ("7bit", None) and not data.isascii():
        cte = "8bit"
    if cte == "quoted-printable":
        body = _lines(binascii.b2a_qp(data.replace(b"\r\n", b"\n"), istext=charset != "utf-16"))
    elif cte == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    else:
        body = _lines(data)
    headers = [f"Content-Type: text/{subtype}; charset={draw(st.sampled_from([charset, chr(34) + charset + chr(34)]))}".encode()]
    if cte:
        headers.append(f"Content-Transfer-Encoding: {cte}".encode())
    decoded = expected_text(data.replace(b"\r\n", b"\n"), charset).replace("\r\n", "\n")
    return Leaf(headers, body, "text" if subtype == "plain" else "html", decoded)


filenames = st.one_of(st.text(string.ascii_letters + string.digits + "-_. ", min_size=1, max_size=20)
                      .filter(lambda n: n.strip(" .")),
                      st.text(st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF, blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc", "Cf")), min_size=1, max_size=8))


@st.composite
def file_leaves(draw) -> Leaf:
    data = draw(st.binary(max_size=200))
    name = draw(filenames)
    ctype = draw(st.sampled_from(["application/octet-stream", "image/png", "application/pdf", "text/plain"]))
    if name.isascii():
        param = f'filename="{name}"'
    else:
        param = "filename*=utf-8''" + "".join(f"%{b:02X}" for b in name.encode())
    headers = [f"Content-Type: {ctype}".encode(), f"Content-Disposition: attachment; {param}".encode(),
               b"Content-Transfer-Encoding: base64"]
    return Leaf(headers, base64.encodebytes(data).replace(b"\n", b"\r\n"), "attachment", data, name.strip())


boundaries = st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=30) \
    .map(lambda b: ("=_" + b).encode())


def clean_trees(depth: int = 3):
    leaves = st.one_of(text_leaves(), text_leaves("html"), file_leaves())
    if depth == 0:
        return leaves
    return st.one_of(leaves, st.builds(
        lambda subtype, boundary, children: Multi(
            [f'Content-Type: multipart/{subtype}; boundary="{boundary.decode()}"'.encode()], boundary, children),
        st.sampled_from(["mixed", "alternative", "related", "signed", "x-unknown"]),
        boundaries, st.lists(clean_trees(depth - 1), min_size=1, max_size=3)))


def _unique_boundaries(node, seen=None) -> bool:
    """A child whose boundary starts with its parent's would end the parent early."""
    seen = seen if seen is not None else []
    if isinstance(node, Leaf):
        return True
    if any(node.boundary.startswith(b) or b.startswith(node.boundary) for b in seen):
        return False
    return all(_unique_boundaries(child, seen + [node.boundary]) for child in node.children)


def walk(node):
    if isinstance(node, Leaf):
        yield node
    else:
        for child in node.children:
            yield from walk(child)


# ---- the top of a mail ----------------------------------------------------------------

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
subjects = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)
local_parts = st.text(string.ascii_letters + string.digits + ".+_-", min_size=1, max_size=20) \
    .filter(lambda p: not p.startswith(".") and not p.endswith(".") and ".." not in p)


@st.composite
def clean_mails(draw):
    """(raw bytes, tree, from name, from address, subject)."""
    tree = draw(clean_trees().filter(_unique_boundaries))
    name, subject = draw(names), draw(subjects)
    address = draw(local_parts) + "@" + draw(st.sampled_from(["example.org", "Kunde.Example", "x.de"]))
    from_line = b"From: " + (email.header.Header(name, "utf-8").encode().encode() + b" " if name.strip() else b"") \
        + f"<{address}>".encode()
    subject_line = b"Subject: " + email.header.Header(subject, "utf-8", header_name="Subject").encode().encode()
    top = [from_line, b"To: orders@shop.example", subject_line, b"Date: Fri, 27 Nov 2026 10:00:00 +0100",
           b"Message-ID: <fuzz-1@example.org>", b"MIME-Version: 1.0"]
    tree.headers = top + tree.headers
    return render(tree), tree, name, address, subject


# ---- quirks ----------------------------------------------------------------------------

HOSTILE_CHARSETS = ["x-unknown", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "utf-7",
                    "undefined", "", "utf-8\x00", "ISO-2022-JP", "base64", "rot13", "zlib_codec",
                    "utf-32", "utf-16-be", "cp1252\xff", "'utf-8'", "=?utf-8?q?x?="]
QUIRKY_HEADERS = [
    b"Subject: =?utf-8?b?!!!?=", b"Subject: =?x-unknown?q?Gr=FC=DFe?=", b"Subject: =?unicode-escape?q?\\x41?=",
    b"Subject: \xc4rger mit der Lieferung \xff", b"From: a@example.org, b@example.org",
    b"From: <owner@shop.example>@evil.example", b"From: (((((((((((((((((((((((x)))))))))))))))))))))",
    b"From: =?utf-8?b?PGV2aWxAZXhhbXBsZS5vcmc+?= <x@example.org>", b"From:", b"From: undisclosed-recipients:;",
    b"Date: 31 Feb 99999 25:61:61 +9999", b"Date: yesterday", b"Message-ID: <<>>",
    b"Content-Type: multipart/mixed", b"Content-Type: text/plain; charset=\"", b"Content-Type: ;;;",
    b"Content-Transfer-Encoding: x-uuencode", b"Content-Transfer-Encoding: base64 ",
    b"Content-Disposition: attachment; filename*=utf-8''%FF%FE", b"Content-Disposition: inline; filename==?utf-8?b?Li4vLi4vZXRjL3Bhc3N3ZA==?=",
    b"Content-Type: text/plain; format=flowed; delsp=yes", b"X-Header-Without-Colon", b" continuation first",
    b"Subject: a\x00b", b"To: " + b"x" * 3000 + b"@example.org", b"References: " + b"<a@b> " * 300,
    b"Auto-Submitted: auto-replied", b"Content-Type: message/rfc822", b"Content-ID: <>",
    b"From: =?utf-8?q?Eri=0Aka=00?= <erika@example.org>", b"Reply-To: =?x-unknown?b?AAAA?= <\xff@example.org>",
    b'To: "\xc3\xa4" <\xc3\xa4@example.org>, =?utf-8?b?w6Q=?= <b@example.org>', b"Return-Path: <\xff\xfe>",
    b"Delivered-To: \xff@shop.example", b"Message-ID: <\xc3\xa4@x>", b"In-Reply-To: <a@b>\x00 <\xff@c>",
    b"Authentication-Results: \xff; dkim=pass", b"Sender: =?utf-16?b?2D0=?= <s@example.org>",
    b"Subject: =?utf-16?b?2D3eAA==?=", b"Subject: =?utf-8?b?7aCA?=", b"Cc: <@>, @, a@, @b",
]


@st.composite
def quirky_leaf(draw) -> Leaf:
    kind = draw(st.sampled_from(["clean", "bytes", "charset", "cte", "header"]))
    if kind == "clean":
        return draw(st.one_of(text_leaves(), text_leaves("html"), file_leaves()))
    body = draw(st.one_of(st.binary(max_size=200),
                          st.lists(st.sampled_from([b"\x00", b"\r", b"\n", b"\r\n", b"=", b"=\r\n", b"=ZZ",
                                                    b"--", b"\xff\xfe", b"\xc3", b"abc", b"  "]), max_size=40)
                          .map(b"".join)))
    charset = draw(st.sampled_from(HOSTILE_CHARSETS + CHARSETS)).encode("utf-8", "surrogateescape")
    ctype = draw(st.sampled_from([b"text/plain", b"text/html", b"application/octet-stream", b"text/x-unknown"]))
    headers = [b"Content-Type: " + ctype + b"; charset=" + charset]
    cte = draw(st.sampled_from([b"base64", b"quoted-printable", b"8bit", b"x-gzip", b"uuencode", b"7bit"]))
    headers.append(b"Content-Transfer-Encoding: " + cte)
    if kind == "header":
        headers += draw(st.lists(st.sampled_from(QUIRKY_HEADERS), min_size=1, max_size=3))
    return Leaf(headers, body)


def quirky_trees(depth: int = 3):
    leaves = quirky_leaf()
    if depth == 0:
        return leaves
    return st.one_of(leaves, st.builds(
        _quirky_multi, st.data(), boundaries, st.lists(quirky_trees(depth - 1), min_size=0, max_size=3)))


def _quirky_multi(data, boundary: bytes, children: list) -> Multi:
    param = data.draw(st.sampled_from([b'boundary="%s"', b"boundary=%s", b"boundary = \"%s\" ", b"",
                                       b'boundary="%s"; boundary="other"', b'BOUNDARY="%s"'])).replace(b"%s", boundary)
    subtype = data.draw(st.sampled_from([b"mixed", b"alternative", b"related", b"report", b"digest"]))
    node = Multi([b"Content-Type: multipart/" + subtype + b"; " + param], boundary, children)
    node.closed = data.draw(st.booleans())
    node.preamble = data.draw(st.sampled_from([b"", b"This is a multi-part message.\r\n", b"--" + boundary[:3] + b"\r\n"]))
    node.epilogue = data.draw(st.sampled_from([b"", b"trailing garbage\r\n", b"--" + boundary + b"--\r\n"]))
    if children and data.draw(st.booleans()):           # a child under a boundary its parent does not know
        node.boundary = data.draw(st.sampled_from([boundary + b"x", boundary[:-1] or b"y", b"wrong"]))
    return node


def deep_chains():
    """Multiparts and attached messages nested up to 3x deeper than the parser's limit."""
    return st.builds(_chain, st.integers(1, 3 * parts.MAX_DEPTH), st.sampled_from(["multipart", "message"]))


def _chain(depth: int, kind: str) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\nDanke!\r\n"
    for level in range(depth):
        if kind == "message":
            inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
        else:
            mark = b"b%d" % level
            inner = (b"Content-Type: multipart/mixed; boundary=" + mark + b"\r\n\r\n--" + mark + b"\r\n"
                     + inner + b"\r\n--" + mark + b"--\r\n")
    return b"From: a@example.org\r\n" + inner


@st.composite
def quirky_mails(draw) -> bytes:
    tree = draw(quirky_trees())
    top = draw(st.lists(st.sampled_from(QUIRKY_HEADERS + [b"From: Erika <erika@example.org>",
                                                          b"Subject: Re: Bestellung 1042"]), max_size=5))
    tree.headers = top + tree.headers
    raw = render(tree, draw(st.sampled_from([b"\r\n", b"\n", b"\r"])))
    for _ in range(draw(st.integers(0, 3))):
        raw = draw(_byte_quirk(raw))
    return raw


def _byte_quirk(raw: bytes):
    at = st.integers(0, len(raw))
    return st.one_of(
        at.map(lambda i: raw[:i]),                                                   # cut short
        st.tuples(at, st.sampled_from([b"\x00", b"\r", b"\n", b"\xff", b"\r\n\r\n", b"\n--"])).map(
            lambda t: raw[:t[0]] + t[1] + raw[t[0]:]),
        st.just(raw.replace(b"\r\n", b"\n", 3)),                                     # mixed line ends
        st.just(raw + b"\r\n" + b"x" * 100_000 + b"\r\n"),                          # a huge line
        st.just(b"X-Long: " + b"y" * 70_000 + b"\r\n" + raw),                       # a huge header
        st.just(b"From root  Fri Nov 27 10:00:00 2026\n" + raw))                    # an mbox From line


# ---- the promises every parse keeps ------------------------------------------------------

def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def assert_well_formed(mail: InboundMail, raw: bytes) -> None:
    assert isinstance(mail, InboundMail) and mail.size == len(raw)
    assert "\x00" not in mail.text and "\x00" not in mail.subject
    assert "\n" not in mail.subject and "\r" not in mail.subject and len(mail.subject) <= inbound_mail.MAX_SUBJECT
    assert "\n" not in mail.from_name and len(mail.from_name) <= 200
    for value in _strings(mail):
        assert _is_text(value), repr(value)[:200]
    assert mail.from_address is None or "@" in mail.from_address
    for attachment in mail.attachments:
        assert attachment.filename and "/" not in attachment.filename and attachment.size >= 0
        assert attachment.data is None or len(attachment.data) == attachment.size
    assert_trimmed_is_part_of(mail.text)


def _strings(mail: InboundMail):
    """Every text the parse gives: all of it goes to the store, the log or a page."""
    for value in [*dataclasses.astuple(mail), *(a.filename for a in mail.attachments),
                  *(a.content_type for a in mail.attachments)]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, tuple):
            yield from (v for v in value if isinstance(v, str))


def _visible_ends(line: str) -> str:
    return line.rstrip().rstrip(INVISIBLE + " \t").lstrip(INVISIBLE)


def assert_trimmed_is_part_of(text: str) -> None:
    """What the trimmer keeps is a part of the text: each kept line is a line
    of it (without trailing blanks, and without the invisible marks some
    clients put at a line's ends, e.g. U+200B, U+1427), in the same order; a
    text with anything visible in it never becomes empty; `trimmed` says
    whether something was cut."""
    lines = [_visible_ends(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    kept = trim_reply(text)
    if not kept.text:
        assert not any(line.strip() for line in lines)
        return
    position = 0
    for line in kept.text.split("\n"):
        while position < len(lines) and lines[position] != line:
            position += 1
        assert position < len(lines), f"kept line {line!r} is not a line of the text, in order"
        position += 1
    assert kept.trimmed == (kept.text != "\n".join(lines).strip("\n"))


def parse_variants(raw: bytes, cut_min: int, chunk: int) -> tuple[InboundMail, InboundMail]:
    """(the parse as the daemon runs it, the parse with small slices and every body cut)."""
    whole = parse_mail(raw)
    with mock.patch.object(mail_tree, "CUT_MIN", cut_min), \
            mock.patch.object(mail_tree, "FEED_CHUNK", chunk):
        variant = parse_mail(raw)
    return whole, variant


def _comparable(mail: InboundMail) -> dict:
    values = dataclasses.asdict(mail)
    values.pop("defects")        # the order and wording of notes may differ; what was read may not
    return values


# ---- properties ------------------------------------------------------------------------

@examples(ci=100)
@given(clean_mails(), st.integers(1, 200), st.integers(1, 64))
def test_a_clean_mail_gives_back_what_was_put_in(mail_parts, cut_min, chunk):
    raw, tree, name, address, subject = mail_parts
    mail, variant = parse_variants(raw, cut_min, chunk)
    assert_well_formed(mail, raw)
    leaves = list(walk(tree))
    texts = [leaf.expect for leaf in leaves if leaf.kind == "text" and leaf.expect.strip()]
    htmls = [leaf.expect for leaf in leaves if leaf.kind == "html" and leaf.expect.strip()]
    if texts:
        assert mail.text == "\n".join(texts)
    assert mail.html == "\n".join(htmls)
    files = [(leaf.filename, leaf.expect) for leaf in leaves if leaf.kind == "attachment"]
    assert [(a.filename, a.data) for a in mail.attachments] == files
    assert mail.subject == headers.one_line(subject.replace("\x00", ""), inbound_mail.MAX_SUBJECT)
    assert (mail.from_address, mail.from_name) == (address.lower(), headers.one_line(name, 200))
    assert _comparable(variant) == _comparable(mail)


@examples(ci=150)
@given(quirky_mails(), st.integers(1, 200), st.integers(1, 64))
def test_a_quirky_mail_parses_without_raising_and_keeps_its_promises(raw, cut_min, chunk):
    mail, variant = parse_variants(raw, cut_min, chunk)
    assert_well_formed(mail, raw)
    assert _comparable(variant) == _comparable(mail)


@examples(ci=40)
@given(st.one_of(deep_chains(), quirky_mails()), st.integers(0, 300))
def test_every_attachment_can_be_fetched_again_from_the_raw_bytes(raw, keep):
    mail = parse_mail(raw, keep_attachment_bytes=keep)
    assert_well_formed(mail, raw)
    for index, attachment in enumerate(mail.attachments):
        data = attachment_data(raw, index)
        assert len(data) == attachment.size
        assert attachment.data is None or attachment.data == data


@examples(ci=30)
@given(deep_chains())
def test_deep_nesting_degrades_to_what_can_be_read(raw):
    mail = parse_mail(raw)
    assert_well_formed(mail, raw)
    assert mail.from_address == "a@example.org"


# ---- the trimmer on its own ------------------------------------------------------------

CUSTOMER_WORDS = ["Danke", "für", "die", "schnelle", "Lieferung", "bitte", "Größe", "M", "merci", "pour",
                  "la", "commande", "thanks", "the", "teapot", "arrived", "broken", "12", "ok", "ja", "déjà"]
customer_lines = st.lists(st.sampled_from(CUSTOMER_WORDS), min_size=1, max_size=8).map(
    lambda words: " ".join(words).capitalize() + "."
)
QUOTE_HEADERS = ["On Tue, 3 Mar 2026 at 10:15, Teeladen <orders@shop.example> wrote:",
                 "Am 03.03.2026 um 10:15 schrieb Teeladen <orders@shop.example>:",
                 "Le 3 mars 2026 à 10:15, Teeladen <orders@shop.example> a écrit :",
                 "-----Original Message-----\nFrom: Teeladen <orders@shop.example>\nSent: Tuesday, March 3, 2026 10:15\n"
                 "To: Erika <erika@example.org>\nSubject: Ihre Bestellung 1042"]
SIGNATURES = ["", "\n-- \nErika Mustermann\nMusterstraße 1", "\n\nSent from my iPhone", "\n\nVon meinem iPhone gesendet",
              "\n\nEnvoyé de mon iPhone"]
LINE_SOUP = ["> quoted", ">", "-- ", "--", "____", "-----", "Sent from my iPhone", "From: a@b.c", "Sent: 3.3.2026",
             "On Tue, 3 Mar 2026 at 10:15, X <x@y.z> wrote:", "Am 3.3.2026 um 10:15 schrieb", "X <x@y.z>:",
             "-Erika", "", " ", "\t", "\r", "\u00a0", "\u200b", "Danke!", "> > deeper", "Begin forwarded message:"]


@examples(ci=200)
@given(st.one_of(st.text(max_size=300),
                 st.lists(st.one_of(st.sampled_from(LINE_SOUP), st.text(max_size=20)), max_size=25).map("\n".join)))
def test_what_the_trimmer_keeps_is_a_part_of_any_text(text):
    assert_trimmed_is_part_of(text)


@examples(ci=200)
@given(st.lists(customer_lines, min_size=1, max_size=5), st.sampled_from(["\n", "\n\n"]),
       st.sampled_from(SIGNATURES), st.sampled_from(QUOTE_HEADERS),
       st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40), min_size=1, max_size=5))
def test_the_customers_words_above_a_quote_are_kept_and_nothing_else(words, gap, signature, header, quoted):
    text = "\n".join(words) + signature + gap + header + "\n" + "\n".join("> " + q for q in quoted) + "\n"
    kept = trim_reply(text)
    assert kept.text == "\n".join(words) and kept.trimmed
