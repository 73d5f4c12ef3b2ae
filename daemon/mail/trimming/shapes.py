"""The shapes of the lines mail clients add to a reply, tested one line (or one
joined header) at a time.

Each test looks at a line already normalised (`normalise`): NFC, plain spaces,
no invisible marks, stripped. Word lists from `words` only add confidence: a
quote header is recognised by carrying a date or time and a sender, ending in
a colon or in "wrote" (in some language), and standing above a quote; a
mobile signature by being a short line that starts with a "sent" verb and
names a device or "my" something.

Every regex here is either anchored with bounded repetition or only run on
lines under a length cap, so a hostile one-megabyte line costs linear time.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from daemon.mail.trimming import words

# Zero-width and formatting marks some clients leave in or after lines: BOM,
# zero-width space and joiners, word joiner, soft hyphen, direction marks, and
# U+1427 (the "ᐧ" that Gmail add-ons put under a signature).
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u1427"
_INVISIBLE = re.compile(f"[{INVISIBLE}]")
_ODD_SPACES = re.compile(r"[\u00a0\u2007\u2009\u200a\u202f\u3000\t\x0b\x0c]")

# Longest (joined) text tested for a quote header or a header-block line, and
# for a mobile signature: longer lines are the customer's text.
MAX_HEADER_LENGTH = 400
MAX_LABEL_LINE_LENGTH = 300
MAX_SIGNATURE_LENGTH = 100
MAX_DELIMITER_PHRASE_LENGTH = 200


def normalise(line: str) -> str:
    """The line as the tests see it: NFC, plain spaces, no invisible marks, stripped."""
    if line.isascii():
        # Most lines, and cheap: ASCII is NFC, and of the marks above only
        # the tab and two control spaces are ASCII.
        return line.replace("\t", " ").replace("\x0b", " ").replace("\x0c", " ").strip()
    line = unicodedata.normalize("NFC", line)
    return _ODD_SPACES.sub(" ", _INVISIBLE.sub("", line)).strip()


def visible(line: str) -> str:
    """A line as kept in the log: trailing spaces and invisible marks off both ends."""
    return line.rstrip().rstrip(INVISIBLE + " \t").lstrip(INVISIBLE)


def _alternation(entries) -> str:
    """A regex alternation of literal words, longest first (so "napisał(a)" beats "napisał")."""
    return "|".join(re.escape(w) for w in sorted(set(entries), key=len, reverse=True))


# ---------------------------------------------------------------------------
# Quote markers, delimiters
# ---------------------------------------------------------------------------

_QUOTE_MARKS = re.compile(r"^(?:>[ \t]?)+")


def unquoted(line: str) -> str:
    """A quoted line without its ">" marks."""
    return _QUOTE_MARKS.sub("", line).strip()


# "-- " is the standard signature delimiter; runs of "_" are Outlook's and the
# mailing lists' separators. Both always end the customer's text.
_SIGNATURE_DELIMITER = re.compile(r"^(?:--|_{2,})$")
# "----", "====", "*****", a lone dash: a delimiter only if no text follows.
_RULE = re.compile(r"^(?:[-=*~—–_+#•·][ ]?){3,}$|^[—–]$")
# "-----Original Message-----", "-------- Message d'origine --------": a
# phrase between dashes, whatever the language (the words say which kind).
_DASHED_PHRASE = re.compile(r"^\**[ ]*-{2,}[ ]*(?P<phrase>[^\s-].{0,150}?)[ ]*-{2,}[ ]*\**$")
_ORIGINAL_WORDS = re.compile(rf"(?<!\w)(?:{_alternation(words.ORIGINAL_MESSAGE)})(?!\w)", re.IGNORECASE)
_FORWARD_WORDS = re.compile(rf"(?<!\w)(?:{_alternation(words.FORWARDED)})(?!\w)", re.IGNORECASE)


def is_signature_delimiter(line: str) -> bool:
    return _SIGNATURE_DELIMITER.match(line) is not None


def is_rule(line: str) -> bool:
    return len(line) <= MAX_DELIMITER_PHRASE_LENGTH and _RULE.match(line) is not None


def dashed_phrase(line: str) -> str | None:
    """The phrase of a "----- phrase -----" line, or None."""
    if len(line) > MAX_DELIMITER_PHRASE_LENGTH or "--" not in line:
        return None
    match = _DASHED_PHRASE.match(line)
    return match["phrase"] if match else None


def names_original_message(phrase: str) -> bool:
    return _ORIGINAL_WORDS.search(phrase) is not None


def names_forward(phrase: str) -> bool:
    return _FORWARD_WORDS.search(phrase) is not None


def is_forward_intro(line: str) -> bool:
    """ "Begin forwarded message:", "Anfang der weitergeleiteten Nachricht:" ... """
    return (len(line) <= 80 and line.endswith((":", "：")) and not any(c.isdigit() for c in line)
            and "@" not in line and names_forward(line))


# ---------------------------------------------------------------------------
# Dates, senders, the verb "wrote"
# ---------------------------------------------------------------------------

# A clock time, a year, a numeric date or a CJK date. Dot-times ("17.50")
# only after a word that introduces a time, so prices are no dates.
_DATE = re.compile(
    r"(?<!\d)\d{1,2}[:hH]\d{2}(?!\d)"
    r"|(?<![\d.,])(?:19|20)\d{2}(?!\d)"
    r"|(?<!\d)\d{1,2}[./-]\d{1,2}[./-]\d{2,4}(?!\d)"
    r"|\d年|\d月\d{1,2}日")
_DOT_TIME_HINT = re.compile(r"\d\.\d\d")
_DOT_TIME = re.compile(r"(?<!\w)(?:kl|klo|um|at|à|alle|om|o godz)\.? ?\d{1,2}\.\d{2}(?!\d)", re.IGNORECASE)
_ADDRESS = re.compile(r"[\w.+'’-]+@[\w-]+(?:\.[\w-]+)+")
# "Name <a@b.c>", "Name [mailto:a@b.c]", "a@b.c (Name)": a sender, not a bare word.
_MAILBOX = re.compile(r"<[^<>\s]+@[^<>\s]+>|\[mailto:[^\]\s]+\]|mailto:|\([^()\s]+@[^()\s]+\)")
_ENDS_WITH_MAILBOX = re.compile(r"<[^<>\s]+@[^<>\s]+>$")
_WROTE_ANYWHERE = re.compile(rf"(?<!\w)(?:{_alternation(words.WROTE)})(?!\w)", re.IGNORECASE)
_WROTE_AT_END = re.compile(rf"(?<!\w)(?:{_alternation(words.WROTE)})(?:\s*(?:[:：.…]|\.\.\.))?$", re.IGNORECASE)
_INTRO = re.compile(rf"^(?:{_alternation(words.HEADER_INTRO)})\s", re.IGNORECASE)
_HEADER_TRIM = " \t*-–—>"      # around a header: spaces, bold marks, dashes (and ">" in front)


def has_date(text: str) -> bool:
    return _DATE.search(text) is not None or (
        _DOT_TIME_HINT.search(text) is not None and _DOT_TIME.search(text) is not None)


_WROTE_LOWER = tuple(sorted({w.lower() for w in words.WROTE}))


def _wrote_in(text: str) -> bool:
    """Cheap first test for the verb: a plain substring search, before the word-bounded regex."""
    low = text.lower()
    return any(w in low for w in _WROTE_LOWER)


def has_address(text: str) -> bool:
    return "@" in text and _ADDRESS.search(text) is not None


def has_mailbox(text: str) -> bool:
    return ("@" in text or "mailto:" in text) and _MAILBOX.search(text) is not None


def starts_like_header(line: str) -> bool:
    """Could this line open a wrapped quote header ("On Tue, 3 Mar 2026 ...")?"""
    if len(line) > MAX_HEADER_LENGTH // 2 or line.endswith((".", "!", "?")):
        return False
    intro = _INTRO.match(line) is not None and any(c.isdigit() for c in line)   # "On Wed, Dec 9, Name"
    return intro or has_date(line) or has_address(line)


def could_end_header(line: str) -> bool:
    """Cheap first test of a header's last line: a colon, "wrote" or an address at its end."""
    line = line.rstrip(_HEADER_TRIM[:-1])
    return (line.endswith((":", "：")) or (line.endswith(">") and "@" in line)
            or (_wrote_in(line[-40:]) and _WROTE_AT_END.search(line[-40:]) is not None))


