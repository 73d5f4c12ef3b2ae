"""html_to_text: an HTML-only reply rendered as the plain text the trimmer reads.

Blocks become lines, <blockquote> becomes "> " lines, links "text <url>". It
is a small renderer on the standard library's HTMLParser: html2text is GPL,
and the permissive converters write Markdown links or drop the quote marks.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

from daemon.mail.trimming.shapes import INVISIBLE

_INVISIBLE = re.compile(f"[{INVISIBLE}]")


def html_to_text(html: str) -> str:
    """Render an HTML mail body as plain text the way a mail client would."""
    renderer = _HtmlRenderer()
    renderer.feed(html)
    renderer.close()
    return renderer.text()


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
