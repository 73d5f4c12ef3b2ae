"""Message bodies: owner HTML made safe, plain text made into HTML.

Every HTML body passes `sanitize_html` before it is stored (and the web pages
sanitise again on render), so a script or an event handler typed by anyone
never reaches a customer's browser or mail client.
"""
from __future__ import annotations

import html

import nh3

# Web and mail links, and cid: for images inline in the owner's mail.
URL_SCHEMES = frozenset({"http", "https", "mailto", "tel", "cid"})


def sanitize_html(markup: str) -> str:
    return nh3.clean(markup, url_schemes=set(URL_SCHEMES)).strip()


def text_to_html(text: str) -> str:
    """Paragraphs on blank lines, line breaks kept, everything escaped."""
    paragraphs = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    return "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>"
                   for p in paragraphs if p.strip())