@dataclass(frozen=True)
class Evidence:
    """What a line (or the lines of a window) show of a header: worked out once per line."""
    date: bool
    address: bool

    @classmethod
    def of(cls, text: str) -> Evidence:
        return cls(has_date(text), has_address(text))

    def __or__(self, other: Evidence) -> Evidence:
        return Evidence(self.date or other.date, self.address or other.address)


def is_quote_header(text: str, *, above_quote: bool = False, evidence: Evidence | None = None) -> bool:
    """Is this (joined) text a quote header, going by its shape?

    A date or a sender, and either the verb "wrote" in some language or a
    final colon -- with more allowed when a quote follows directly
    (`above_quote`), as a header stands above the quote it introduces.
    `evidence`, when given, is the date and address test of the text's
    lines, done before.
    """
    if len(text) > MAX_HEADER_LENGTH:
        return False
    text = text.lstrip(_HEADER_TRIM).rstrip(_HEADER_TRIM[:-1])     # "---- On ... wrote ----" (Zoho)
    if not text:
        return False
    colon = text.endswith((":", "："))
    verb_somewhere = _wrote_in(text)
    wrote_at_end = verb_somewhere and _WROTE_AT_END.search(text[-60:]) is not None
    verb = _WROTE_ANYWHERE.search(text) if verb_somewhere and not wrote_at_end else None
    wrote = wrote_at_end or verb is not None
    evidence = evidence or Evidence.of(text)
    date, address = evidence.date, evidence.address
    if not address and not _short_header_without_address(text, verb):
        return False
    sentence = text.endswith((".", "!", "?"))
    if (colon and wrote or wrote_at_end) and (date or address):
        return True
    if date and address and (colon or _ENDS_WITH_MAILBOX.search(text)):
        return True     # "2016-03-03 17:21 GMT+01:00 Name <a@b.c>:", "2013/7/20 Name <a@b.c>"
    if above_quote and not sentence:
        # Directly above a quote: a header cut short ("... <a@b.c> wro"), a
        # date-only one ("2013.02.08. 7:31 ... írta:") or a bare "X wrote:".
        return (date and address) or (colon and date) or (
            (colon or wrote_at_end) and wrote and len(text) <= 120)
    return False


