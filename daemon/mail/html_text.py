"""HTML to text for an HTML-only body, bounded, with a plain renderer of our own
as the fallback when the trimmer's renderer fails.

Split from daemon/mail/parsing.py, which fills `text` with it when a mail has no text part.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

from daemon.mail.trimming import html_to_text

MAX_HTML_RENDERED = 2**20         # characters of an HTML-only body rendered into `text`


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
