"""The GiroCode (EPC QR) of a bank transfer: in the mail, on the status page, and its configuration.

Orders are created and mails sent through the real `ordermail` command; the
mail is read from the maildir and its inline PNG scanned (zxing-cpp) as a
banking app would scan it.
"""
from __future__ import annotations

import json
import re

import pytest

from conftest import sample_order
from daemon.orders import service as orders
from daemon.orders.service import Via
from daemon.store.database import open_store
from payment_shop import ACCOUNT, html_of, inline_images, load, outbox_mails, scan, text_of, write_config
from statuspage.app import SECURITY_HEADERS, make_app
from test_pages import ActiveContent, Client

EPC_1042 = "\n".join(["BCD", "002", "2", "SCT", ACCOUNT["bic"], ACCOUNT["holder"], ACCOUNT["iban"],
                      "EUR24.9", "", "", "1042"])


@pytest.fixture
def shop(settings, tmp_path):
    return write_config(settings, tmp_path)


def create_and_send(ordermail, shop, **change):
    created = ordermail("order", "create", "--json", "-", stdin=json.dumps(sample_order(**change)), config=shop)
    assert created.returncode == 0, created.stderr
    sent = ordermail("jobs", "run", "outbox-retry", config=shop)
    assert sent.returncode == 0, sent.stderr


def test_the_order_received_mail_carries_a_girocode_a_banking_app_reads(ordermail, shop, store):
    create_and_send(ordermail, shop)
    mail, = outbox_mails(load(shop))
    images = inline_images(mail)
    assert len(images) == 1
    cid, png = next(iter(images.items()))
    assert png.startswith(b"\x89PNG")
    assert scan(png) == [EPC_1042]     # holder, IBAN, BIC, amount, the order number as remittance text
    html = html_of(mail)
    assert f'src="cid:{cid}"' in html and ACCOUNT["iban_formatted"] in html
    text = text_of(mail)
    assert re.search(r"Empfänger: +Teeladen GmbH\n +IBAN: +DE02 1203 0000 0000 2020 51\n +BIC: +BYLADEM1001\n"
                     r" +Betrag: +24,90\xa0€\n +Verwendungszweck: +1042\n", text), text
    # the instructions in the customer's language, with {iban} filled in
    assert "Bitte überweisen Sie 24,90\xa0€ auf das Konto DE02 1203 0000 0000 2020 51 mit dem Verwendungszweck 1042." in text


def test_instructions_come_in_the_customers_language_else_the_shops(ordermail, shop, store):
    create_and_send(ordermail, shop, number="1042", locale="en")
    create_and_send(ordermail, shop, number="1043", locale="fr", total="24.90")
    english, french = outbox_mails(load(shop))
    assert "Please transfer €24.90 to DE02 1203 0000 0000 2020 51, reference 1042." in text_of(english)
    assert re.search(r"Beneficiary: +Teeladen GmbH", text_of(english))
    # no French text configured: the shop's German one, inside the French mail
    assert "Bitte überweisen Sie 24,90\xa0€ auf das Konto" in text_of(french)
    assert re.search(r"Bénéficiaire : +Teeladen GmbH", text_of(french))


@pytest.mark.parametrize("change, why", [
    ({"currency": "CHF"}, "a SEPA credit transfer is in euros"),
    ({"payment_method": "paypal"}, "no account for the method"),
    ({"payment_method": "invoice"}, "no account for the method"),
])
def test_no_girocode_where_it_cannot_be_right(ordermail, shop, store, change, why):
    create_and_send(ordermail, shop, **change)
    mail, = outbox_mails(load(shop))
    assert inline_images(mail) == {}, why
    assert "Verwendungszweck:" not in text_of(mail) and "cid:" not in html_of(mail)


def test_an_order_paid_before_its_mail_went_out_gets_no_code(ordermail, shop, store):
    created = ordermail("order", "create", "--json", "-", stdin=json.dumps(sample_order()), config=shop)
    assert created.returncode == 0
    assert ordermail("command", "paid 1042", config=shop).returncode == 0
    assert ordermail("jobs", "run", "outbox-retry", config=shop).returncode == 0
    received = next(m for m in outbox_mails(load(shop)) if "Ihre Bestellung 1042 bei" in m["Subject"])
    assert inline_images(received) == {} and "Verwendungszweck:" not in text_of(received)