_WORD_THEN_BREAK = re.compile(r"(\w{2,})[.!?] +(\w)")
MAX_HEADER_WORDS_WITHOUT_ADDRESS = 16


def _short_header_without_address(text: str, verb: re.Match | None) -> bool:
    """A header naming no address ("Am 03.03.26 um 10:15 schrieb Shop:") is
    short, holds no sentence break and has at most a name after its verb --
    unlike "Der Fahrer schrieb um 10:15 auf die Karte:"."""
    if len(text.split()) > MAX_HEADER_WORDS_WITHOUT_ADDRESS:
        return False
    for match in _WORD_THEN_BREAK.finditer(text):
        word, following = match.groups()
        if word[-1].islower() and following.isupper():
            return False        # "... nicht an. Der Fahrer ..."
    if verb is not None:
        tail = text[verb.end():]
        if len(tail.split()) > 5 or any(c.isdigit() for c in tail):
            return False
    return True


# ---------------------------------------------------------------------------
# Header blocks: "From: ... / Sent: ... / To: ... / Subject: ..."
# ---------------------------------------------------------------------------

# A label of one to four words without digits, then a colon; Outlook's HTML
# conversion puts asterisks around it ("*From:*").
_LABEL_LINE = re.compile(
    r"^\**[ ]*(?P<label>[^\W\d_][^:：*<>@\d\[\]()]{0,30}?)[ ]*\**[ ]*[:：][ ]*\**[ ]*(?P<value>.*)$")
_KNOWN_LABELS = {
    label: field
    for field, labels in (("from", words.FROM_LABELS), ("date", words.DATE_LABELS),
                          ("to", words.TO_LABELS), ("copy", words.COPY_LABELS),
                          ("subject", words.SUBJECT_LABELS), ("other", words.OTHER_LABELS))
    for label in labels
}


@dataclass(frozen=True)
class Label:
    label: str      # lower case, single spaces
    value: str

    @property
    def field(self) -> str | None:
        """"from", "date", "to", "copy", "subject", "other" for a known label."""
        return _KNOWN_LABELS.get(self.label)


