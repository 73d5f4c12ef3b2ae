"""Message bodies: owner HTML made safe, plain text made into HTML.

Every HTML body passes `sanitize_html` before it is stored (and the web pages
sanitise again on render), so a script or an event handler typed by anyone
never reaches a customer's browser or mail client.
"""
from __future__ import annotations

import html
import re

import nh3

# Web and mail links, and cid: for images inline in the owner's mail.
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})


def sanitize_html(markup: str) -> str:
    return nh3.clean(markup, url_schemes=set(URL_SCHEMES)).strip()


def text_to_html(text: str) -> str:
    """Paragraphs on blank lines, line breaks kept, everything escaped.

    Lines starting with ">" are quotes, as in every mail client: they become
    (nested) <blockquote>s, so the passages a customer answered between read
    as quotes on the page and in the owner's forward.
    """
    if not text.strip():
        return ""
    lines = text.replace("\r\n", "\n").split("\n")
    return _blocks([_quote_depth(line) for line in lines])


_QUOTE_MARKS = re.compile(r" *((?:> ?)+)")
# Deeper quotes are shown at this depth: nesting is bounded whatever a sender types.
MAX_QUOTE_DEPTH = 6


def _quote_depth(line: str) -> tuple[int, str]:
    """(number of leading ">" marks, the line without them and one space after each)."""
    marks = _QUOTE_MARKS.match(line)
    if marks is None:
        return 0, line
    return min(marks.group(1).count(">"), MAX_QUOTE_DEPTH), line[marks.end():]


def _blocks(lines: list[tuple[int, str]]) -> str:
    """HTML for lines at one quote level: runs of deeper lines nest one level down."""
    parts, i = [], 0
    while i < len(lines):
        j = i
        if lines[i][0] == 0:
            while j < len(lines) and lines[j][0] == 0:
                j += 1
            parts.append(_paragraphs("\n".join(line for _, line in lines[i:j])))
        else:
            while j < len(lines) and lines[j][0] > 0:
                j += 1
            inner = _blocks([(depth - 1, line) for depth, line in lines[i:j]])
            if inner:
                parts.append(f"<blockquote>{inner}</blockquote>")
        i = j
    return "".join(parts)


# Mail clients ignore style sheets: a quote in a mail carries its look inline.
_MAIL_QUOTE = ('<blockquote style="margin:8px 0;padding:0 0 0 12px;border-left:3px solid #cccccc;'
               'color:#555555;">')


def quotes_styled_for_mail(markup: str) -> str:
    """Safe HTML (from text_to_html or sanitize_html) with its blockquotes styled inline."""
    return markup.replace("<blockquote>", _MAIL_QUOTE)


def _paragraphs(text: str) -> str:
    paragraphs = [p.strip("\n") for p in text.split("\n\n")]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>"
                   for p in paragraphs if p.strip())
