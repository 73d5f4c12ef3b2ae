"""Inline answers keep the questions they answer, and those show as quotes.

A customer who answers between the shop's quoted lines gets the quoted
questions kept (as "> " lines) and only the trailing history cut. The order
page and the owner's forward render those lines as quotes, escaped; a reply
on top keeps no quote at all. The mails go through the pipe door in process
(store first, then the worker), on both backends.
"""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import re

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.mail.addresses import token_address
from daemon.intake import pipe
from daemon.mail.richtext import quotes_styled_for_mail, text_to_html
from daemon.store.models import OutboxMessage
from mailbuilder import mail
from statuspage.app import make_app
from test_pages import Client

TODAY = dt.date.today()

INLINE_REPLY = """Hallo,

Am 26.11.2026 um 10:15 schrieb Teeladen <orders@shop.example>:

> Welche Gravur wünschen Sie auf der Kanne?

"Für Oma" <bitte kursiv>

> Sollen wir die Kanne als Geschenk verpacken?

Ja, gerne.

> Mit freundlichen Grüßen
> Ihr Teeladen
>
> Teeladen GmbH, Hauptstraße 1, 10115 Berlin
"""

TOP_REPLY = """Ja, bitte als Geschenk verpacken.

Am 26.11.2026 um 10:15 schrieb Teeladen <orders@shop.example>:
> Sollen wir die Kanne als Geschenk verpacken?
> Mit freundlichen Grüßen
"""


@pytest.fixture
def reply_to(store, settings):
    order = orders.create_order(store, settings, sample_order())
    return token_address(settings, order, tokens.CUSTOMER_REPLY, TODAY)


def deliver_reply(store, settings, reply_to: str, body: str):
    raw = mail(to=reply_to, body=body, subject="Re: Ihre Bestellung 1042")
    assert pipe.deliver(store, settings, io.BytesIO(raw), [reply_to], "erika@example.org") == 0
    return orders.order_events(orders.find_order("1042"))[-1]


def test_an_inline_answer_keeps_the_questions_and_drops_the_trailing_history(store, settings, reply_to):
    event = deliver_reply(store, settings, reply_to, INLINE_REPLY)
    assert event.kind == "customer_reply"
    assert event.body_text == (
        "Hallo,\n\nAm 26.11.2026 um 10:15 schrieb Teeladen <orders@shop.example>:\n\n"
        "> Welche Gravur wünschen Sie auf der Kanne?\n\n\"Für Oma\" <bitte kursiv>\n\n"
        "> Sollen wir die Kanne als Geschenk verpacken?\n\nJa, gerne.")


def test_a_reply_on_top_keeps_no_quote(store, settings, reply_to):
    event = deliver_reply(store, settings, reply_to, TOP_REPLY)
    assert event.body_text == "Ja, bitte als Geschenk verpacken."


def test_the_order_page_shows_the_kept_questions_as_quotes_and_escapes_the_answers(store, settings, reply_to):
    deliver_reply(store, settings, reply_to, INLINE_REPLY)
    page = Client(make_app(settings, store)).get(f"/o/{orders.find_order('1042').status_token}")
    assert page.status == 200
    quotes = re.findall(r"<blockquote>(.*?)</blockquote>", page.text, re.S)
    assert [re.sub(r"<[^>]+>", "", q).strip() for q in quotes] == [
        "Welche Gravur wünschen Sie auf der Kanne?", "Sollen wir die Kanne als Geschenk verpacken?"]
    assert "&lt;bitte kursiv&gt;" in page.text and "<bitte kursiv>" not in page.text
    assert "Hauptstraße 1" not in page.text


def test_the_owners_forward_shows_the_kept_questions_as_quotes(store, settings, reply_to):
    deliver_reply(store, settings, reply_to, INLINE_REPLY)
    row = OutboxMessage.get(OutboxMessage.kind == "reply_forward")
    parsed = email.message_from_bytes(notify.render(settings, row, dt.datetime.now(dt.timezone.utc)).raw,
                                      policy=email.policy.default)
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert "> Welche Gravur wünschen Sie auf der Kanne?" in text and "Ja, gerne." in text
    quoted = re.findall(r'<blockquote style="[^"]*border-left[^"]*">(.*?)</blockquote>', html, re.S)
    assert any("Sollen wir die Kanne als Geschenk verpacken?" in q for q in quoted)
    assert "&lt;bitte kursiv&gt;" in html and "<bitte kursiv>" not in html
    assert "&gt; Welche" not in html          # a quote, not a ">" typed into the text


@pytest.mark.parametrize(("text", "markup"), [
    ("Antwort", "<p>Antwort</p>"),
    ("a\n\nb\nc", "<p>a</p><p>b<br>c</p>"),
    ("> Frage?\nJa.", "<blockquote><p>Frage?</p></blockquote><p>Ja.</p>"),
    ("> eins\n>\n> > älter\n>> noch älter", "<blockquote><p>eins</p><blockquote><p>älter<br>noch älter</p>"
                                            "</blockquote></blockquote>"),
    ("> <script>x()</script>", "<blockquote><p>&lt;script&gt;x()&lt;/script&gt;</p></blockquote>"),
    ("  eingerückt\n5 > 3", "<p>  eingerückt<br>5 &gt; 3</p>"),
])
def test_text_to_html_makes_quoted_lines_quotes(text, markup):
    assert text_to_html(text) == markup


def test_quotes_in_mail_carry_their_style_inline():
    styled = quotes_styled_for_mail(text_to_html("> Frage?\nJa."))
    assert styled.startswith('<blockquote style="') and "border-left" in styled
    assert styled.count("<blockquote") == 1