def label_line(line: str) -> Label | None:
    """ "Von: Shop <x@y>" -> Label("von", "Shop <x@y>"); None for other lines."""
    if len(line) > MAX_LABEL_LINE_LENGTH or (":" not in line and "：" not in line):
        return None
    match = _LABEL_LINE.match(line)
    if match is None:
        return None
    label = " ".join(match["label"].lower().split())
    value = match["value"].strip(" *")
    if len(label.split()) > 4 or value.startswith("//"):     # "https://..." is no label
        return None
    return Label(label, value)


def is_header_block(labels: list[Label]) -> bool:
    """Is a run of "Label: value" lines the header block of an embedded mail?

    It starts with the sender within its first two lines (GMX puts the date
    first): a known "From" label in any language, or a value shaped like a
    mailbox ("Name <a@b.c>"). Then it names a recipient or a subject and
    shows a date or more known labels -- or, in a language whose labels we do
    not know, it is three lines or more with a mailbox sender and a date.
    A customer's "Name: / Street: / Phone:" list has no sender; "From:
    Berlin / To: Munich / Date: Friday" names no subject or recipient address.
    """
    if not 2 <= len(labels) <= 8:
        return False
    senders = [item for item in labels[:2] if item.field == "from" or has_mailbox(item.value)]
    if not senders:
        return False
    fields = {item.field for item in labels}
    known = sum(item.field is not None for item in labels)
    dated = any(has_date(item.value) for item in labels)
    addressed = any(has_address(item.value) for item in labels)
    if len(labels) == 2:
        return known == 2 and (dated or addressed)
    if fields & {"to", "subject"} and (dated or known >= 3 or addressed):
        return True
    return has_mailbox(senders[0].value) and dated


# ---------------------------------------------------------------------------
# Mobile signatures, closings, sign-offs
# ---------------------------------------------------------------------------

_SENT_FIRST = re.compile(rf"^[(<\[]*(?:{_alternation(words.SENT)})(?![\w:：])", re.IGNORECASE)
_SENT_LAST = re.compile(rf"(?<!\w)(?:{_alternation(words.SENT)})[.!]?$", re.IGNORECASE)
_SENT_VIA = re.compile(rf"^[ ]*(?:{_alternation(words.SENT_VIA)})(?!\w)", re.IGNORECASE)
_MY = re.compile(rf"(?<!\w)(?:{_alternation(words.MY)})(?!\w)", re.IGNORECASE)
_DEVICE = re.compile(rf"(?<!\w)(?:{_alternation(words.DEVICES)})", re.IGNORECASE)
_OUTLOOK_AD = re.compile(rf"(?<!\w)outlook(?!\w).*(?<!\w)(?:{_alternation(words.MOBILE_SYSTEMS)})(?!\w)",
                         re.IGNORECASE)
_CJK_SENT = re.compile(r"傳送|传送|发自|發自|来自|來自|送信|보냄")
# Links clients glue to a signature: "<https://aka.ms/...>", "[url]", markdown.
_LINK_TAIL = re.compile(r"[ ]*(?:<(?:https?|mailto):[^>]*>|\[(?:https?|mailto):[^\]]*\])")
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_INNER_PUNCTUATION = re.compile(r"[,;!?](?!$)")
_WINDOWS_MAIL = re.compile(r"^Provenance ?: Courrier pour Windows", re.IGNORECASE)


def is_mobile_signature(line: str) -> bool:
    """ "Sent from my iPhone", "Verzonden met BlackBerry Work", "從我的 iPhone 傳送",
    "Get Outlook for iOS", "Von meinem iPhone gesendet" ... in any language listed."""
    if len(line) > MAX_SIGNATURE_LENGTH + 100 or line.count(" ") > 14:
        return False
    bare = _LINK_TAIL.sub("", _MARKDOWN_LINK.sub(r"\1", line)).strip().rstrip(".")
    if not bare or len(bare) > MAX_SIGNATURE_LENGTH or _INNER_PUNCTUATION.search(bare):
        return False
    if len(bare.split()) > 10:
        return False
    device = _DEVICE.search(bare) is not None
    if _OUTLOOK_AD.search(bare) or _WINDOWS_MAIL.match(bare):
        return True
    if _CJK_SENT.search(bare):
        return device
    first = _SENT_FIRST.match(bare)
    if first:
        rest = bare[first.end():]
        # "Sent from ...", "Verzonden met ...", or the device at once ("Lähetetty iPhonesta").
        via = _SENT_VIA.match(rest)
        if via is not None:
            return device or _MY.search(rest) is not None
        return _DEVICE.match(rest.strip()) is not None
    if _SENT_LAST.search(bare):
        # "Von meinem iPhone gesendet", "Diese Nachricht wurde von ... gesendet".
        return _MY.search(bare) is not None or device
    # "Från min iPhone", "From my iPad": a preposition, "my" and a device, nothing else.
    return (len(bare.split()) <= 5 and _SENT_VIA.match(bare) is not None
            and _MY.search(bare) is not None and device)


