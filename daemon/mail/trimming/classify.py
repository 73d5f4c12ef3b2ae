"""Line classification: each line of a reply gets one class.

Classes are single characters, as in Discourse's email_reply_trimmer, so a
mail's classes read as a short pattern ("ttebqqq") when debugging. Lines are
first classed on their own (`shapes`); then the passes that need neighbours
run: header blocks (a run of label lines), quote headers (joined across the
line breaks clients insert), rules that are delimiters only when no text
follows, and quote lines a client's re-wrapping pushed out of the quote.

Every pass walks the lines once (header windows look at most four lines back),
so classifying is linear in the size of the mail.
"""
from __future__ import annotations

from daemon.mail.trimming import shapes

EMPTY = "e"
TEXT = "t"
QUOTE = "q"              # ">" quoted line
QUOTE_HEADER = "b"       # "On ... wrote:" and its kin, possibly over several lines
MAIL_HEADER = "h"        # a line of an Outlook-style "From: / Sent: / To:" block
SIGNATURE_DELIMITER = "s"  # "-- ", "____": the customer's text ends here
ORIGINAL = "o"           # "-----Original Message-----" and its kin
FORWARD = "f"            # "---------- Forwarded message ---------", "Begin forwarded message:"
MOBILE = "m"             # "Sent from my iPhone" and its kin, "Virus-free. www.avast.com"
BANNER = "x"             # a mail gateway's "CAUTION: from outside" warning above the text
# Classes that only live during classification:
_LABEL = "l"             # "Label: value", a header-block line if its run is one
_RULE = "r"              # "----": a delimiter only if no text follows
_PHRASE = "p"            # "--- phrase ---" with unknown words: as a rule, but a header block must follow

# Where a quoted history begins: a quote header or a header block.
HISTORY_MARKERS = (QUOTE_HEADER, MAIL_HEADER)
# Longest quote header, in lines, as clients wrap it.
MAX_HEADER_LINES = 4
# A signature block without "-- ": a name, a title, a company, contacts.
SIGNATURE_BLOCK_LINES = range(2, 7)


