"""Cut a customer's e-mail reply down to what the customer actually wrote.

When a customer answers a shop notification from their mail client, the client
appends the shop's mail (quoted with ">", under an "On ... wrote:" line, or
below an Outlook "From: / Sent: / To: / Subject:" block), a "-- " signature and
mobile boilerplate such as "Sent from my iPhone". The order log must keep only
the customer's own words, in German, English and French mails alike.

How it works (the design of Discourse's email_reply_trimmer, re-implemented):
every line is first classified on its own -- empty, text, ">"-quote, quote
header ("Am ... schrieb ...:", also wrapped over up to three lines), mail
header block, delimiter, mobile signature -- and the cut is then decided on
the *pattern* of classes rather than by one regex over the whole text. That
survives clients that wrap the quote header, drop the separator line or put
blank lines in odd places. The rules, in order:

1. Everything from the first delimiter on is cut: "-- " signature, "____"
   Outlook separator, "-----Original Message-----" / "Ursprüngliche Nachricht"
   / "Message d'origine", "Begin forwarded message:" ... A plain rule such as
   "---" or "====" only counts as a delimiter when quoted matter, headers or
   the end of the mail follow it, so customers may still use it as a divider.
2. Mobile signature lines ("Von meinem iPhone gesendet", "Envoyé de mon
   iPhone", "Gesendet von Outlook für Android", ...) are dropped wherever they
   are: a whole line of such boilerplate is never the customer's text.
3. A quote header or header block followed by *unquoted* text marks the start
   of the original mail pasted as is (Outlook, Gmail's HTML conversion): cut
   there.
4. Trailing quotes, quote headers and header blocks are cut (top-posting, the
   common case).
5. Inline answers: if, after that, quoted lines still stand *after* the first
   line of customer text, the customer answered between the quotes. We then
   keep the whole remaining text, quotes included: the answers ("Yes", "Size
   M") make no sense without the questions they answer, and telling the
   customer's lines from the shop's is exactly what the ">" marks already do
   for a human reader. If quotes only stand *before* the customer's text
   (bottom-posting), the leading quote is cut.
6. A lone "-Name" sign-off line closing the text is dropped.

If nothing would be left (the customer sent the quote back without writing,
or the mail is all signature), the untrimmed text is returned instead: we never
turn a customer's mail into an empty log entry.

html_to_text() renders HTML-only replies as plain text in the shape the
trimmer expects (blockquote -> "> " lines, links as "text <url>"). It is a
small renderer on the standard library's HTMLParser: html2text is GPL, and the
permissive converters write Markdown links or drop the quote marks.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["TrimmedReply", "trim_reply", "html_to_text"]


@dataclass(frozen=True)
class TrimmedReply:
    text: str  # what the customer wrote, stripped of trailing blank lines
    trimmed: bool  # True when something was cut


# Line classes, one character each as in Discourse's trimmer: joined, a
# mail's classes read as a short pattern ("tebeqq"), handy when debugging.
EMPTY = "e"
TEXT = "t"
QUOTE = "q"
QUOTE_HEADER = "b"  # "On ... wrote:" and its translations
MAIL_HEADER = "h"  # a line of an Outlook-style "From: ... Subject:" block
DELIMITER = "d"  # everything below is not the customer's
WEAK_DELIMITER = "w"  # "----": a delimiter only if quoted matter follows
SIGNATURE = "s"  # mobile client boilerplate

# ---------------------------------------------------------------------------
# Regex tables
# ---------------------------------------------------------------------------

# A quote header always carries a clock time or a year; requiring one keeps
# sentences like "On my order you wrote:" from being taken for a header.
_DATE = r"(?=.*(?:\d{1,2}[:.h]\d{2}|\b(?:19|20)\d{2}\b))"

# Headers that start with a fixed word: "On/Am/Le <date> ... wrote:".
_ANCHORED_QUOTE_HEADERS = tuple(
    re.compile(p)
    for p in (
        rf"^-*\s*(?:On|At)\s{_DATE}.{{4,300}}?\b(?:wrote|writes)(?:\s*:|\s+-+)\s*$",
        rf"^-*\s*Am\s{_DATE}.{{4,300}}?\b(?:schrieb|geschrieben)\b.{{0,200}}:\s*$",
        rf"^-*\s*Le\s{_DATE}.{{4,300}}?\ba\s+écrit\s*:\s*$",
        r"^Zitat von .{1,200}@.{1,200}:\s*$",
    )
)

# Headers that start with the sender's name. They may also match a window
# that begins with a line of customer text, so they only count when no
# shorter window ending on the same line matched.
_UNANCHORED_QUOTE_HEADERS = tuple(
    re.compile(p)
    for p in (
        # "Shop <x@y> schrieb am Di., 3. März 2026, 10:15:"
        rf"^.{{1,200}}?\b(?:wrote on|schrieb am|a écrit le)\s{_DATE}.{{1,200}}:\s*$",
        # "Shop <orders@shop.example> wrote:"
        r"^.{0,200}?[\w.+-]+@[\w-]+(?:\.[\w-]+)+.{0,80}?\b(?:wrote|schrieb|a\s+écrit)\s*:\s*$",
        # Gmail: "2016-03-03 17:21 GMT+01:00 Shop <orders@shop.example>:"
        r"^.{0,60}?\b(?:19|20)\d{2}\b.{1,120}<[^<>@\s]+@[^<>\s]+>:\s*$",
    )
)

# A wrapped quote header never continues on a line that starts a new one.
_QUOTE_HEADER_START = re.compile(r"^-*\s*(?:On|At|Am|Le|Zitat von)\s")

_FORWARD_MARKERS = (
    re.compile(
        r"^[\s*]*-{2,}\s*(?:Original Message|Forwarded Message|Reply Message"
        r"|Ursprüngliche Nachricht|Original-Nachricht|Originalnachricht"
        r"|Weitergeleitete Nachricht|Message d'origine|Message d’origine"
        r"|Message original|Message transféré|Courriel original)\s*-{2,}[\s*]*$",
        re.IGNORECASE,
    ),
    re.compile(
        r"^(?:Begin forwarded message|Anfang der weitergeleiteten Nachricht"
        r"|Début du message (?:réexpédié|transféré))\s*:\s*$",
        re.IGNORECASE,
    ),
)

# "-- " is the standard signature delimiter; runs of "_" are Outlook's and
# the mailing lists' separators. Both always end the customer's text.
_STRONG_DELIMITER = re.compile(r"^(?:--|_{2,})$")
_WEAK_DELIMITER = re.compile(r"^(?:[-=*~—–_]\s?){3,}$|^[—–]$")

_MAIL_HEADER = re.compile(
    r"^[\s*]*(?P<key>From|Sent|Date|To|Cc|Bcc|Subject|Reply-To"
    r"|Von|Gesendet|Datum|An|Kopie|Betreff|Antwort an"
    r"|De|Envoyé|À|A|Cci|Objet|Répondre à|Expéditeur|Destinataire|Date d'envoi)"
    r"[\s*]*:[\s*]*(?P<value>.*)$",
    re.IGNORECASE,
)
_FROM_KEYS = frozenset({"from", "von", "de", "expéditeur"})
_DATE_KEYS = frozenset({"sent", "date", "gesendet", "datum", "envoyé", "date d'envoi"})

# Mail apps and devices named in mobile signatures.
_APP = (
    r"(?:iPhone|iPad|iPod|Android|BlackBerry|Outlook|Mail|Gmail|Yahoo|AOL|Proton"
    r"|ProtonMail|Samsung|Galaxy|Huawei|Xiaomi|Pixel|Motorola|Nokia|Fairphone"
    r"|mobile|Mobilgerät|Mobiltelefon|Handy|Smartphone|Thunderbird|K-9|FairEmail"
    r"|BlueMail|Spark|Airmail|Edison|Tuta|Tutanota|GMX|WEB\.DE|T-Online|Telekom"
    r"|iCloud|Windows|Fastmail|Zoho|Mailbird|Canary|Superhuman)"
)
_WORDS = r"[\w®™&'’.+-]+(?: [\w®™&'’.+-]+){0,4}"
# At most one word (an article or brand) before the app, then a short tail
# without sentence punctuation: "Sent from Yahoo Mail on Android".
_APP_PHRASE = rf"(?:[\w.'’-]+ )?{_APP}\b[^,;!?]{{0,40}}"

_MOBILE_SIGNATURES = tuple(
    re.compile(p + r"\.?$", re.IGNORECASE)
    for p in (
        # English
        rf"^[(<]*Sent from my {_WORDS}[)>]*",
        rf"^[(<]*Sent (?:from|via|with|using) {_APP_PHRASE}",
        r"^Get Outlook for (?:iOS|Android)",
        # German
        rf"^Von meine[mnr]? {_WORDS} gesendet",
        rf"^(?:Gesendet|Versendet) (?:von|vom|mit|über|aus) (?:meine[mnr]? {_WORDS}|{_APP_PHRASE})",
        r"^Diese Nachricht wurde von .{1,80} gesendet",
        r"^(?:Outlook für (?:iOS|Android) (?:herunterladen|beziehen)"
        r"|Holen Sie sich Outlook für (?:iOS|Android))",
        # French
        rf"^Envoy[ée] (?:de|depuis|à partir de|à partir d[’']|avec|via|par) "
        rf"(?:(?:mon|ma) {_WORDS}|{_APP_PHRASE})",
        r"^(?:Télécharger|Téléchargez|Obtenir|Obtenez) Outlook pour (?:iOS|Android)",
        r"^Provenance : Courrier pour Windows.{0,20}",
    )
)

# Links that mail clients glue to signatures: "<https://aka.ms/...>", "[url]".
_LINK_TAIL = re.compile(r"\s*(?:<(?:https?|mailto):[^>]*>|\[(?:https?|mailto):[^\]]*\])")
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")

# "-Abhishek Kona": a closing name line, at most three words.
_SIGN_OFF = re.compile(r"^(?:-|[–—] ?)[^\W\d_][\w.'’-]*(?: [^\W\d_][\w.'’-]*){0,2}$")

_DIGIT = re.compile(r"\d")

_INVISIBLE = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_ODD_SPACES = re.compile(r"[\u00a0\u2007\u202f\t]")

# Longest (joined) line worth testing for a header; bounds the regex work on
# pathological one-line mails.
_MAX_HEADER_LENGTH = 400
_MAX_SIGNATURE_LENGTH = 120


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def trim_reply(text: str) -> TrimmedReply:
    """Return what the customer wrote in a plain-text reply."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    untrimmed = _tidy(lines)
    if not untrimmed:
        return TrimmedReply("", False)
    kept = _tidy(_trim(lines, _classify(lines)))
    if not kept:
        # Nothing of the customer's own was found: keep the whole mail rather
        # than log an empty answer.
        return TrimmedReply(untrimmed, False)
    return TrimmedReply(kept, kept != untrimmed)


