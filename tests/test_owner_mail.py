"""The owner works by mail: only real owner mail commands, every mail gets a receipt.

Mails go through the pipe door in-process (store first, then the worker's
handling) on both databases; tests/test_owner_mail_e2e.py drives the running
daemon over SMTP.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import re
import subprocess

import dkim
import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.errors import AutoSubmittedCommand
from daemon.intake import pipe
from daemon.store.models import CommandMail, InboundMessage, OutboxMessage
from mailbuilder import mail
from statementfiles import Booking, camt053

OWNER = "Olga Owner <owner@shop.example>"


@pytest.fixture
def two_orders(store, settings):
    orders.create_order(store, settings, sample_order("1042"))
    orders.create_order(store, settings, sample_order("1043"))


def command_address(settings) -> str:
    return settings.command_address


def send(store, settings, raw: bytes, to: str | None = None) -> InboundMessage:
    to = to or settings.command_address
    pipe.deliver(store, settings, io.BytesIO(raw), [to], "owner@shop.example")
    return InboundMessage.select().order_by(InboundMessage.id.desc()).first()


def receipts() -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == "receipt").order_by(OutboxMessage.id))


def kinds(number: str) -> list[str]:
    return [e.kind for e in orders.order_events(orders.find_order(number))]


# ---- who may command -------------------------------------------------------------------

def test_lines_from_the_owner_are_carried_out_with_one_receipt(store, settings, two_orders):
    body = "paid 1042 1043\nshipped 1042 tracking XYZ carrier DHL\nnote 1043 supplier ref A77\n\n-- \nOlga\n"
    message = send(store, settings, mail(to=settings.command_address, sender=OWNER, subject="Heute",
                                         body=body, message_id="<batch1@shop.example>"))
    assert message.state == "done"
    assert kinds("1042") == ["created", "paid", "shipped"] and kinds("1043") == ["created", "paid", "note"]
    [receipt] = receipts()
    assert receipt.recipient == "owner@shop.example"
    assert receipt.data["in_reply_to"] == "<batch1@shop.example>" and receipt.data["subject"] == "Re: Heute"
    text = receipt.data["text"]
    assert "> paid 1042 1043\n1042 als bezahlt vermerkt" in text and "1043 als bezahlt vermerkt" in text
    assert "1042 als versandt vermerkt (Versanddienst DHL, Sendungsnummer XYZ)" in text and "mit „rückgängig“" in text
    assert "Olga" not in text                                   # the signature is no command


def test_each_line_says_what_was_wrong_and_nothing_is_half_done(store, settings, two_orders):
    orders.mark_cancelled(store, settings, "1043")
    body = "frobnicate 1042\npaid 9999\nshipped 1043\nrefunded 1042 abc\nbezahlt 1042\n"
    send(store, settings, mail(to=settings.command_address, sender=OWNER, subject="x", body=body))
    text = receipts()[0].data["text"]
    assert "NICHT AUSGEFÜHRT: unbekannter Befehl „frobnicate“ (siehe „hilfe“)" in text
    assert "NICHT AUSGEFÜHRT: keine Bestellung 9999" in text
    assert "NICHT AUSGEFÜHRT: 1043 wurde am" in text
    assert "NICHT AUSGEFÜHRT: „abc“ ist kein Betrag" in text
    assert "1042 als bezahlt vermerkt" in text
    assert kinds("1043") == ["created", "cancelled"]


def test_a_forged_from_at_the_plain_address_commands_nothing(store, settings, two_orders):
    message = send(store, settings, mail(to="orders@shop.example", sender=OWNER, body="paid 1042"),
                   to="orders@shop.example")
    assert kinds("1042") == ["created"] and receipts() == []
    assert "unmatched" in message.reason


def test_a_stranger_at_the_command_address_is_discarded_and_the_owner_alerted_once_a_day(store, settings, two_orders):
    for n in range(3):
        message = send(store, settings, mail(to=settings.command_address, sender="mallory@evil.example",
                                             body="paid 1042"))
        assert message.state == "done" and message.reason.startswith("owner mail: discarded, not answered")
    assert kinds("1042") == ["created"] and receipts() == []
    alerts = list(OutboxMessage.select().where(OutboxMessage.kind == "owner_alert"))
    assert len(alerts) == 1 and alerts[0].recipient == "owner@shop.example"
    assert "mallory@evil.example" in alerts[0].data["text"]
    assert not OutboxMessage.select().where(OutboxMessage.recipient == "mallory@evil.example").exists()


def test_a_wrong_secret_is_refused_before_the_mail_is_taken(store, settings, two_orders):
    with pytest.raises(Exception):
        send(store, settings, mail(to="orders+cmd-wrong0000000000000@shop.example", sender=OWNER, body="paid 1042"),
             to="orders+cmd-wrong0000000000000@shop.example")
    assert InboundMessage.select().count() == 0


def test_automatic_mail_at_the_command_address_is_not_obeyed(store, settings, two_orders):
    message = send(store, settings, mail(to=settings.command_address, sender=OWNER, body="paid 1042",
                                         headers={"Auto-Submitted": "auto-replied"}))
    assert kinds("1042") == ["created"] and receipts() == [] and "auto-reply" in message.reason


def _trusting(settings, **owner):
    return dataclasses.replace(settings, owner=dataclasses.replace(settings.owner, **owner))


def test_authentication_results_count_only_from_the_trusted_authserv_id(store, settings, two_orders):
    trusting = _trusting(settings, trusted_authserv_id="mx.shop.example")
    forged = {"Authentication-Results": "evil.example; dkim=pass header.d=shop.example"}
    send(store, trusting, mail(to=settings.command_address, sender=OWNER, body="paid 1042", headers=forged))
    assert kinds("1042") == ["created"]
    genuine = {"Authentication-Results": "mx.shop.example; dkim=pass header.d=shop.example; spf=pass"}
    send(store, trusting, mail(to=settings.command_address, sender=OWNER, body="paid 1043", headers=genuine))
    assert kinds("1043") == ["created", "paid"]
    unaligned = {"Authentication-Results": "mx.shop.example; dkim=pass header.d=other.example"}
    send(store, trusting, mail(to=settings.command_address, sender=OWNER, body="shipped 1043", headers=unaligned))
    assert kinds("1043") == ["created", "paid"]


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dkim")
    private = folder / "private.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    keys = folder / "keys.txt"
    keys.write_text(f"mail._domainkey.shop.example v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}\n")
    return private.read_bytes(), keys


def _signed(raw: bytes, private: bytes) -> bytes:
    signature = dkim.sign(raw, b"mail", b"shop.example", private, include_headers=[b"from", b"to", b"subject", b"message-id"])
    return signature + raw


def test_a_valid_dkim_signature_commands_and_a_broken_one_does_not(store, settings, two_orders, dkim_key):
    private, keys = dkim_key
    checking = _trusting(settings, verify_dkim=True, dkim_keys_file=str(keys))
    good = _signed(mail(to=settings.command_address, sender=OWNER, body="paid 1042"), private)
    send(store, checking, good)
    assert kinds("1042") == ["created", "paid"]
    broken = _signed(mail(to=settings.command_address, sender=OWNER, body="paid 1043"), private)
    broken = broken.replace(b"paid 1043", b"paid 1043 ")       # the body changed after signing
    send(store, checking, broken)
    unsigned = mail(to=settings.command_address, sender=OWNER, body="paid 1043")
    send(store, checking, unsigned)
    assert kinds("1043") == ["created"]


# ---- what a command mail can say ------------------------------------------------------------

def test_a_full_event_carries_the_body_and_the_pictures(store, settings, two_orders):
    photo = ("kanne.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + b"j" * 3000)
    raw = mail(to=settings.command_address, sender=OWNER, subject="shipped 1042 carrier DHL",
               body="Ihre Kanne ist unterwegs!\n\nViele Grüße\n\nAm 1.12.2026 schrieb Erika:\n> Wann?\n",
               attachments=(photo,))
    send(store, settings, raw)
    event = orders.order_events(orders.find_order("1042"))[-1]
    assert event.kind == "shipped" and event.notified
    assert "Ihre Kanne ist unterwegs!" in event.body_text and "Wann?" not in event.body_text
    [attachment] = event.attachments
    assert attachment.filename == "kanne.jpg" and attachment.blob.data == photo[2]
    assert orders.find_order("1042").carrier == "DHL"


def test_html_with_scripts_is_sanitised_in_a_full_event(store, settings, two_orders):
    raw = mail(to=settings.command_address, sender=OWNER, subject="message 1042", body="Hallo",
               html='<p onclick="x()">Hallo <b>Erika</b><script>alert(1)</script></p>')
    send(store, settings, raw)
    event = orders.order_events(orders.find_order("1042"))[-1]
    assert event.kind == "message" and "<b>Erika</b>" in event.body_html
    assert "script" not in event.body_html and "onclick" not in event.body_html


def test_an_attachment_over_the_cap_fails_its_line_and_writes_nothing(store, settings, two_orders):
    small = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, attachment_max_bytes=1000))
    raw = mail(to=settings.command_address, sender=OWNER, subject="message 1042", body="Foto",
               attachments=(("big.bin", "application/octet-stream", b"x" * 5000),))
    send(store, small, raw)
    assert kinds("1042") == ["created"]
    assert "NICHT AUSGEFÜHRT: the file big.bin is 5 KB, over the limit of 1 KB" in receipts()[0].data["text"]


def test_quiet_in_a_command_mail(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="paid 1042 quiet"))
    assert not OutboxMessage.select().where(OutboxMessage.kind == "paid").exists()
    assert kinds("1042") == ["created", "paid"]


def test_show_list_and_help_answer_in_the_receipt(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="show 1042\nlist not paid\nhilfe"))
    text = receipts()[0].data["text"]
    assert "Bestellung 1042 — offen (nicht bezahlt)" in text and "Befehle, einer pro Zeile" in text
    assert "Kundschaft: Erika Mustermann" in text and "Protokoll:" in text and re.search(r"angelegt +von System", text)
    assert re.search(r"NUMMER +ANGELEGT +KUNDSCHAFT +SUMME +STATUS", text) and "1043" in text
    for english in ("Order 1042", "Customer:", "Log:", "NUMBER", "open (not paid)", " by system"):
        assert english not in text
    assert "mit „rückgängig“" not in text                           # nothing to undo


def test_the_same_message_id_twice_applies_nothing_twice(store, settings, two_orders):
    first = mail(to=settings.command_address, sender=OWNER, body="note 1042 einmal", message_id="<once@shop.example>")
    # The same Message-ID with its body changed on the way (the very same body
    # would be the same message: the worker marks it duplicate before this).
    again = first.replace(b"Subject:", b"X-Resent: yes\r\nSubject:").replace(b"einmal", b"einmal ")
    send(store, settings, first)
    send(store, settings, again)
    assert kinds("1042") == ["created", "note"]
    assert "bereits am" in receipts()[1].data["text"]


def test_a_delete_without_confirm_asks(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="delete 1042"))
    assert "schreiben Sie dazu „löschen 1042 bestätigen“" in receipts()[0].data["text"]
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="löschen 1042 bestätigen"))
    assert "endgültig gelöscht" in receipts()[1].data["text"]


def test_a_five_thousand_line_body_is_bounded(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="note 1042 x\n" * 5000))
    text = receipts()[0].data["text"]
    assert "NICHT AUSGEFÜHRT: 4800 weitere Zeilen (höchstens 200 pro Mail)" in text
    assert kinds("1042").count("note") == 200


# ---- undo -------------------------------------------------------------------------------------

def test_undo_within_a_day_reverts_what_the_mail_did(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER,
                               body="paid 1042\nshipped 1042 tracking XYZ\nnote 1043 merken"))
    receipt = receipts()[0]
    send(store, settings, mail(to=settings.command_address, sender=OWNER, subject="Re: Heute", body="undo",
                               in_reply_to=receipt.message_id))
    order = orders.find_order("1042")
    assert order.status_words() == {"paid": False, "shipped": False, "cancelled": False, "refunded": False}
    assert order.tracking_code is None and order.paid_at is None
    log = orders.order_events(order)
    assert [e.kind for e in log] == ["created", "paid", "shipped", "system", "system"]
    assert all(e.visibility == "internal" for e in log[3:])
    text = receipts()[1].data["text"]
    assert "1042: versandt rückgängig gemacht (die Kundschaft hatte die Mail schon erhalten)" in text
    assert "1042: bezahlt rückgängig gemacht" in text
    assert CommandMail.get(CommandMail.receipt_message_id == receipt.message_id).undone_at is not None


def test_undo_after_a_day_is_refused(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="paid 1042"))
    record = CommandMail.get()
    record.undo_until = record.undo_until - dt.timedelta(days=2)
    record.save()
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="undo",
                               in_reply_to=receipts()[0].message_id))
    assert orders.find_order("1042").status_words()["paid"]
    assert "Rückgängig geht 24 Stunden lang" in receipts()[1].data["text"]


def test_undo_refuses_when_the_order_changed_since(store, settings, two_orders):
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="paid 1042"))
    orders.mark_shipped(store, settings, "1042")
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="undo",
                               in_reply_to=receipts()[0].message_id))
    assert "NICHT AUSGEFÜHRT: 1042: 1042 wurde seitdem wieder geändert" in receipts()[1].data["text"]
    assert orders.find_order("1042").status_words()["paid"]


# ---- answering customers -------------------------------------------------------------------------

def test_the_owner_answers_a_forwarded_reply_and_the_customer_gets_it(store, settings, two_orders):
    order = orders.find_order("1042")
    answer_to = token_address(settings, order, tokens.OWNER_ANSWER, dt.date.today())
    send(store, settings, mail(to=answer_to, sender=OWNER, subject="Re: Frage",
                               body="Ja, gern!\n\nAm 1.12.2026 schrieb Erika:\n> Geht Gravur?\n"), to=answer_to)
    message = orders.order_events(orders.find_order("1042"))[-1]
    assert message.kind == "message" and message.author == "owner" and message.body_text == "Ja, gern!"
    assert message.notified


def test_a_stranger_at_the_owner_answer_address_reaches_nobody(store, settings, two_orders):
    order = orders.find_order("1042")
    answer_to = token_address(settings, order, tokens.OWNER_ANSWER, dt.date.today())
    send(store, settings, mail(to=answer_to, sender="mallory@evil.example", body="Ihr Paket ist beim Zoll"),
         to=answer_to)
    assert kinds("1042") == ["created"]


def test_automatic_mail_at_the_command_address_is_refused_at_smtp_time(settings):
    from daemon.intake.smtp import _refuse_automatic
    with pytest.raises(AutoSubmittedCommand):
        _refuse_automatic(mail(to=settings.command_address, sender=OWNER, body="paid 1042",
                               headers={"Auto-Submitted": "auto-generated"}), "owner@shop.example")
    _refuse_automatic(mail(to=settings.command_address, sender=OWNER, body="paid 1042"), "owner@shop.example")


def test_mixed_up_encodings_in_a_command_mail_are_read_right(store, settings, two_orders):
    raw = (f"From: Olga Owner <owner@shop.example>\r\nTo: {settings.command_address}\r\n"
           "Subject: =?utf-8?q?Gr=FC=DFe?=\r\nMessage-ID: <enc@owner.example>\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n").encode()
    raw += "vermerk 1042 Grüße aus Köln\r\nnachricht 1043 Ihre Tasse ist fertig – bis bald\r\n".encode("cp1252")
    send(store, settings, raw)
    note = orders.order_events(orders.find_order("1042"))[-1]
    message = orders.order_events(orders.find_order("1043"))[-1]
    assert note.body_text == "Grüße aus Köln"
    assert message.body_text == "Ihre Tasse ist fertig – bis bald"
    assert "NICHT AUSGEFÜHRT" not in receipts()[0].data["text"]


# ---- the shop's language -------------------------------------------------------------------

# What the receipts once said in English to a German shop: none of it may be left
# (the XML parser's own detail, "line 1, column 27", is quoted as it comes).
ENGLISH = ("order", "at column", "tracking code", "deleted", "well-formed", "no order number", "the order's total",
           "undone", "Commands, one per line", "status words", "expected", "NOT DONE", "marked")


def test_a_german_shop_reads_every_receipt_in_german(store, settings, two_orders):
    """Failing and succeeding lines, a broken and a good statement, then undo: all in German."""
    orders.create_order(store, settings, sample_order("1044"))
    body = ("frobnicate 1042\npaid 9999\npaid 1042\nshipped 1042 tracking " + "A" * 101 + "\n"
            "shipped 1042 1043 tracking X\ncancelled 1043 out of stock\ndelete 1044\nlist paid and (\n"
            "list frob:x\nlist since:2026-13-45\nhelp\n")
    statement = camt053([Booking("24.90", "Bestellung 1043"), Booking("5.00", "Danke"),
                         Booking("10.00", "Rechnung 1042")])
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body=body, attachments=(
        ("kaputt.xml", "application/xml", b"<Document><BkToCstmrStmt>"),
        ("auszug.xml", "application/xml", statement))))
    text = receipts()[0].data["text"]
    assert "NICHT AUSGEFÜHRT: eine Sendungsnummer hat höchstens 100 Zeichen; diese hat 101" in text
    assert "eine Sendungsnummer gehört zu einer Bestellung" in text
    assert "schreiben Sie dazu „löschen 1044 bestätigen“" in text
    assert "Status oder Feld erwartet nach '(' in Spalte 11" in text
    assert "unbekanntes Feld 'frob:' in Spalte 1 (Felder:" in text
    assert "ungültiges Datum '2026-13-45' für since: in Spalte 7" in text
    assert "Befehle, einer pro Zeile" in text
    assert "kaputt.xml: kein wohlgeformtes XML" in text
    assert "keine Bestellnummer gefunden" in text and "die Bestellsumme" in text
    send(store, settings, mail(to=settings.command_address, sender=OWNER, body="delete 1044 bestätigen"))
    assert "Bestellung 1044 und ihr Protokoll (Einträge: 1) endgültig gelöscht" in receipts()[1].data["text"]
    send(store, settings, mail(to=settings.command_address, sender=OWNER, subject="Re: x", body="undo",
                               in_reply_to=receipts()[0].message_id))
    undone = receipts()[2].data["text"]
    assert "1042: bezahlt rückgängig gemacht" in undone
    for receipt in receipts():
        said = receipt.data["text"].split("\n-- \n")[0]
        left = [phrase for phrase in ENGLISH if phrase in said]
        assert not left, (left, said)
