"""The cut: what of a classified reply is the customer's, decided on the pattern of classes.

In order:

1. A forward ("---------- Forwarded message ----------", "Begin forwarded
   message:") before any quoted history splits the mail: the customer's note
   above it is trimmed as a reply, the forwarded mail below is kept as it is
   (it may be the point), without its marker and header block.
2. The customer's text ends at a "-- " or "____" delimiter, at an
   "-----Original Message-----" line, and at a mobile signature ("Sent from my
   iPhone") that follows some text; a signature line with nothing above is
   just dropped. A "-Name" sign-off right above a signature delimiter opens
   that signature and goes with it.
3. History markers (quote headers, header blocks), from the top:
   - with no text above, a marker followed by unquoted text heads a pasted
     mail: the marker goes and the text is read on;
   - with text above, a marker followed by unquoted text, by nothing, or by
     a quote that holds a whole earlier mail (its own header, a signature)
     or that no text follows, starts the history: cut there. A reply on top
     drops all of it.
   - a marker followed by a plain quoted passage and then more text is an
     inline answer: kept, and the search goes on below the answer.
4. Trailing quotes, markers and blank lines go.
5. Quotes kept before the first text line (bottom-posting, the customer wrote
   only below the quote) go; quotes between text lines stay, as quotes: the
   answers ("Yes", "Size M") make no sense without the questions.
6. A closing, a blank line and a block of short name/title lines ending the
   text ("Regards," / "" / "Jane Doe" / "CEO, Acme") is a business signature.
"""
from __future__ import annotations

from typing import NamedTuple

from daemon.mail.trimming import shapes
from daemon.mail.trimming.classify import (
    BANNER, EMPTY, FORWARD, HISTORY_MARKERS, MAIL_HEADER, MOBILE, ORIGINAL, QUOTE, QUOTE_HEADER,
    SIGNATURE_BLOCK_LINES, SIGNATURE_DELIMITER, TEXT, Classified,
    quote_holds_history,
)


class Kept(NamedTuple):
    """A line still standing while the cut is decided."""
    text: str       # as it goes into the log
    cls: str
    norm: str       # as the shape tests read it


def customer_lines(mail: Classified, *, forwarded: bool = False) -> list[str]:
    """The lines the customer wrote (and forwarded), quotes kept as written.

    `forwarded`: the mail's subject says it is a forward, so the first header
    block or "Original Message" line opens the forwarded mail rather than a
    quoted history (Outlook forwards look like its replies).
    """
    lines = [shapes.visible(line) for line in mail.lines]
    classes = list(mail.classes)
    split = _forward_split(classes, forwarded)
    if split is None:
        return _reply(mail, lines, classes)
    own = _reply(mail, lines[:split], classes[:split])
    passed_on = _forwarded_body(mail, lines, classes, split)
    if own and passed_on:
        return own + [""] + passed_on
    return own or passed_on


# ---------------------------------------------------------------------------
# Forwards
# ---------------------------------------------------------------------------

def _forward_split(classes: list[str], forwarded: bool) -> int | None:
    """Index of the forward marker that starts a forwarded mail, if any.

    Only a forward before any quote header, header block or "Original
    Message" line counts: after them it belongs to the quoted history.
    """
    for i, cls in enumerate(classes):
        if cls == FORWARD:
            return i
        if cls in (QUOTE_HEADER, MAIL_HEADER, ORIGINAL):
            return i if forwarded and cls != QUOTE_HEADER else None
    return None


def _forwarded_body(mail: Classified, lines: list[str], classes: list[str], marker: int) -> list[str]:
    """The forwarded mail below its marker, without its header block."""
    i = mail.next_filled(marker + 1 if classes[marker] in (FORWARD, ORIGINAL) else marker)
    if i is None:
        return []
    while i < len(lines) and (classes[i] == MAIL_HEADER or shapes.label_line(mail.norm[i]) is not None
                              or (lines[i][:1] in (" ", "\t") and mail.norm[i])):    # a wrapped value
        i += 1
    return _strip_blank(lines[i:])


# ---------------------------------------------------------------------------
# The reply
# ---------------------------------------------------------------------------

def _reply(mail: Classified, lines: list[str], classes: list[str]) -> list[str]:
    end = _end_of_text(mail, classes)
    lines, classes = lines[:end], classes[:end]
    keep = [cls not in (MOBILE, BANNER) for cls in classes]    # a signature with nothing above, a gateway warning
    end = _history_start(mail, classes, keep)
    kept = [Kept(lines[i], classes[i], mail.norm[i]) for i in range(end) if keep[i]]
    kept = _cut_trailing_quotes(kept)
    if not any(line.cls == TEXT for line in kept):
        return []
    kept = _cut_leading_quote(kept)
    kept = _cut_disclaimer(kept)
    kept = _cut_signature_block(kept)
    return [line.text for line in kept]