def html_to_text(html: str) -> str:
    """Render an HTML mail body as plain text the way a mail client would."""
    renderer = _HtmlRenderer()
    renderer.feed(html)
    renderer.close()
    return renderer.text()


# ---------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------


def _normalise(line: str) -> str:
    """The line as the matchers see it: NFC, plain spaces, no invisible marks."""
    if line.isascii():
        # Most lines, and cheap: ASCII is NFC already, and of the invisible
        # marks and odd spaces below only the tab is ASCII.
        return line.replace("\t", " ").strip()
    line = unicodedata.normalize("NFC", line)
    return _ODD_SPACES.sub(" ", _INVISIBLE.sub("", line)).strip()


def _classify(lines: list[str]) -> list[str]:
    norm = [_normalise(line) for line in lines]
    # ">" lines are the bulk of a reply: classed here without a call
    classes = [QUOTE if line[:1] == ">" else _line_class(line) for line in norm]
    _mark_quote_headers(norm, classes)
    _resolve_header_blocks(norm, classes)
    _resolve_weak_delimiters(classes)
    _absorb_wrapped_quote_lines(norm, classes)
    return classes


def _line_class(line: str) -> str:
    if not line:
        return EMPTY
    if line.startswith(">"):
        return QUOTE
    if _STRONG_DELIMITER.match(line) or any(r.match(line) for r in _FORWARD_MARKERS):
        return DELIMITER
    if _WEAK_DELIMITER.match(line):
        return WEAK_DELIMITER
    if _is_mobile_signature(line):
        return SIGNATURE
    if _MAIL_HEADER.match(line):
        return MAIL_HEADER
    return TEXT


