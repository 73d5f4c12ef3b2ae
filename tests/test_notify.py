"""Notifications: every template in every language, parsed strictly, with safe headers and one thread per order.

Each mail is made the way the daemon makes it — an event through
`daemon.orders.service`, its outbox row rendered by `daemon.outbound.notify` — and read back
with the standard library's parser in strict mode, so a malformed header or
MIME structure fails the test.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import email
import email.policy
import re

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.mail.addresses import check_recipient
from daemon.intake.spool import store_message
from daemon.orders.service import Content, NewFile, Via
from daemon.store.models import InboundMessage, Order, OutboxMessage
from mailbuilder import mail

NOW = dt.datetime(2026, 11, 27, 10, 0)
EUR = {"de": "24,90\u00a0€", "en": "€24.90", "fr": "24,90\u00a0€"}
LANGS = ("de", "en", "fr")
ALLOWED_HEADERS = {"from", "to", "subject", "date", "message-id", "reply-to", "in-reply-to", "references",
                   "auto-submitted", "x-auto-response-suppress", "x-ordermail-order", "mime-version",
                   "content-type"}


# ---- helpers -------------------------------------------------------------------------

def last_row() -> OutboxMessage:
    return OutboxMessage.select().order_by(OutboxMessage.id.desc()).first()


def strict(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.strict)


def render(settings, row=None):
    """(parsed mail, text part, html part) of an outbox row — the newest by default."""
    row = row or last_row()
    raw = notify.render(settings, row, NOW).raw
    parsed = strict(raw)
    check_well_formed(parsed, raw, row)
    text, html = (parsed.get_body((kind,)).get_content().replace("\r\n", "\n") for kind in ("plain", "html"))
    return parsed, text, html


def check_well_formed(parsed, raw: bytes, row: OutboxMessage) -> None:
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii(), "non-ASCII header text must be encoded"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert {name.lower() for name in parsed.keys()} <= ALLOWED_HEADERS
    assert parsed["Message-ID"] == row.message_id
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["X-Auto-Response-Suppress"] == "All"
    assert parsed["Date"].datetime == NOW.replace(tzinfo=dt.timezone.utc)
    for part in (parsed.get_body(("plain",)), parsed.get_body(("html",))):
        assert part is not None and part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"


def new_order(store, settings, lang="de", number="1042", **changes):
    return orders.create_order(store, settings, sample_order(number, locale=lang, **changes), now=NOW)


def at(hours: float) -> Via:
    return Via(now=NOW + dt.timedelta(hours=hours))


# ---- golden tests: every customer template in every language ---------------------------

@pytest.mark.parametrize("lang", LANGS)
def test_order_received_names_items_total_and_the_payment_instructions(store, settings, lang):
    new_order(store, settings, lang)
    parsed, text, html = render(settings)
    words = {"de": ("Ihre Bestellung 1042 bei Teeladen", "Guten Tag Erika Mustermann", "Summe", "Überweisung"),
             "en": ("Your order 1042 at Teeladen", "Dear Erika Mustermann", "Total", "Payment method"),
             "fr": ("Votre commande 1042 chez Teeladen", "Bonjour Erika Mustermann", "Total", "Mode de paiement")}[lang]
    assert parsed["Subject"] == words[0]
    for phrase in words[1:]:
        assert phrase in text and phrase in html
    assert "Teekanne" in text and EUR[lang] in text and EUR[lang] in html
    # the bank-transfer instructions in the customer's language, {total} and {number} filled in
    assert {"de": f"Bitte überweisen Sie {EUR[lang]} mit dem Verwendungszweck 1042.",
            "en": f"Please transfer {EUR[lang]} with the reference 1042.",
            "fr": f"Veuillez virer {EUR[lang]} avec la référence 1042."}[lang] in text
    assert {"de": "27. November 2026", "en": "November 27, 2026", "fr": "27 novembre 2026"}[lang] in text
    assert orders.find_order("1042").status_token in text


@pytest.mark.parametrize("lang, phrase", [("de", "Ihre Zahlung über 24,90\u00a0€"),
                                          ("en", "we have received your payment of €24.90".capitalize()),
                                          ("fr", "Nous avons bien reçu votre paiement de 24,90\u00a0€")])
def test_payment_received(store, settings, lang, phrase):
    new_order(store, settings, lang)
    orders.mark_paid(store, settings, "1042", via=at(1))
    parsed, text, html = render(settings)
    assert parsed["Subject"] == {"de": "Zahlung für Bestellung 1042 erhalten",
                                 "en": "Payment received for order 1042",
                                 "fr": "Paiement reçu pour la commande 1042"}[lang]
    assert phrase in text
    assert "Bitte überweisen" not in text


@pytest.mark.parametrize("lang", LANGS)
def test_shipped_gives_carrier_tracking_code_and_link(store, settings, lang):
    new_order(store, settings, lang)
    orders.mark_shipped(store, settings, "1042", tracking="00340434161094042557", carrier="dhl", via=at(2))
    parsed, text, html = render(settings)
    assert parsed["Subject"] == {"de": "Ihre Bestellung 1042 ist unterwegs", "en": "Your order 1042 is on its way",
                                 "fr": "Votre commande 1042 est en route"}[lang]
    link = "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode=00340434161094042557"
    assert "00340434161094042557" in text and link in text and f'href="{link}"' in html
    assert {"de": "Versanddienst:   DHL", "en": "Carrier:         DHL", "fr": "Transporteur :    DHL"}[lang] in text


def test_a_second_shipped_mail_tells_of_new_shipping_details(store, settings):
    new_order(store, settings, "en")
    orders.mark_shipped(store, settings, "1042", tracking="A1", carrier="UPS", via=at(1))
    orders.mark_shipped(store, settings, "1042", tracking="1Z999AA10123456784", via=at(2))
    parsed, text, _ = render(settings)
    assert parsed["Subject"] == "New shipping details for order 1042"
    assert "https://www.ups.com/track?tracknum=1Z999AA10123456784" in text


@pytest.mark.parametrize("carrier, code, url", [
    ("DPD", "01234567890123", "https://tracking.dpd.de/status/de_DE/parcel/01234567890123"),
    ("Hermes", "H100", "https://www.myhermes.de/empfangen/sendungsverfolgung/sendungsinformation#H100"),
    ("GLS", "Z9", "https://gls-group.com/DE/de/paketverfolgung?match=Z9"),
    ("La Poste", "6A123", "https://www.laposte.fr/outils/suivre-vos-envois?code=6A123"),
    ("Colissimo", "6A124", "https://www.laposte.fr/outils/suivre-vos-envois?code=6A124"),
    ("Royal Mail", "AB123456789GB", "https://www.royalmail.com/track-your-item#/tracking-results/AB123456789GB"),
    ("UPS", "1Z 99/9&x", "https://www.ups.com/track?tracknum=1Z%2099%2F9%26x"),
])
def test_known_carriers_get_a_tracking_link_with_the_code_quoted(carrier, code, url):
    assert notify.tracking_link(carrier, code)[1] == url


def test_an_unknown_carrier_is_named_without_a_link():
    assert notify.tracking_link("Kurier Müller", "77") == ("Kurier Müller", None)


@pytest.mark.parametrize("lang, subject, phrase", [
    ("de", "Ihre Bestellung 1042 wurde storniert", "Grund: nicht mehr lieferbar"),
    ("en", "Your order 1042 has been cancelled", "Reason: nicht mehr lieferbar"),
    ("fr", "Votre commande 1042 a été annulée", "Motif : nicht mehr lieferbar"),
])
def test_cancelled_gives_the_reason(store, settings, lang, subject, phrase):
    new_order(store, settings, lang)
    orders.mark_cancelled(store, settings, "1042", reason="nicht mehr lieferbar", via=at(1))
    parsed, text, html = render(settings)
    assert parsed["Subject"] == subject and phrase in text and phrase in html


@pytest.mark.parametrize("lang, amount, so_far", [
    ("de", "10,00\u00a0€", "Insgesamt erstattet: 10,00\u00a0€ von 24,90\u00a0€."),
    ("en", "€10.00", "Refunded so far: €10.00 of €24.90."),
    ("fr", "10,00\u00a0€", "Remboursé jusqu'ici : 10,00\u00a0€ sur 24,90\u00a0€."),
])
def test_a_partial_refund_states_the_amount_and_what_was_refunded_so_far(store, settings, lang, amount, so_far):
    new_order(store, settings, lang)
    orders.mark_paid(store, settings, "1042", via=at(1))
    orders.mark_refunded(store, settings, "1042", amount=decimal.Decimal("10.00"), via=at(2))
    parsed, text, html = render(settings)
    assert amount in text and so_far in text and amount in html
    assert parsed["Subject"] == {"de": "Erstattung zu Ihrer Bestellung 1042", "en": "Refund for your order 1042",
                                 "fr": "Remboursement de votre commande 1042"}[lang]


@pytest.mark.parametrize("lang", LANGS)
def test_payment_reminder_repeats_amount_and_instructions(store, settings, lang):
    order = new_order(store, settings, lang)
    with store.atomic():
        orders.queue_mail(settings, "payment_reminder", order.customer_email, order=order, now=NOW)
    parsed, text, _ = render(settings)
    assert parsed["Subject"] == {"de": "Erinnerung: Bestellung 1042 ist noch nicht bezahlt",
                                 "en": "Reminder: order 1042 is not paid yet",
                                 "fr": "Rappel : la commande 1042 n'est pas encore payée"}[lang]
    assert EUR[lang] in text
    assert {"de": "Verwendungszweck 1042", "en": "reference 1042", "fr": "référence 1042"}[lang] in text


@pytest.mark.parametrize("lang, files, phrase", [
    ("de", 1, "die angehängte Datei haben wir daher nicht gespeichert"),
    ("de", 3, "die 3 angehängten Dateien haben wir daher nicht gespeichert"),
    ("en", 2, "the 2 attached files were not kept"),
    ("fr", 1, "le fichier joint n'a donc pas été conservé"),
])
def test_files_refused_uses_plural_rules_and_names_the_files_address(store, settings, lang, files, phrase):
    settings = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, files_address="dateien@shop.example"))
    order = new_order(store, settings, lang)
    with store.atomic():
        orders.queue_mail(settings, "files_refused", order.customer_email, order=order, data={"files": files}, now=NOW)
    _, text, html = render(settings)
    assert phrase in text and "dateien@shop.example" in text and 'href="mailto:dateien@shop.example"' in html


def test_french_uses_one_for_zero_and_one_like_cldr():
    assert notify.plural(0, "{n} fichier", "{n} fichiers", lang="fr") == "0 fichier"
    assert notify.plural(0, "{n} Datei", "{n} Dateien", lang="de") == "0 Dateien"


@pytest.mark.parametrize("lang, money", [("de", "1.234,50\u00a0€"), ("en", "€1,234.50"), ("fr", "1\u202f234,50\u00a0€")])
def test_money_is_formatted_by_babel_per_language(lang, money):
    assert notify.money(decimal.Decimal("1234.50"), "EUR", lang=lang) == money


# ---- the owner's message: formatting, files, inline images ----------------------------

OWNER_HTML = ('<p>Guten Tag Frau Mustermann,</p><p>Ihre <b>Gravur</b> ist fertig:</p>'
              '<ul><li>Vorderseite: „Erika“</li><li>Rückseite: leer</li></ul>'
              '<blockquote>Bitte prüfen Sie das Bild.</blockquote>'
              '<p><img src="cid:skizze@shop" alt="Skizze"> <a href="https://shop.example/gravur">Vorschau</a></p>'
              '<script>alert(1)</script>')
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + b"x" * 3000


def add_owner_message(store, settings, files=()):
    new_order(store, settings)
    return orders.add_message(store, settings, "1042", Content(subject="Ihre Gravur", html=OWNER_HTML, files=files),
                              via=at(3))


def test_an_owner_message_keeps_its_formatting_and_its_text_part_is_a_plain_rendering(store, settings):
    add_owner_message(store, settings)
    parsed, text, html = render(settings)
    assert parsed["Subject"] == "Ihre Gravur (Bestellung 1042)"
    assert "<b>Gravur</b>" in html and "<li>Vorderseite: „Erika“</li>" in html and "<script" not in html
    assert "- Vorderseite: „Erika“\n- Rückseite: leer" in text
    assert "> Bitte prüfen Sie das Bild." in text
    assert "Vorschau <https://shop.example/gravur>" in text
    assert "<" + "b>" not in text and "alert(1)" not in text


def test_owner_files_are_attached_and_inline_images_shown_by_cid(store, settings):
    add_owner_message(store, settings, files=(NewFile("skizze.png", "image/png", PNG, "skizze@shop"),
                                              NewFile("Angebot für Erika.pdf", "application/pdf", PDF)))
    parsed, text, html = render(settings)
    assert parsed.get_content_type() == "multipart/mixed"
    related = next(p for p in parsed.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert image["Content-ID"] == "<skizze@shop>" and image.get_content() == PNG
    attachment = next(parsed.iter_attachments())
    assert attachment.get_filename() == "Angebot für Erika.pdf" and attachment.get_content() == PDF
    assert 'src="cid:skizze@shop"' in html
    assert "Im Anhang: skizze.png, Angebot für Erika.pdf" in text


def test_files_beyond_the_cap_are_linked_to_the_status_page_not_attached(store, settings):
    settings = dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, attachments_max_bytes=1000))
    add_owner_message(store, settings, files=(NewFile("skizze.png", "image/png", PNG, "skizze@shop"),
                                              NewFile("Angebot.pdf", "application/pdf", PDF)))
    parsed, text, html = render(settings)
    status_url = settings.status_url(orders.find_order("1042").status_token)
    assert [p.get_filename() for p in parsed.iter_attachments()] == []
    assert not any(p.get_content_type() in ("image/png", "application/pdf") for p in parsed.walk())
    assert "Angebot.pdf (2,9\u00a0KB)" in text and "skizze.png (1,0\u00a0KB)" in text and status_url in text
    assert "cid:skizze@shop" not in html and "[skizze.png]" in html
    assert f'<a href="{status_url}">Angebot.pdf</a>' in html


# ---- headers: threading, reply addresses, encoding, injection ------------------------

def test_three_mails_of_one_order_form_one_thread(store, settings):
    new_order(store, settings)
    orders.mark_paid(store, settings, "1042", via=at(1))
    orders.mark_shipped(store, settings, "1042", tracking="T1", via=at(2))
    rows = list(OutboxMessage.select().order_by(OutboxMessage.id))
    first, second, third = (render(settings, row)[0] for row in rows)
    assert first["In-Reply-To"] is None and first["References"] is None
    assert second["In-Reply-To"] == rows[0].message_id
    assert second["References"] == rows[0].message_id
    assert third["In-Reply-To"] == rows[1].message_id
    assert third["References"].split() == [rows[0].message_id, rows[1].message_id]
    assert len({m["Message-ID"] for m in (first, second, third)}) == 3


def test_the_thread_takes_in_the_customers_own_reply_but_not_mails_to_others(store, settings):
    order = new_order(store, settings)
    reply_id = "<reply-1@example.org>"
    orders.add_event(store, settings, "1042", "customer_reply", Content(text="Wann kommt es?"),
                     via=Via(author="customer", message_id=reply_id, now=NOW + dt.timedelta(hours=1)))
    with store.atomic():
        orders.queue_mail(settings, "owner_alert", "owner@shop.example", order=order, data={"text": "x"}, now=NOW)
    orders.add_message(store, settings, "1042", Content(text="Morgen."), via=at(2))
    created = OutboxMessage.select().order_by(OutboxMessage.id).first()
    parsed, _, _ = render(settings)
    assert parsed["References"].split() == [created.message_id, reply_id]
    assert parsed["In-Reply-To"] == reply_id


def test_reply_to_is_the_orders_reply_token_and_the_envelope_its_bounce_token(store, settings):
    order = new_order(store, settings)
    row = last_row()
    mail_ = notify.render(settings, row, NOW)
    parsed = strict(mail_.raw)
    reply_to = parsed["Reply-To"].addresses[0].addr_spec
    target = check_recipient(reply_to, settings, NOW.date())
    assert (target.kind, target.order_id, target.purpose) == ("token", order.id, tokens.CUSTOMER_REPLY)
    bounce = check_recipient(mail_.envelope_from, settings, NOW.date())
    assert (bounce.order_id, bounce.purpose) == (order.id, tokens.BOUNCE)
    assert parsed["From"].addresses[0].addr_spec == "orders@shop.example"
    assert parsed["From"].addresses[0].display_name == "Teeladen"
    assert parsed["To"].addresses[0].display_name == "Erika Mustermann"


def test_non_ascii_names_and_subjects_are_encoded_and_read_back_intact(store, settings):
    settings = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, name="Tee & Töpfe „Ost“"))
    new_order(store, settings, customer={"name": "Zoë Ünal-Łukasiewicz", "email": "zoe@example.org"})
    orders.add_message(store, settings, "1042", Content(subject="Grüße – Ihre Teekanne ☕ ist da", text="Hallo"),
                       via=at(1))
    parsed, _, _ = render(settings)
    assert parsed["To"].addresses[0].display_name == "Zoë Ünal-Łukasiewicz"
    assert parsed["From"].addresses[0].display_name == "Tee & Töpfe „Ost“"
    assert parsed["Subject"] == "Grüße – Ihre Teekanne ☕ ist da (Bestellung 1042)"


INJECTION = "\r\nBcc: victim@evil.example\r\nX-Evil: 1"


def assert_not_injected(parsed, raw_text: str) -> None:
    assert parsed["Bcc"] is None and parsed["X-Evil"] is None
    assert not re.search(r"^(Bcc|X-Evil):", raw_text, re.MULTILINE)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["erika@example.org"]


def test_a_line_break_in_the_customers_name_cannot_add_a_header_or_recipient(store, settings):
    new_order(store, settings)
    Order.update(customer_name="Erika" + INJECTION + ", <victim@evil.example>").execute()
    orders.mark_paid(store, settings, "1042", via=at(1))
    row = last_row()
    raw = notify.render(settings, row, NOW).raw
    parsed, text, _ = render(settings, row)
    assert_not_injected(parsed, raw.decode("ascii"))
    assert parsed["To"].addresses[0].display_name.startswith("Erika Bcc: victim@evil.example")
    assert "\nBcc:" not in text


def test_a_line_break_in_a_subject_or_tracking_code_cannot_add_a_header(store, settings):
    new_order(store, settings)
    orders.mark_shipped(store, settings, "1042", tracking="ABC" + INJECTION, carrier="DHL" + INJECTION, via=at(1))
    orders.add_message(store, settings, "1042", Content(subject="Hallo" + INJECTION, text="Text"), via=at(2))
    for row in OutboxMessage.select().order_by(OutboxMessage.id):
        raw = notify.render(settings, row, NOW).raw
        parsed, text, _ = render(settings, row)
        assert_not_injected(parsed, raw.decode("ascii"))
    shipped = render(settings, OutboxMessage.get(OutboxMessage.kind == "shipped"))[1]
    assert "ABC Bcc: victim@evil.example X-Evil: 1" in shipped


def test_an_unsafe_recipient_address_is_refused_not_written(store, settings):
    order = new_order(store, settings)
    with store.atomic():
        row = orders.queue_mail(settings, "paid", "erika@example.org>\r\nBcc: x@evil.example", order=order, now=NOW)
    with pytest.raises(notify.mime.BadAddress):
        notify.render(settings, row, NOW)


# ---- mails to the owner ------------------------------------------------------------------

def received(raw: bytes) -> InboundMessage:
    message_id = store_message(raw, channel="smtp", envelope_from="erika@example.org",
                               recipients=["orders@shop.example"])
    return InboundMessage.get_by_id(message_id)


def forward_reply(store, settings, from_customer=True, lang="de"):
    settings = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, locale=lang))
    new_order(store, settings, "fr")
    raw = mail(to="orders@shop.example", sender="Erika Mustermann <erika@example.org>",
               subject="Re: Ihre Bestellung 1042", body="Können Sie Geschenkpapier nehmen?\n\n> alt",
               attachments=(("foto.jpg", "image/jpeg", b"\xff\xd8" + b"j" * 50),))
    inbound = received(raw)
    kind = "customer_reply" if from_customer else "system"
    change = orders.add_event(store, settings, "1042", kind,
                              Content(subject="Re: Ihre Bestellung 1042", text="Können Sie Geschenkpapier nehmen?"),
                              data={"files_left_out": 1, **({} if from_customer else {"from": "mallory@example.net"})},
                              via=Via(author="customer" if from_customer else "system",
                                      message_id="<r1@example.org>", now=NOW))
    with store.atomic():
        orders.queue_mail(settings, "reply_forward", "owner@shop.example", order=orders.find_order("1042"),
                          event=change.event_id, inbound=inbound, data={"from_customer": from_customer}, now=NOW)
    return settings, raw


def test_a_customer_reply_is_forwarded_to_the_owner_in_the_shops_language_with_the_original(store, settings):
    settings, raw = forward_reply(store, settings)
    parsed, text, html = render(settings)
    assert parsed["Subject"] == "Bestellung 1042: Antwort von Erika Mustermann"
    assert "Erika Mustermann schreibt zu Bestellung 1042:" in text
    assert "Können Sie Geschenkpapier nehmen?" in text and "Achtung" not in text
    assert "eine Datei" in text
    original = next(p for p in parsed.walk() if p.get_content_type() == "message/rfc822")
    assert original.get_content()["Subject"] == "Re: Ihre Bestellung 1042"
    target = check_recipient(parsed["Reply-To"].addresses[0].addr_spec, settings, NOW.date())
    assert target.purpose == tokens.OWNER_ANSWER
    assert parsed["To"].addresses[0].addr_spec == "owner@shop.example"


@pytest.mark.parametrize("lang, subject, warning", [
    ("de", "Bestellung 1042: Nachricht von fremder Adresse mallory@example.net", "Achtung: Diese Nachricht kam nicht"),
    ("en", "Order 1042: message from another address, mallory@example.net", "Careful: this message did not come"),
    ("fr", "Commande 1042 : message d'une autre adresse, mallory@example.net", "Attention : ce message ne vient pas"),
])
def test_a_reply_from_another_address_is_forwarded_with_a_warning(store, settings, lang, subject, warning):
    settings, _ = forward_reply(store, settings, from_customer=False, lang=lang)
    parsed, text, html = render(settings)
    assert parsed["Subject"] == subject and warning in text and warning in html


@pytest.mark.parametrize("lang, subject", [("de", "Nicht zugeordnete Mail: Frage zu Teekannen"),
                                           ("en", "Unmatched mail: Frage zu Teekannen"),
                                           ("fr", "Courriel non attribué : Frage zu Teekannen")])
def test_unmatched_mail_is_forwarded_to_the_owner_as_an_attached_message(store, settings, lang, subject):
    settings = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, locale=lang))
    raw = mail(to="orders@shop.example", sender="Max Muster <max@example.net>", subject="Frage zu Teekannen",
               body="Haben Sie auch grüne Teekannen?")
    with store.atomic():
        orders.queue_mail(settings, "unmatched_forward", "owner@shop.example", inbound=received(raw), now=NOW)
    parsed, text, html = render(settings)
    assert parsed["Subject"] == subject
    assert "Haben Sie auch grüne Teekannen?" in text and "max@example.net" in text
    attached = next(p for p in parsed.walk() if p.get_content_type() == "message/rfc822")
    assert attached.get_content()["From"] == "Max Muster <max@example.net>"
    assert parsed["Reply-To"].addresses[0].addr_spec == "max@example.net"


def test_a_mail_bigger_than_we_attach_is_forwarded_with_its_headers_and_where_it_is_kept(store, settings):
    settings = dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, attachments_max_bytes=4096))
    raw = mail(to="orders@shop.example", sender="Max Muster <max@example.net>", subject="Fotos",
               body="Hier die Fotos." + "\n" + "A" * 76 * 200)
    with store.atomic():
        inbound = received(raw)
        orders.queue_mail(settings, "unmatched_forward", "owner@shop.example", inbound=inbound, now=NOW)
    parsed, text, _ = render(settings)
    assert not any(p.get_content_type() == "message/rfc822" for p in parsed.walk())
    [headers] = [p for p in parsed.walk() if p.get_content_type() == "text/rfc822-headers"]
    block = headers.get_payload(decode=True)
    assert b"Subject: Fotos" in block and b"From: Max Muster <max@example.net>" in block and b"AAAA" not in block
    note = next(p for p in parsed.walk() if "only its headers are attached" in str(p.get_payload(decode=True)))
    assert f"ordermail inbound show {inbound.id}" in note.get_content()


def test_an_unmatched_8bit_mail_with_overlong_lines_is_attached_as_an_eml_file(store, settings):
    raw = (b"From: x@example.net\nTo: orders@shop.example\nSubject: lang\nMessage-ID: <l@example.net>\n"
           b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
           + "Grüße ".encode() * 400 + b"\n")
    with store.atomic():
        orders.queue_mail(settings, "unmatched_forward", "owner@shop.example", inbound=received(raw), now=NOW)
    parsed, _, _ = render(settings)
    attachment = next(parsed.iter_attachments())
    assert attachment.get_filename() == "original.eml" and attachment.get_content() == raw


@pytest.mark.parametrize("lang", LANGS)
def test_receipts_and_alerts_carry_the_given_text(store, settings, lang):
    settings = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, locale=lang))
    order = new_order(store, settings)
    with store.atomic():
        orders.queue_mail(settings, "receipt", "owner@shop.example", now=NOW,
                          data={"text": "paid 1042: done\nshipped 9999: no order 9999", "in_reply_to": "<cmd@owner>"})
    parsed, text, html = render(settings)
    assert "shipped 9999: no order 9999" in text and "shipped 9999: no order 9999" in html
    assert parsed["In-Reply-To"] == "<cmd@owner>"
    assert parsed["Reply-To"].addresses[0].addr_spec == settings.command_address
    with store.atomic():
        orders.queue_mail(settings, "owner_alert", "owner@shop.example", order=order, now=NOW,
                          data={"subject": "PayPal: amount differs", "text": "IPN for 1042 said 20.00"})
    parsed, text, _ = render(settings)
    assert parsed["Subject"].startswith("PayPal: amount differs (")
    assert "IPN for 1042 said 20.00" in text and "/admin?q=number%3A1042" in text


def test_an_alert_about_an_undelivered_mail_says_what_and_to_whom(store, settings):
    order = new_order(store, settings)
    with store.atomic():
        orders.queue_mail(settings, "owner_alert", "owner@shop.example", order=order, now=NOW,
                          data={"undelivered": True, "kind": "shipped", "recipient": "erika@example.org",
                                "error": "550 5.1.1 no such user", "gave_up": False, "attempts": 1,
                                "queued": "2026-11-27T10:00"})
    parsed, text, _ = render(settings)
    assert "erika@example.org" in parsed["Subject"] and "550 5.1.1 no such user" in text


def test_new_order_mail_to_the_owner(store, settings):
    order = new_order(store, settings, "fr")
    with store.atomic():
        orders.queue_mail(settings, "new_order", "owner@shop.example", order=order, now=NOW)
    parsed, text, _ = render(settings)
    assert parsed["Subject"] == "Neue Bestellung 1042: Erika Mustermann, 24,90\u00a0€"
    assert "1 × Teekanne: 24,90\u00a0€" in text


# ---- templates of the shop ------------------------------------------------------------

def test_a_shop_template_replaces_the_built_in_one(store, settings, tmp_path):
    (tmp_path / "paid.de.txt").write_text("Subject: Geld ist da, {{ order.name }}!\n\nDanke für {{ order.total }}.\n",
                                          encoding="utf-8")
    settings = dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, templates_dir=str(tmp_path)))
    new_order(store, settings)
    orders.mark_paid(store, settings, "1042", via=at(1))
    parsed, text, html = render(settings)
    assert parsed["Subject"] == "Geld ist da, Erika Mustermann!"
    assert text == "Danke für 24,90\u00a0€.\n"
    assert "Ihre Zahlung über" in html   # the HTML part was not overridden


def test_a_broken_shop_template_falls_back_to_the_built_in_one(store, settings, tmp_path):
    (tmp_path / "paid.de.txt").write_text("Subject: {{ order.nmae }\n\nkaputt\n", encoding="utf-8")
    settings = dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, templates_dir=str(tmp_path)))
    assert any("paid.de.txt" in problem for problem in notify.check_templates(settings))
    new_order(store, settings)
    orders.mark_paid(store, settings, "1042", via=at(1))
    parsed, _, _ = render(settings)
    assert parsed["Subject"] == "Zahlung für Bestellung 1042 erhalten"


def test_every_built_in_template_compiles():
    from daemon.config import Settings
    assert notify.check_templates(Settings()) == []


def test_a_new_kind_about_an_order_is_a_customer_mail_in_the_orders_language(store, settings, tmp_path):
    (tmp_path / "gift_note.fr.txt").write_text("Subject: Cadeau {{ order.number }}\n\nBonjour {{ order.name }}\n",
                                               encoding="utf-8")
    (tmp_path / "gift_note.fr.html").write_text("<p>Bonjour {{ order.name }}</p>", encoding="utf-8")
    settings = dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, templates_dir=str(tmp_path)))
    order = new_order(store, settings, "fr")
    with store.atomic():
        orders.queue_mail(settings, "gift_note", order.customer_email, order=order, now=NOW)
    parsed, text, html = render(settings)
    assert parsed["Subject"] == "Cadeau 1042" and text == "Bonjour Erika Mustermann\n"
    reply_to = check_recipient(parsed["Reply-To"].addresses[0].addr_spec, settings, NOW.date())
    assert reply_to.purpose == tokens.CUSTOMER_REPLY