def _end_of_text(mail: Classified, classes: list[str]) -> int:
    """Where a delimiter or a mobile signature after some text ends the customer's text."""
    seen_text = False
    for i, cls in enumerate(classes):
        if cls in (SIGNATURE_DELIMITER, ORIGINAL, FORWARD):
            return _with_sign_off(mail, classes, i) if cls == SIGNATURE_DELIMITER else i
        if cls == MOBILE and seen_text:
            return i
        seen_text = seen_text or cls == TEXT
    return len(classes)


def _with_sign_off(mail: Classified, classes: list[str], delimiter: int) -> int:
    """A lone "-Name" line right above a signature delimiter opens the signature."""
    above = delimiter - 1
    while above >= 0 and classes[above] == EMPTY:
        above -= 1
    if (above >= 1 and classes[above] == TEXT and shapes.is_sign_off(mail.norm[above])
            and classes[above - 1] == EMPTY):
        return above
    return delimiter


def _history_start(mail: Classified, classes: list[str], keep: list[bool]) -> int:
    """Index where the quoted history starts (len(classes) if nowhere); see rule 3.

    Markers with no text above and unquoted text below are struck from `keep`.
    """
    i, seen_text = 0, False
    while i < len(classes):
        cls = classes[i]
        if cls == TEXT and keep[i]:
            seen_text = True
        if cls not in HISTORY_MARKERS:
            i += 1
            continue
        run_end = i
        while run_end < len(classes) and classes[run_end] in HISTORY_MARKERS + (EMPTY,):
            run_end += 1
        following = run_end if run_end < len(classes) else None
        if following is None:
            return i if seen_text else len(classes)
        if classes[following] != QUOTE:
            if seen_text:
                return i
            for j in range(i, following):
                keep[j] = False            # a pasted mail's header: read on below it
            i = following
            continue
        quote_end = following
        while quote_end < len(classes) and classes[quote_end] in (QUOTE, EMPTY):
            quote_end += 1
        answered = quote_end < len(classes) and classes[quote_end] == TEXT
        if seen_text and (not answered or quote_holds_history(mail.norm[following:quote_end])):
            return i
        i = quote_end
    return len(classes)


def _cut_trailing_quotes(kept: list[Kept]) -> list[Kept]:
    end = len(kept)
    while end and kept[end - 1].cls in (QUOTE, QUOTE_HEADER, MAIL_HEADER, EMPTY):
        end -= 1
    return kept[:end]


def _cut_leading_quote(kept: list[Kept]) -> list[Kept]:
    """Quotes after the first text line are inline answers: keep everything.
    Otherwise the customer wrote below the quote, and the quote above goes."""
    first_text = next(i for i, line in enumerate(kept) if line.cls == TEXT)
    if any(line.cls in (QUOTE, QUOTE_HEADER, MAIL_HEADER) for line in kept[first_text:]):
        return kept
    return kept[first_text:]


def _cut_signature_block(kept: list[Kept]) -> list[Kept]:
    """ "Regards," / "" / "Jane Doe" / "CEO @ Acme" ending the text: a business signature."""
    start = len(kept)
    while start and kept[start - 1].norm:
        start -= 1
    block = [line.norm for line in kept[start:]]
    if len(block) not in SIGNATURE_BLOCK_LINES or start < 3:
        return kept
    if not all(shapes.is_signature_block_line(line) for line in block):
        return kept
    closing = start - 2
    if kept[start - 1].norm or not shapes.is_closing(kept[closing].norm) \
            or not any(line.norm for line in kept[:closing]):
        return kept
    return kept[:closing]


def _cut_disclaimer(kept: list[Kept]) -> list[Kept]:
    """A legal footer paragraph below the text ends it, with a "Disclaimer" title above it."""
    paragraphs = _paragraphs(kept)
    for number, (start, end) in enumerate(paragraphs[1:], 1):
        if not shapes.is_disclaimer(" ".join(line.norm for line in kept[start:end])):
            continue
        title_start, title_end = paragraphs[number - 1]
        if number > 1 and title_end - title_start == 1 and shapes.is_disclaimer_title(kept[title_start].norm):
            return kept[:title_start]
        return kept[:start]
    return kept


def _paragraphs(kept: list[Kept]) -> list[tuple[int, int]]:
    """(start, end) of each run of non-empty text lines."""
    runs, start = [], None
    for i, line in enumerate(kept):
        if line.cls == TEXT and start is None:
            start = i
        elif line.cls != TEXT and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(kept)))
    return runs


def _strip_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]