def _is_mobile_signature(line: str) -> bool:
    if len(line) > _MAX_SIGNATURE_LENGTH:
        return False
    bare = _LINK_TAIL.sub("", _MARKDOWN_LINK.sub(r"\1", line)).strip()
    return any(r.match(bare) for r in _MOBILE_SIGNATURES)


def _mark_quote_headers(norm: list[str], classes: list[str]) -> None:
    """Mark "On ... wrote:" lines, joining headers wrapped over up to 3 lines.

    Windows are tried ending on each text line, shortest first, so that a
    wrapped header swallows no line of the customer's text above it.
    """
    marked: set[int] = set()
    for end, cls in enumerate(classes):
        if cls != TEXT:
            continue
        shorter_matched = False
        for start in range(end, max(end - 3, -1), -1):
            if not _can_join(norm, classes, start, end):
                break
            joined = " ".join(norm[start : end + 1])
            if len(joined) > _MAX_HEADER_LENGTH:
                break
            if any(r.match(joined) for r in _ANCHORED_QUOTE_HEADERS) or (
                not shorter_matched and any(r.match(joined) for r in _UNANCHORED_QUOTE_HEADERS)
            ):
                marked.update(range(start, end + 1))
                shorter_matched = True
    for index in marked:
        classes[index] = QUOTE_HEADER