_CLOSING = re.compile(rf"^(?:{_alternation(words.CLOSINGS)})[ ]*[,!.]?$", re.IGNORECASE)
# "-Abhishek Kona": a closing name line, at most three words.
_SIGN_OFF = re.compile(r"^(?:-|[–—] ?)[^\W\d_][\w.'’-]*(?: [^\W\d_][\w.'’-]*){0,2}$")


_BANNER_START = re.compile(rf"^[\[(*]*(?:{_alternation(words.BANNER_STARTS)})(?!\w)", re.IGNORECASE)
_BANNER_OUTSIDE = re.compile(rf"(?<!\w)(?:{_alternation(words.BANNER_OUTSIDE)})(?!\w)", re.IGNORECASE)
_CONFIDENTIAL = re.compile(rf"(?<!\w)(?:{_alternation(words.CONFIDENTIAL)})", re.IGNORECASE)
_ADDRESSEE = re.compile(rf"(?<!\w)(?:{_alternation(words.ADDRESSEE)})", re.IGNORECASE)
_DISCLAIMER_TITLE = re.compile(rf"^(?:{_alternation(words.DISCLAIMER_TITLES)})[ ]*:?$", re.IGNORECASE)
_VIRUS_FREE = re.compile(_alternation(words.VIRUS_FREE), re.IGNORECASE)
MAX_BANNER_LENGTH = 600
MAX_DISCLAIMER_LENGTH = 4000


def is_gateway_banner(line: str) -> bool:
    """ "CAUTION: This email originated from outside of the organization ..." """
    return (len(line) <= MAX_BANNER_LENGTH and _BANNER_START.match(line) is not None
            and _BANNER_OUTSIDE.search(line) is not None)


def is_disclaimer(paragraph: str) -> bool:
    """A legal footer paragraph: long, confidential, about its intended recipient."""
    return (100 <= len(paragraph) <= MAX_DISCLAIMER_LENGTH and _CONFIDENTIAL.search(paragraph) is not None
            and _ADDRESSEE.search(paragraph) is not None)


def is_disclaimer_title(line: str) -> bool:
    return len(line) <= 40 and _DISCLAIMER_TITLE.match(line) is not None


def is_virus_free_note(line: str) -> bool:
    """ "Virus-free. www.avast.com" and its kin: a short antivirus advertisement."""
    if len(line) > 120:
        return False
    low = line.lower()      # a plain substring test first: most lines are spared the regex
    hinted = "vir" in low or "avast" in low or "avg." in low or "wirus" in low
    return hinted and _VIRUS_FREE.search(line) is not None


def is_closing(line: str) -> bool:
    """ "Regards,", "Viele Grüße", "Met vriendelijke groet": a closing alone on its line."""
    return len(line) <= 40 and _CLOSING.match(line) is not None


def is_sign_off(line: str) -> bool:
    return _SIGN_OFF.match(line) is not None


SIGNATURE_LINE_LENGTH = 60


def is_signature_block_line(line: str) -> bool:
    """A name, a title, a company, a phone number: short, and no sentence."""
    return len(line) <= SIGNATURE_LINE_LENGTH and not is_sentence(line, words_before_dot=3)


def is_sentence(line: str, words_before_dot: int = 0) -> bool:
    """Does the line end like a sentence? With `words_before_dot`, a final dot
    only counts after more words than that ("ACME Ltd." is a company, not a sentence)."""
    if line.endswith(("?", ":", ";")):
        return True
    return line.endswith(".") and len(line.split()) > words_before_dot