# ---- the status page -------------------------------------------------------------------

def test_the_status_page_shows_the_girocode_while_the_order_is_unpaid(shop):
    settings = load(shop)
    store = open_store(settings.database.url)
    try:
        order = orders.create_order(store, settings, sample_order())
        client = Client(make_app(settings, store))
        page = client.get(f"/o/{order.status_token}")
        assert page.status == 200
        src = f"/status/o/{order.status_token}/girocode.svg"
        assert f'<img src="{src}" alt="GiroCode für die Überweisung von 24,90\xa0€ an Teeladen GmbH">' in page.text
        assert "DE02 1203 0000 0000 2020 51" in page.text and "BYLADEM1001" in page.text
        assert ActiveContent(page.text).found == []      # the CSP's img-src 'self' allows it, nothing inline
        image = client.get(src)
        assert image.status == 200 and image.header("Content-Type") == "image/svg+xml"
        assert image.header("Content-Security-Policy") == SECURITY_HEADERS["Content-Security-Policy"]
        assert image.body.startswith(b"<svg") and b"<script" not in image.body
        orders.mark_paid(store, settings, "1042", via=Via(author="system"))
        page = client.get(f"/o/{order.status_token}")
        assert "girocode.svg" not in page.text and "BYLADEM1001" not in page.text
        assert client.get(src).status == 404
        assert client.get("/o/not-a-token/girocode.svg").status == 404
    finally:
        store.close()


# ---- configuration ---------------------------------------------------------------------

@pytest.mark.parametrize("old, new, message", [
    ('iban = "DE02 1203 0000 0000 2020 51"', 'iban = "DE02 1203 0000 0000 2020 52"',
     "[payment.bank_transfer] iban 'DE02 1203 0000 0000 2020 52' is not a valid IBAN: Invalid checksum digits"),
    ('iban = "DE02 1203 0000 0000 2020 51"', 'iban = "BR1800360305000010009795493C1"',
     "[payment.bank_transfer] iban 'BR1800360305000010009795493C1' is outside the SEPA zone"),
    ('bic = "byladem1001"', 'bic = "BYLA1001"', "[payment.bank_transfer] bic 'BYLA1001' is not a valid BIC"),
    ('bic = "byladem1001"\n', '', "[payment.bank_transfer] bic is missing: iban, bic and account_holder go together"),
    ("remind_after_days = 7", "remind_after_days = -1",
     "[payment.bank_transfer] remind_after_days must be 0 (never) or more, not -1"),
    ("cancel_after_days = 21", "cancel_after_days = 5",
     "[payment.bank_transfer] cancel_after_days (5) must be more than remind_after_days (7)"),
    ("delete_cancelled_after_days = 30", "delete_cancelled_after_days = -30",
     "[shop] delete_cancelled_after_days must be 0 (never) or more, not -30"),
    ("keep_raw_days = 90", "keep_raw_days = -1", "[inbound] keep_raw_days must be 0 (never) or more, not -1"),
    ("Verwendungszweck {number}", "Verwendungszweck {order}",
     "[payment.bank_transfer] instructions.de: unknown placeholder {order}"),
    ('instructions = "Bitte zahlen Sie {total}', 'instructions = "Bitte zahlen Sie {total} auf {iban}',
     "[payment.invoice] instructions uses {iban} but [payment.invoice] iban is not set"),
    ('en = "Please', 'es = "Please', "[payment.bank_transfer] instructions: unknown language 'es'"),
])
def test_a_bad_account_day_count_or_placeholder_stops_start_up_naming_the_key(ordermail, shop, old, new, message):
    text = shop.read_text(encoding="utf-8")
    assert old in text
    shop.write_text(text.replace(old, new), encoding="utf-8")
    result = ordermail("check", config=shop)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