def _can_join(norm: list[str], classes: list[str], start: int, end: int) -> bool:
    # The first line of the window is new; the others were checked already.
    if classes[start] != TEXT:
        return False
    return start == end or not _QUOTE_HEADER_START.match(norm[start + 1])


def _resolve_header_blocks(norm: list[str], classes: list[str]) -> None:
    """Keep MAIL_HEADER only for real header blocks; lone ones are text."""
    if MAIL_HEADER not in classes:   # the usual case: spare the walk
        return
    index = 0
    while index < len(classes):
        if classes[index] != MAIL_HEADER:
            index += 1
            continue
        last = _header_run_end(classes, index)
        block = _is_header_block(
            [norm[i] for i in range(index, last + 1) if classes[i] == MAIL_HEADER]
        )
        for i in range(index, last + 1):
            if block:
                classes[i] = MAIL_HEADER
            elif classes[i] == MAIL_HEADER:
                classes[i] = TEXT
        index = last + 1


def _header_run_end(classes: list[str], first: int) -> int:
    """Last header line of a run; up to two wrapped or blank lines may interrupt it."""
    last, gap = first, 0
    for index in range(first + 1, len(classes)):
        if classes[index] == MAIL_HEADER:
            last, gap = index, 0
        elif classes[index] in (EMPTY, TEXT) and gap < 2:
            gap += 1
        else:
            break
    return last


def _is_header_block(header_lines: list[str]) -> bool:
    # "From: Berlin / To: Munich" in a customer's text is no header block:
    # require a sender plus a date, an address or a third header.
    fields = [_MAIL_HEADER.match(line) for line in header_lines]
    keys = {f["key"].lower() for f in fields}
    if not keys & _FROM_KEYS or len(keys) < 2:
        return False
    has_address = any("@" in f["value"] for f in fields)
    has_date = any(f["key"].lower() in _DATE_KEYS and _DIGIT.search(f["value"]) for f in fields)
    return len(keys) >= 3 or has_address or has_date


def _resolve_weak_delimiters(classes: list[str]) -> None:
    """A "----" line cuts only if what follows is not the customer's text."""
    if WEAK_DELIMITER not in classes:   # the usual case: spare the walk
        return
    next_class = None  # class of the next non-empty line, scanning upwards
    for index in range(len(classes) - 1, -1, -1):
        if classes[index] == WEAK_DELIMITER:
            classes[index] = TEXT if next_class == TEXT else DELIMITER
        if classes[index] != EMPTY:
            next_class = classes[index]


def _absorb_wrapped_quote_lines(norm: list[str], classes: list[str]) -> None:
    """Re-quote a line that a client's re-wrapping pushed out of a quote.

    "> a long quoted sentence that was\\nwrapped here\\n> next quoted line":
    the middle line continues the quote; taking it for an inline answer would
    keep the whole quote.
    """
    for index in range(1, len(classes) - 1):
        if classes[index] != TEXT or classes[index - 1] != QUOTE or classes[index + 1] != QUOTE:
            continue
        above = norm[index - 1].lstrip("> ")
        if len(above) >= 50 and not above.endswith((".", "?", "!", ":")) and norm[index][0].islower():
            classes[index] = QUOTE


# ---------------------------------------------------------------------------
# Trimming on the class pattern
# ---------------------------------------------------------------------------


def _trim(lines: list[str], classes: list[str]) -> list[str]:
    lines, classes = _cut_at_delimiter(lines, classes)
    lines, classes = _drop_signatures(lines, classes)
    lines, classes = _cut_at_unquoted_original(lines, classes)
    lines, classes = _cut_trailing_quotes(lines, classes)
    if TEXT not in classes:
        return []
    lines, classes = _cut_leading_quote(lines, classes)
    return _drop_sign_off(lines, classes)