class Classified:
    """A reply's lines, their normalised text and their classes."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.norm = [shapes.normalise(line) for line in lines]
        self._evidence_cache: dict[int, shapes.Evidence] = {}
        # ">" lines are the bulk of a long reply: classed here without a call.
        self.classes = [QUOTE if n[:1] == ">" else _line_class(n) for n in self.norm]
        self._rejoin_closing_brackets()
        self._mark_banner()
        self._mark_header_blocks()
        self._mark_quote_headers()
        self._resolve_rules()
        self._absorb_wrapped_quote_lines()

    def next_filled(self, index: int) -> int | None:
        """Index of the first non-empty line at or after `index`."""
        for i in range(index, len(self.classes)):
            if self.classes[i] != EMPTY:
                return i
        return None

    # -- passes --------------------------------------------------------------

    def _rejoin_closing_brackets(self) -> None:
        """ "... skrev Test user <test@example.com" + ">:" on the next line:
        the ">:" closes the address, it is no quote."""
        for i in range(1, len(self.classes)):
            if (self.classes[i] == QUOTE and self.classes[i - 1] == TEXT
                    and self.norm[i].replace(" ", "") in (">:", ">：")
                    and self.norm[i - 1].rfind("<") > self.norm[i - 1].rfind(">")):
                self.classes[i] = TEXT

    def _mark_banner(self) -> None:
        """A company gateway's warning can only be the mail's first line."""
        first = self.next_filled(0)
        if (first is not None and self.classes[first] in (TEXT, _LABEL)
                and shapes.is_gateway_banner(self.norm[first])):
            self.classes[first] = BANNER

    def _mark_header_blocks(self) -> None:
        """Label lines become MAIL_HEADER where their run is a header block, TEXT elsewhere."""
        classes, i = self.classes, 0
        while i < len(classes):
            if classes[i] != _LABEL:
                i += 1
                continue
            members, last = self._label_run(i)
            labels = [shapes.label_line(self.norm[j]) for j in members]
            # A block starts at a known label or the sender: "Note: ..." above it is text.
            while labels and labels[0].field is None and not shapes.has_mailbox(labels[0].value):
                classes[members.pop(0)] = TEXT
                labels.pop(0)
            block = bool(members) and shapes.is_header_block(labels)
            for j in range(members[0] if members else i, last + 1):
                if block:
                    classes[j] = MAIL_HEADER
                elif classes[j] == _LABEL:
                    classes[j] = TEXT
            i = last + 1

    def _label_run(self, first: int) -> tuple[list[int], int]:
        """The label lines of the run starting at `first`, and its last line.

        One wrapped or blank line may stand between two label lines
        ("From: Human Resources" / "<hr@example.com>" / "Sent: ...").
        """
        members, last, i = [first], first, first + 1
        while i < len(self.classes):
            if self.classes[i] == _LABEL:
                members.append(i)
                last = i
            elif not (i == last + 1 and self.classes[i] in (TEXT, EMPTY)):
                break
            i += 1
        return members, last

    def _mark_quote_headers(self) -> None:
        """Mark quote headers, joined over up to four lines.

        For each text line the shortest window of lines ending there that
        has a header's shape is taken, then grown upwards over lines that
        look like a header's beginning (a date, an address, "On"/"Am"/...) --
        so a wrapped header swallows no line of the customer's text above.
        """
        classes, norm = self.classes, self.norm
        for end in range(len(classes)):
            if classes[end] != TEXT:
                continue
            start = self._header_window(end)
            if start is None:
                continue
            while (start > 0 and end - start + 1 < MAX_HEADER_LINES and classes[start - 1] == TEXT
                   and shapes.starts_like_header(norm[start - 1])):
                start -= 1
            for i in range(start, end + 1):
                classes[i] = QUOTE_HEADER

    def _header_window(self, end: int) -> int | None:
        following = self.next_filled(end + 1)
        above_quote = following is not None and self.classes[following] == QUOTE
        if not above_quote and not shapes.could_end_header(self.norm[end]):
            return None
        joined, evidence = "", shapes.Evidence(date=False, address=False)
        for start in range(end, max(end - MAX_HEADER_LINES, -1), -1):
            if self.classes[start] not in (TEXT, QUOTE_HEADER):    # a header's first lines may be marked already
                return None
            joined = f"{self.norm[start]} {joined}" if joined else self.norm[start]
            if len(joined) > shapes.MAX_HEADER_LENGTH:
                return None
            evidence |= self._evidence(start)
            if shapes.is_quote_header(joined, above_quote=above_quote, evidence=evidence):
                return start
        return None

    def _evidence(self, index: int) -> shapes.Evidence:
        """A line's date and address test, done once however many windows it is in."""
        found = self._evidence_cache.get(index)
        if found is None:
            found = self._evidence_cache[index] = shapes.Evidence.of(self.norm[index])
        return found

    def _resolve_rules(self) -> None:
        """A "----" line ends the text unless text follows; a "--- phrase ---"
        line only where a header block or a quote follows."""
        next_class = None       # class of the next non-empty line, scanning upwards
        for i in range(len(self.classes) - 1, -1, -1):
            cls = self.classes[i]
            if cls == _RULE:
                if next_class != TEXT:
                    self.classes[i] = ORIGINAL
                elif self._signature_block_follows(i):
                    self.classes[i] = SIGNATURE_DELIMITER
                else:
                    self.classes[i] = TEXT
            elif cls == _PHRASE:
                self.classes[i] = ORIGINAL if next_class in (MAIL_HEADER, QUOTE, QUOTE_HEADER) else TEXT
            if self.classes[i] != EMPTY:
                next_class = self.classes[i]

    def _signature_block_follows(self, rule: int) -> bool:
        """ "—————" / "Sarah Johnson" / "Product Manager" / "sarah@example.com":
        a long rule above a few short name and contact lines ending the text."""
        if len(self.norm[rule]) < 3:
            return False            # a lone dash is as often a divider
        block = 0
        for i in range(rule + 1, len(self.classes)):
            cls, line = self.classes[i], self.norm[i]
            if cls == EMPTY:
                continue
            if cls != TEXT:
                break
            block += 1
            if block > SIGNATURE_BLOCK_LINES[-1] or not shapes.is_signature_block_line(line):
                return False
        return block in SIGNATURE_BLOCK_LINES

    def _absorb_wrapped_quote_lines(self) -> None:
        """Re-quote a line that a client's re-wrapping pushed out of a quote.

        "> a long quoted sentence that was\\nwrapped here\\n> next quoted line":
        the middle line continues the quote; taking it for an inline answer
        would keep the whole quote. An answer to a question ("...?" / "yes")
        is left alone.
        """
        classes, norm = self.classes, self.norm
        for i in range(1, len(classes) - 1):
            if classes[i] != TEXT or classes[i - 1] != QUOTE or classes[i + 1] != QUOTE:
                continue
            above = shapes.unquoted(norm[i - 1])
            if len(above) >= 50 and not above.endswith(("?", ":")) and norm[i][:1].islower():
                classes[i] = QUOTE


def _line_class(line: str) -> str:
    if not line:
        return EMPTY
    if shapes.is_signature_delimiter(line):
        return SIGNATURE_DELIMITER
    phrase = shapes.dashed_phrase(line)
    if phrase is not None:
        if shapes.names_forward(phrase):
            return FORWARD
        if shapes.names_original_message(phrase):
            return ORIGINAL
        if not shapes.is_quote_header(phrase):
            return _PHRASE
        return TEXT     # "---- On ... wrote ----" (Zoho): left to the header pass
    if shapes.is_rule(line):
        return _RULE
    if shapes.is_forward_intro(line):
        return FORWARD
    if shapes.is_mobile_signature(line) or shapes.is_virus_free_note(line):
        return MOBILE
    if shapes.label_line(line) is not None:
        return _LABEL
    return TEXT


def quote_holds_history(norm_lines: list[str]) -> bool:
    """Does a quoted block hold a whole earlier mail rather than a passage?

    A passage the customer answers below is short and plain; a block with a
    header, a header block, a delimiter or a signature inside is the full
    history, and text after it is not an answer to it.
    """
    inner = [shapes.unquoted(line) for line in norm_lines]
    for index, line in enumerate(inner):
        if not line:
            continue
        if shapes.is_signature_delimiter(line) or shapes.is_forward_intro(line):
            return True
        phrase = shapes.dashed_phrase(line)
        if phrase is not None and (shapes.names_original_message(phrase) or shapes.names_forward(phrase)):
            return True
        label = shapes.label_line(line)
        if label is not None and label.field == "from" and index + 1 < len(inner) \
                and shapes.label_line(inner[index + 1]) is not None:
            return True
        if shapes.is_quote_header(line):
            return True
    return False