def _cut_at_delimiter(lines, classes):
    if DELIMITER in classes:
        index = classes.index(DELIMITER)
        return lines[:index], classes[:index]
    return lines, classes


def _drop_signatures(lines, classes):
    if SIGNATURE not in classes:
        return lines, classes
    kept = [(line, cls) for line, cls in zip(lines, classes) if cls != SIGNATURE]
    return [line for line, _ in kept], [cls for _, cls in kept]


def _cut_at_unquoted_original(lines, classes):
    # A quote header or header block directly followed by unquoted text: the
    # original mail was pasted below it without ">" marks.
    if QUOTE_HEADER not in classes and MAIL_HEADER not in classes:
        return lines, classes
    marker = None
    for index, cls in enumerate(classes):
        if cls in (QUOTE_HEADER, MAIL_HEADER):
            marker = index if marker is None else marker
        elif cls == TEXT and marker is not None:
            return lines[:marker], classes[:marker]
        elif cls != EMPTY:
            marker = None
    return lines, classes


def _cut_trailing_quotes(lines, classes):
    end = len(classes)
    while end and classes[end - 1] in (QUOTE, QUOTE_HEADER, MAIL_HEADER, EMPTY):
        end -= 1
    return lines[:end], classes[:end]


def _cut_leading_quote(lines, classes):
    # Quotes after the first text line mean inline answers: keep everything
    # (see the module docstring). Otherwise the customer wrote below the
    # quote and the quote above goes.
    first_text = classes.index(TEXT)
    if any(cls in (QUOTE, QUOTE_HEADER, MAIL_HEADER) for cls in classes[first_text:]):
        return lines, classes
    return lines[first_text:], classes[first_text:]


def _drop_sign_off(lines, classes):
    """Drop a final "-Name" line that stands alone after a blank line."""
    last = len(classes) - 1
    while last >= 0 and classes[last] == EMPTY:
        last -= 1
    lone = last >= 2 and classes[last - 1] == EMPTY and TEXT in classes[: last - 1]
    if lone and _SIGN_OFF.match(_normalise(lines[last])):
        return lines[:last]
    return lines


def _tidy(lines: list[str]) -> str:
    """Join lines without trailing spaces and without surrounding blank lines."""
    return "\n".join(line.rstrip() for line in lines).strip("\n")


# ---------------------------------------------------------------------------
# HTML rendering
# ---------------------------------------------------------------------------

_COLLAPSIBLE_SPACE = re.compile(r"[ \t\n\r\f]+")
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_SKIPPED_TAGS = frozenset({"head", "style", "script", "title", "template", "noscript"})
_LINE_BLOCKS = frozenset(
    {
        "div", "tr", "table", "ul", "ol", "li", "dl", "dt", "dd", "section",
        "article", "header", "footer", "address", "center", "form", "fieldset",
        "figure", "figcaption", "nav", "aside", "main", "caption", "tbody",
    }
)
_PARAGRAPH_BLOCKS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})
# Outlook's own plain-text rendering of the rule above a quoted header block.
_HORIZONTAL_RULE = "_" * 32


def _bare_url(url: str) -> str:
    """A URL as a reader compares it: without scheme and trailing slash."""
    return _URL_SCHEME.sub("", url.strip()).rstrip("/").lower()


class _HtmlRenderer(HTMLParser):
    """Plain-text rendering: blocks -> lines, blockquote -> "> ", a -> "text <url>"."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._lines: list[tuple[int, str]] = []  # (quote depth, text)
        self._parts: list[str] = []  # pieces of the line being written
        self._line_depth = 0
        self._depth = 0  # blockquote nesting
        self._pending = 0  # 1: start a new line, 2: leave a blank line
        self._skip = 0  # inside <style>, <script>, ...
        self._pre = 0
        self._lists: list[int | None] = []  # None for <ul>, next number for <ol>
        self._link: tuple[str, list[str]] | None = None  # href, text seen

    # -- parser callbacks --------------------------------------------------

    def handle_starttag(self, tag, attrs):
        if tag in _SKIPPED_TAGS:
            self._skip += 1
        elif self._skip:
            return
        elif tag == "br":
            self._line_break()
        elif tag == "blockquote":
            self._flush_pending()  # blank lines before the quote stay outside it
            self._end_line()
            self._depth += 1
        elif tag == "hr":
            self._block(1)
            self._write(_HORIZONTAL_RULE)
            self._block(1)
        elif tag == "a":
            self._link = (dict(attrs).get("href") or "", [])
        elif tag == "img":
            self._write_data(dict(attrs).get("alt") or "")
        elif tag in ("ul", "ol"):
            self._block(1)
            self._lists.append(1 if tag == "ol" else None)
        elif tag == "li":
            self._list_item()
        elif tag in ("td", "th"):
            self._cell_gap()
        else:
            self._open_block(tag)

    def handle_endtag(self, tag):
        if tag in _SKIPPED_TAGS:
            self._skip = max(self._skip - 1, 0)
        elif self._skip:
            return
        elif tag == "blockquote":
            self._end_line()
            self._depth = max(self._depth - 1, 0)
            self._block(1)
        elif tag == "a":
            self._close_link()
        elif tag in ("ul", "ol"):
            if self._lists:
                self._lists.pop()
            self._block(1)
        elif tag == "pre":
            self._pre = max(self._pre - 1, 0)
            self._block(2)
        elif tag in _PARAGRAPH_BLOCKS:
            self._block(2)
        elif tag in _LINE_BLOCKS:
            self._block(1)

    def handle_startendtag(self, tag, attrs):
        # <br/>, <img/>, <hr/>: void elements have no end to handle.
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        if self._skip:
            return
        if self._link is not None:
            self._link[1].append(data)
        if self._pre:
            self._write_pre(data)
        else:
            self._write_data(data)

    # -- building lines ----------------------------------------------------

    def _open_block(self, tag: str) -> None:
        if tag == "pre":
            self._pre += 1
            self._block(2)
        elif tag in _PARAGRAPH_BLOCKS:
            self._block(2)
        elif tag in _LINE_BLOCKS:
            self._block(1)

    def _list_item(self) -> None:
        self._block(1)
        indent = "  " * max(len(self._lists) - 1, 0)
        if self._lists and self._lists[-1] is not None:
            self._write(f"{indent}{self._lists[-1]}. ")
            self._lists[-1] += 1
        else:
            self._write(f"{indent}- ")

    def _cell_gap(self) -> None:
        if self._parts and not self._parts[-1].endswith(" "):
            self._parts.append(" ")

    def _close_link(self) -> None:
        if self._link is None:
            return
        href, seen = self._link
        self._link = None
        shown = _COLLAPSIBLE_SPACE.sub(" ", "".join(seen)).strip()
        target = href[7:] if href.lower().startswith("mailto:") else href
        # Only real targets the reader could follow; a link without text
        # (a logo, a tracking pixel) is dropped with its image.
        if shown and target and not href.startswith(("#", "javascript:", "cid:")):
            if _bare_url(target) != _bare_url(shown):
                self._write(f" <{target}>")

    def _write_data(self, data: str) -> None:
        text = _COLLAPSIBLE_SPACE.sub(" ", data)
        if self._pending or not self._parts or self._parts[-1].endswith(" "):
            text = text.lstrip(" ")  # HTML drops spaces at a line's start
        self._write(text)

    def _write_pre(self, data: str) -> None:
        for number, piece in enumerate(data.split("\n")):
            if number:
                self._line_break()
            self._write(piece)

    def _write(self, text: str) -> None:
        if not text:
            return
        self._flush_pending()
        if not self._parts:
            self._line_depth = self._depth
        self._parts.append(text)

    def _block(self, breaks: int) -> None:
        self._pending = max(self._pending, breaks)

    def _flush_pending(self) -> None:
        if not self._pending:
            return
        wanted_blank = self._pending - 1
        self._pending = 0
        if not self._lines and not self._parts:
            return  # no blank lines at the top
        self._end_line()
        blanks = 0
        while blanks < len(self._lines) and not self._lines[-1 - blanks][1]:
            blanks += 1
        for _ in range(wanted_blank - blanks):
            self._lines.append((self._depth, ""))

    def _end_line(self) -> None:
        if self._parts:
            self._lines.append((self._line_depth, "".join(self._parts)))
            self._parts = []

    def _line_break(self) -> None:
        self._flush_pending()
        if self._parts:
            self._end_line()
        else:
            self._lines.append((self._depth, ""))

    def text(self) -> str:
        self._end_line()
        rendered = []
        for depth, line in self._lines:
            line = _INVISIBLE.sub("", line).replace("\u00a0", " ").rstrip()
            rendered.append((("> " * depth) + line).rstrip())
        # Blank lines in a row carry no meaning in a plain rendering.
        squeezed = [
            line for i, line in enumerate(rendered) if line or i == 0 or rendered[i - 1]
        ]
        return "\n".join(squeezed).strip("\n")
