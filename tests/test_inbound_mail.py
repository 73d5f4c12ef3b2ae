"""Parse once: every mail, however broken, becomes one typed InboundMail."""
from __future__ import annotations

import base64
import dataclasses
import gc
import os
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import pytest

from daemon.mail import headers, html_text
from daemon.mail.parsing import InboundMail, attachment_data, parse_mail

MAILS = Path(__file__).with_name("mails") / "inbound"
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
CORPUS_FOLDERS = ("cpython_email", "mailparser", "django_helpdesk",
                  "github_email_reply_parser/emails", "zapier_email_reply_parser/emails")


def parse_file(name: str, **kwargs) -> InboundMail:
    return parse_mail((MAILS / name).read_bytes(), **kwargs)


def mail(headers: str, body: str = "Hello\n", **kwargs) -> InboundMail:
    return parse_mail((headers.strip("\n") + "\n\n" + body).encode("utf-8"), **kwargs)


# ---- scenario mails ------------------------------------------------------------

SCENARIOS = {
    "auto_reply_rfc3834.eml": dict(
        from_address="info@kunde.example", subject="Re: Your order 1042 has shipped",
        auto_submitted="Auto-Submitted: auto-replied", text_start="Thank you for your message."),
    "ooo_outlook_de.eml": dict(
        from_address="thomas.weber@kunde.example",
        subject="Abwesenheitsnotiz: Ihre Bestellung 1044 wurde versandt",
        auto_submitted="out-of-office subject",
        text_start="Ich bin bis einschließlich 20.03. nicht im Büro. In dringenden Fällen wenden"),
    "ooo_gmail_vacation_en.eml": dict(
        from_address="jane.doe@gmail.com", subject="Out of office until March 10",
        auto_submitted="Auto-Submitted: auto-replied", text_start="I'm travelling until March 10"),
    "ooo_fr.eml": dict(
        from_address="claire.martin@exemple.fr",
        subject="Réponse automatique : Votre commande 1045",
        auto_submitted="out-of-office subject", text_start="Je suis absente du bureau"),
    "precedence_bulk.eml": dict(
        from_address="news@supplier.example", subject="Our spring catalogue is here",
        auto_submitted="Precedence: bulk", text_start="New in spring: 40 products – see"),
    "list_mail.eml": dict(
        from_address="alice@example.net", subject="[shop-owners] Which courier do you use?",
        auto_submitted="List-Id", text_start="Hi all, which courier"),
    "reply_html_only.eml": dict(
        from_address="juergen@kunde.example", subject="Re: Ihre Bestellung 1042 ist unterwegs",
        auto_submitted=None, text_start="Danke, das Paket ist angekommen & alles passt."),
    "reply_with_attachments.eml": dict(
        from_address="anna.schmidt@kunde.example", subject="Re: Ihre Bestellung 1042",
        auto_submitted=None, text_start="Anbei das Foto des Schadens und die Rechnung."),
    "no_from.eml": dict(
        from_address=None, subject="order 1050?", auto_submitted=None,
        text_start="Where is my order?"),
    "8bit_headers_latin1.eml": dict(
        from_address="jm@example.de", subject="Bestellung für Größe 42", auto_submitted=None,
        text_start="Grüße aus Köln – bitte Größe 42 schicken."),
    "unknown_charset.eml": dict(
        from_address="chen@example.cn", subject="Frage zu 1042 – Größe", auto_submitted=None,
        text_start="Größe M bitte, danke – 谢谢"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_mail_parses_to_expected_values(name):
    expected = SCENARIOS[name]
    parsed = parse_file(name)
    assert parsed.from_address == expected["from_address"]
    assert parsed.subject == expected["subject"]
    assert parsed.auto_submitted == expected["auto_submitted"]
    assert parsed.text.startswith(expected["text_start"])


def test_every_scenario_mail_has_a_test():
    assert sorted(p.name for p in MAILS.glob("*.eml")) == sorted(SCENARIOS)


def test_gmail_reply_gives_threading_dates_and_authentication():
    parsed = parse_file("ooo_gmail_vacation_en.eml")
    assert parsed.message_id == "<CAGm7+vacation-reply-0001@mail.gmail.com>"
    assert parsed.from_name == "Jane Doe"
    assert parsed.in_reply_to == ("<n1043.paid.77aa@shop.example>",)
    assert parsed.references == ("<n1043.paid.77aa@shop.example>",)
    assert parsed.date == datetime(2026, 3, 4, 16, 1, 12, tzinfo=timezone.utc)
    assert parsed.delivered_to == ("orders@shop.example",)
    assert parsed.envelope_from == "jane.doe@gmail.com"       # from Return-Path
    assert parsed.authentication_results == (
        "mx.shop.example; dkim=pass header.d=gmail.com; spf=pass smtp.mailfrom=jane.doe@gmail.com;"
        " dmarc=pass header.from=gmail.com",
        "relay.shop.example; spf=none")
    assert parsed.html.startswith('<div dir="ltr">')
    assert parsed.headers_ok and parsed.defects == ()


def test_html_only_reply_is_rendered_as_text_and_kept_raw():
    parsed = parse_file("reply_html_only.eml")
    assert parsed.from_name == "Jürgen Müller"
    assert "<script>alert(1)</script>" in parsed.html          # raw: sanitising comes later
    assert "alert(1)" not in parsed.text and "color: red" not in parsed.text
    assert "C:\\neu\\tabelle\\2026.pdf" in parsed.text          # backslashes stay backslashes
    assert "Grüße" in parsed.text
    assert parsed.references == ("<n1042.created.1111@shop.example>",
                                 "<n1042.shipped.5f3a@shop.example>")


def test_html_fallback_renders_when_the_trimming_stage_is_absent(monkeypatch):
    monkeypatch.setattr(html_text, "html_to_text", None)
    parsed = parse_file("reply_html_only.eml")
    assert parsed.text.startswith("Danke, das Paket ist angekommen & alles passt.")
    assert "C:\\neu\\tabelle\\2026.pdf" in parsed.text
    assert "alert(1)" not in parsed.text and "color: red" not in parsed.text


def test_reply_with_attachments_lists_files_and_inline_image():
    parsed = parse_file("reply_with_attachments.eml")
    assert parsed.text == ("Anbei das Foto des Schadens und die Rechnung.\n"
                           "Pfad: \\\\server\\share\\n\\t (bitte so lassen)\n")
    assert parsed.to == ("orders+r.1042.k7zq@shop.example",)
    assert parsed.cc == ("buha@kunde.example", "office@kunde.example")
    assert parsed.reply_to == ("anna.private@example.org",)
    photo, invoice = parsed.attachments
    assert (photo.filename, photo.content_type, photo.content_id, photo.is_inline) == (
        "schaden.png", "image/png", "<photo1@kunde.example>", True)
    assert photo.data.startswith(b"\x89PNG") and photo.size == len(photo.data)
    assert (invoice.filename, invoice.content_type, invoice.is_inline) == (
        "Rechnung März.pdf", "application/pdf", False)
    assert invoice.data.startswith(b"%PDF-1.4")


def test_latin1_8bit_headers_are_decoded_and_noted():
    parsed = parse_file("8bit_headers_latin1.eml")
    assert parsed.from_name == "Jürgen Müller"
    assert "Subject: raw 8-bit bytes" in parsed.defects
    assert parsed.headers_ok        # odd bytes, but every header could be read


def test_unknown_charset_is_read_as_utf8_and_noted():
    parsed = parse_file("unknown_charset.eml")
    assert any("x-unknown" in d for d in parsed.defects)


def test_missing_from_is_none_and_headers_not_ok():
    parsed = parse_file("no_from.eml")
    assert parsed.from_address is None and parsed.from_name == ""
    assert not parsed.headers_ok and "From: missing" in parsed.defects


def test_result_is_frozen():
    parsed = parse_file("list_mail.eml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.subject = "changed"


# ---- automatic mail -------------------------------------------------------------

@pytest.mark.parametrize("header, reason", [
    ("Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated"),
    ("Auto-Submitted: auto-replied; owner-email=x@y", "Auto-Submitted: auto-replied"),
    ("X-Autoreply: yes", "X-Autoreply"),
    ("X-Autorespond: Out of office", "X-Autorespond"),
    ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress: All"),
    ("X-Auto-Response-Suppress: DR, OOF, AutoReply", "X-Auto-Response-Suppress: OOF"),
    ("Precedence: junk", "Precedence: junk"),
    ("Precedence: list", "Precedence: list"),
    ("Precedence: auto_reply", "Precedence: auto_reply"),
    ("X-Loop: orders@shop.example", "X-Loop"),
    ("List-Unsubscribe: <mailto:leave@lists.example>", "List-Unsubscribe"),
    ("Return-Path: <>", "null sender"),
    ("Return-Path: <MAILER-DAEMON@mx.example>", "mailer-daemon sender"),
])
def test_machine_sent_mail_names_its_sign(header, reason):
    parsed = mail(f"From: a@example.com\nSubject: Re: order 1042\n{header}")
    assert parsed.auto_submitted == reason


@pytest.mark.parametrize("header", [
    "Auto-Submitted: no", "Precedence: first-class", "X-Auto-Response-Suppress: DR, RN, NRN",
    "Return-Path: <anna@example.com>",
])
def test_person_sent_mail_has_no_auto_reason(header):
    assert mail(f"From: a@example.com\nSubject: Re: order 1042\n{header}").auto_submitted is None


@pytest.mark.parametrize("subject", [
    "Out of Office: Re: order 1042", "Automatic reply: Your order", "Automatische Antwort: Bestellung",
    "Abwesenheitsnotiz: Ihre Bestellung", "Abwesend: bis Montag", "Réponse automatique : commande",
    "Absence du bureau", "Auto: order 1042", "AutoReply: thanks", "Auto-Reply: thanks",
    "Respuesta automática: pedido", "Risposta automatica: ordine", "Automatisch antwoord: bestelling",
])
def test_out_of_office_subjects_in_many_languages(subject):
    assert mail(f"From: a@example.com\nSubject: {subject}").auto_submitted == "out-of-office subject"


@pytest.mark.parametrize("subject", [
    "Re: Ihre Bestellung 1042", "Autoteile für Bestellung 1042", "Re: Out of stock?",
    "Absenden der Ware", "Wann ist mein Auto-Zubehör da?", "Fwd: automatic transmission",
])
def test_ordinary_subjects_are_not_out_of_office(subject):
    assert mail(f"From: a@example.com\nSubject: {subject}").auto_submitted is None


def test_envelope_null_sender_and_mailer_daemon():
    headers = "From: a@example.com\nSubject: hi"
    assert mail(headers, envelope_from="<>").auto_submitted == "null sender"
    assert mail(headers, envelope_from="<>").envelope_from == "<>"
    assert mail(headers, envelope_from="Postmaster@Example.com").auto_submitted == "postmaster sender"
    unknown = mail(headers, envelope_from="")
    assert unknown.auto_submitted is None and unknown.envelope_from is None


# ---- headers ----------------------------------------------------------------------

def test_display_name_that_looks_like_an_address_does_not_win():
    parsed = mail('From: "alice@bank.example" <mallory@evil.example>\nSubject: x')
    assert parsed.from_address == "mallory@evil.example"
    unquoted = mail("From: alice@bank.example <mallory@evil.example>\nSubject: x")
    assert unquoted.from_address == "mallory@evil.example"
    assert not unquoted.headers_ok and any("ambiguous" in d for d in unquoted.defects)


def test_encoded_display_name_cannot_inject_addresses():
    parsed = mail("From: =?utf-8?q?eve=40evil.example=2C_?= <anna@example.com>\nTo: x@y.example")
    assert parsed.from_address == "anna@example.com"
    assert parsed.from_name == "eve@evil.example,"


# The simple forms are read by a fast path, everything else by getaddresses:
# both sides of that boundary must give the same values as before.
@pytest.mark.parametrize("value, expected", [
    ('Erika Mustermann <Erika@Example.ORG>, "Mustermann, Max" <max@example.org>,  shop@x.org',
     [("Erika Mustermann", "erika@example.org"), ("Mustermann, Max", "max@example.org"),
      ("", "shop@x.org")]),
    ("Erika   Mustermann\t<e@x.org>", [("Erika Mustermann", "e@x.org")]),
    ('"  Erika  "<e@x.org>', [("Erika", "e@x.org")]),
    ('"Shop <orders@shop.example>" <real@x.org>', [("Shop <orders@shop.example>", "real@x.org")]),
    ("<E@X.org>", [("", "e@x.org")]),
    ("=?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <j@x.de>", [("Jürgen Müller", "j@x.de")]),
    ('"=?utf-8?q?J=C3=BCrgen?=" <j@x.de>', [("Jürgen", "j@x.de")]),
    ("e@x.org (Erika M)", [("Erika M", "e@x.org")]),
    ("Erika (Kundin) <e@x.org>", [("Erika (Kundin)", "e@x.org")]),
    ("Kunden: a@x.org, b@x.org;, c@x.org", [("", "a@x.org"), ("", "b@x.org"), ("", "c@x.org")]),
    ('"Er\\"ika" <e@x.org>', [('Er"ika', "e@x.org")]),
    ("Erika\\ M <e@x.org>", [("Erika\\ M", "e@x.org")]),
    ("erika, shop@example.org", [("", "shop@example.org")]),
    ("Doe, John <j@x.org>", [("John", "j@x.org")]),
    ('"erika m"@x.org', [("", '"erika m"@x.org')]),
    ("Erika <e @x.org>", [("Erika", "e@x.org")]),
    ("Jürgen <j@x.de>", [("Jürgen", "j@x.de")]),
    ("Erika\u00a0M <e@x.org>", [("Erika\u00a0M", "e@x.org")]),
])
def test_address_lists_parse_to_names_and_lowercased_addresses(value, expected):
    assert headers._addresses([value], []) == expected


@pytest.mark.parametrize("value", [
    "a@x.org,", "a@x.org,, b@x.org", ", a@x.org", "e@x.org <f@x.org>", "Erika <e@[192.0.2.1]>",
    "Erika <e@x.org> (c)", "a@x.org b@x.org", "a@x_y.org", "Erika <e@x.org>;", "",
])
def test_doubtful_address_forms_are_left_to_getaddresses(value):
    # what getaddresses makes of these differs between Python versions (strict parsing)
    assert headers._simple_addresses(value) is None


def test_message_ids_are_normalised():
    parsed = mail("From: a@example.com\n"
                  "Message-ID: bare-id@host.example\n"
                  "In-Reply-To: <n1.x@shop.example> (Shop's message of Tue)\n"
                  "References: <first@shop.example>\n <second@shop.\n example>")
    assert parsed.message_id == "<bare-id@host.example>"
    assert parsed.in_reply_to == ("<n1.x@shop.example>",)
    assert parsed.references == ("<first@shop.example>", "<second@shop.example>")


def test_internationalised_message_ids_are_read_as_utf8_text():
    # RFC 6532: a server with a non-ASCII host name writes its ids in UTF-8.
    # They came out as undecodable surrogates, which no database takes and no
    # lookup finds (found by fuzzing).
    raw = ("From: a@example.org\nMessage-ID: <1042@müller.de>\nIn-Reply-To: <x@bücher.example>\n"
           "References: <a@b.example> <x@bücher.example>\nAuto-Submitted: auto-replied (Grüße)\n\nDanke\n")
    parsed = parse_mail(raw.encode("utf-8"))
    assert parsed.message_id == "<1042@müller.de>"
    assert parsed.in_reply_to == ("<x@bücher.example>",)
    assert parsed.references == ("<a@b.example>", "<x@bücher.example>")
    assert parsed.auto_submitted == "Auto-Submitted: auto-replied (grüße)"


def test_references_are_capped_keeping_first_and_latest():
    refs = " ".join(f"<r{i}@x.example>" for i in range(500))
    parsed = mail(f"From: a@example.com\nReferences: {refs}")
    assert len(parsed.references) == 100
    assert parsed.references[0] == "<r0@x.example>" and parsed.references[-1] == "<r499@x.example>"


def test_delivered_to_and_original_to_in_header_order():
    parsed = mail("X-Original-To: Orders+r.1@Shop.Example\nDelivered-To: orders@shop.example\n"
                  "From: a@example.com")
    assert parsed.delivered_to == ("orders+r.1@shop.example", "orders@shop.example")


def test_subject_is_one_line_and_capped():
    folded = mail("From: a@example.com\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n =?utf-8?q?_aus?=\n\tK\xf6ln")
    assert folded.subject == "Grüße aus Köln"
    long = mail("From: a@example.com\nSubject: " + "x" * 5000)
    assert len(long.subject) == 998


def test_bad_date_is_none_and_noted():
    parsed = mail("From: a@example.com\nDate: the day after tomorrow")
    assert parsed.date is None and "Date: unparseable" in parsed.defects
    zoneless = mail("From: a@example.com\nDate: Tue, 03 Mar 2026 10:15:02 -0000")
    assert zoneless.date == datetime(2026, 3, 3, 10, 15, 2, tzinfo=timezone.utc)


# ---- bodies -------------------------------------------------------------------------

@pytest.mark.parametrize("cte, body", [
    ("7bit", b"C:\\new\\table \\u00e9 \\x41\n"),
    ("8bit", "C:\\new\\table \\u00e9 \\x41 – ü\n".encode()),
    ("quoted-printable", b"C:\\new\\table \\u00e9 \\x41 =E2=80=93\n"),
    ("base64", base64.encodebytes("C:\\new\\table \\u00e9 \\x41 –\n".encode())),
])
@pytest.mark.parametrize("charset", ["utf-8", "unicode-escape", "raw-unicode-escape"])
def test_backslashes_in_bodies_stay_backslashes(cte, body, charset):
    raw = (f"From: a@example.com\nContent-Type: text/plain; charset={charset}\n"
           f"Content-Transfer-Encoding: {cte}\n\n").encode() + body
    assert parse_mail(raw).text.startswith("C:\\new\\table \\u00e9 \\x41")


def test_format_flowed_is_joined():
    parsed = mail("From: a@example.com\nContent-Type: text/plain; charset=utf-8; format=flowed",
                  "Dies ist ein langer \nAbsatz, umbrochen.\n> zitiert \n> weiter\n-- \nSig\n")
    assert parsed.text == "Dies ist ein langer Absatz, umbrochen.\n> zitiert weiter\n-- \nSig\n"


def test_a_text_part_with_a_filename_shown_inline_is_body_text():
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
           b"Content-Type: text/plain\nContent-Disposition: inline; filename=msg.txt\n\nhello\n"
           b"--b\nContent-Type: text/plain\nContent-Disposition: attachment; filename=notes.txt\n\n"
           b"a file\n--b--\n")
    parsed = parse_mail(raw)
    assert parsed.text == "hello"
    assert [a.filename for a in parsed.attachments] == ["notes.txt"]


def multipart(*parts: str, subtype: str = "mixed") -> bytes:
    body = "".join(f"--b\n{part}\n" for part in parts)
    return f"From: a@example.com\nContent-Type: multipart/{subtype}; boundary=b\n\n{body}--b--\n".encode()


NAMED_INLINE = 'Content-Type: text/plain; name="{0}"\nContent-Disposition: inline; filename="{0}"\n\n'


@pytest.mark.parametrize("name, text, files", [
    # Apple Mail: the command, the statement dropped below it, the signature after
    ("apple_mail_inline_sta.eml", "note 1043 Kundin hat angerufen, zahlt morgen\n\n\n\n\n-- \nOlga Owner\n"
                                  "Teeladen am Markt\n", ["umsaetze.sta"]),
    # Apple Mail, rich text: the statement above the signature, in the HTML alternative
    ("apple_mail_html_inline_csv.eml", "\n\n-- \nOlga Owner\nTeeladen am Markt\n",
     ["Umsaetze_DE02120300000000202051_2026.11.20.csv"]),
])
def test_a_text_file_apple_mail_shows_inline_is_a_file_not_the_text(name, text, files):
    parsed = parse_mail((MAILS.parent / "owner" / name).read_bytes())
    assert parsed.text == text and ":20:" not in parsed.html and "Auftragskonto" not in parsed.html
    assert [(a.filename, a.content_type, a.is_inline) for a in parsed.attachments] == [
        (f, "text/plain", True) for f in files]
    assert parsed.attachments[0].data.startswith((b":20:STARTUMSE", b'"Auftragskonto"'))


def test_a_named_text_shown_inline_before_the_text_is_a_file_too():
    parsed = parse_mail(multipart(NAMED_INLINE.format("umsaetze.txt") + ":20:STARTUMSE\n",
                                  "Content-Type: text/plain\n\nnote 1043 ruft an\n"))
    assert parsed.text == "note 1043 ruft an\n"
    assert [a.filename for a in parsed.attachments] == ["umsaetze.txt"]


def test_a_named_html_shown_inline_beside_the_text_is_a_file():
    parsed = parse_mail(multipart("Content-Type: text/plain\n\nsiehe Seite\n",
                                  'Content-Type: text/html; name="seite.html"\n'
                                  'Content-Disposition: inline; filename="seite.html"\n\n<p>Seite</p>\n'))
    assert parsed.text == "siehe Seite\n" and parsed.html == ""
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [("seite.html", "text/html")]


def test_when_every_text_part_has_a_name_the_first_is_the_text():
    """A one-part mail whose text carries a name, and mailers that name every
    part (cpython's msg_04: two inline parts, both "msg.txt")."""
    single = parse_mail(b"From: a@example.com\n" + NAMED_INLINE.format("msg.txt").encode() + b"hello\n")
    assert single.text == "hello\n" and single.attachments == ()
    both = parse_mail(multipart(NAMED_INLINE.format("msg.txt") + "a simple kind of mirror\n",
                                NAMED_INLINE.format("msg.txt") + "a simple kind of mirror\n"))
    assert both.text == "a simple kind of mirror\n"
    assert [(a.filename, a.is_inline) for a in both.attachments] == [("msg.txt", True)]
    assert attachment_data(multipart(NAMED_INLINE.format("msg.txt") + "one\n",
                                     NAMED_INLINE.format("msg.txt") + "two\n"), 0) == b"two\n"


def test_a_named_text_without_a_disposition_is_a_file_as_before():
    parsed = parse_mail(multipart("Content-Type: text/plain\n\nhi\n",
                                  'Content-Type: text/plain; name="liste.txt"\n\n1042\n'))
    assert parsed.text == "hi\n" and [a.filename for a in parsed.attachments] == ["liste.txt"]


def test_attached_message_is_one_attachment_with_its_message_id():
    raw = (b"From: a@example.com\nSubject: Fwd\nContent-Type: multipart/mixed; boundary=b\n\n"
           b"--b\nContent-Type: text/plain\n\nsee below\n--b\nContent-Type: message/rfc822\n\n"
           b"From: x@example.org\nMessage-ID: <inner@example.org>\nSubject: inner\n"
           b"Content-Type: multipart/mixed; boundary=c\n\n--c\nContent-Type: text/plain\n\ninner text\n"
           b"--c\nContent-Type: application/pdf; name=a.pdf\n\n%PDF\n--c--\n--b--\n")
    parsed = parse_mail(raw)
    assert parsed.text == "see below"
    [attached] = parsed.attachments
    assert attached.content_type == "message/rfc822" and attached.message_id == "<inner@example.org>"
    assert b"inner text" in attached.data


def test_a_raw_8bit_file_with_a_charset_no_codec_can_replace_in_is_kept():
    # A scanner's mail: a binary file sent as 8bit with a charset label the
    # stdlib cannot decode with "replace" (idna). The file was dropped as
    # "part skipped: UnicodeError" (found by fuzzing).
    data = bytes(range(256))
    raw = (b"From: scanner@example.org\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
           b"--B\r\nContent-Type: text/plain\r\n\r\nScan attached\r\n"
           b"--B\r\nContent-Type: application/octet-stream; charset=idna\r\n"
           b"Content-Disposition: attachment; filename=scan.bin\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           + data.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n--B--\r\n")
    parsed = parse_mail(raw)
    [attachment] = parsed.attachments
    assert (attachment.filename, attachment.data) == ("scan.bin", data.replace(b"\r", b"").replace(b"\n", b""))
    assert not any("skipped" in defect for defect in parsed.defects)


def test_big_attachments_drop_their_bytes_but_can_be_fetched_again():
    raw = (MAILS / "reply_with_attachments.eml").read_bytes()
    parsed = parse_mail(raw, keep_attachment_bytes=60)
    photo, invoice = parsed.attachments
    assert photo.data is None and photo.size == 70
    assert invoice.data is not None                      # 54 bytes: under the threshold
    assert attachment_data(raw, 0).startswith(b"\x89PNG") and len(attachment_data(raw, 0)) == 70


# ---- never raises ----------------------------------------------------------------------

def _deep_multipart(levels: int) -> bytes:
    head = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                    for i in range(levels))
    return b"From: a@example.com\nSubject: deep\n" + head + b"Content-Type: text/plain\n\nbottom\n"


HOSTILE = {
    "empty": b"",
    "nul bytes": b"\x00" * 1000,
    "random bytes": bytes(range(256)) * 40,
    "only headers": b"From: a@example.com\nSubject: no body",
    "body without headers": b"\n\njust text",
    "crlf only": b"\r\n" * 100,
    "base64 garbage": b"From: a@example.com\nContent-Type: text/plain\n"
                      b"Content-Transfer-Encoding: base64\n\n!!!not*base64===\x80\x81==\nQUJD\n",
    "base64 garbage attachment": b"From: a@example.com\nContent-Type: application/pdf\n"
                                 b"Content-Transfer-Encoding: base64\n\n%%%\xff\xfeQUJD=\n",
    "bad qp": b"From: a@example.com\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ=\n=E",
    "empty html part": b"From: a@example.com\nContent-Type: multipart/alternative; boundary=x\n\n"
                       b"--x\nContent-Type: text/html\n\n--x--\n",
    "missing boundary": b"From: a@example.com\nContent-Type: multipart/mixed\n\nno boundary here\n",
    "unknown cte": b"From: a@example.com\nContent-Transfer-Encoding: x-magic\n\nhello\n",
    "uuencode": b"From: a@example.com\nContent-Type: application/octet-stream\n"
                b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 x\n#86)C\n`\nend\n",
    "bad rfc2231": b"From: a@example.com\nContent-Type: application/pdf\n"
                   b"Content-Disposition: attachment; filename*=x-bogus'de'%FF%FE\n\nx\n",
    "path in filename": b"From: a@example.com\nContent-Type: application/pdf\n"
                        b"Content-Disposition: attachment; filename=\"..\\\\..\\\\etc/passwd\"\n\nx\n",
    "bad encoded words": b"From: =?utf-8?b?####?= <a@example.com>\nSubject: =?nope?q?x?= =?utf-8?x?y?=\n\nx",
    "nested comments in from": b"From: " + b"(" * 50_000 + b"\nSubject: x\n\nx",
    "deep nesting": _deep_multipart(2_000),
    "many parts": b"From: a@example.com\nContent-Type: multipart/mixed; boundary=b\n\n"
                  + b"--b\nContent-Type: text/plain\n\nx\n" * 3_000 + b"--b--\n",
    "bad date": b"From: a@example.com\nDate: Mon, 99 Foo 99999 99:99:99 +9999\n\nx",
    "str input": "From: ä@example.com\n\nnot bytes",
}


def test_nul_characters_are_taken_out_of_every_text():
    parsed = mail("From: Er\0ika <erika@example.org>\nSubject: Ta\0sse\nMessage-ID: <a\0b@example.org>",
                  body="kaputt\0?\n")
    assert (parsed.from_name, parsed.subject, parsed.message_id, parsed.text) == (
        "Erika", "Tasse", "<ab@example.org>", "kaputt?\n")
    assert "text/plain: NUL characters removed" in parsed.defects
    encoded = mail("From: =?utf-8?q?Er=00ika?= <erika@example.org>\nSubject: =?utf-8?q?Ta=00sse?=")
    assert (encoded.from_name, encoded.subject) == ("Erika", "Tasse")


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_degrades_without_raising(name):
    parsed = parse_mail(HOSTILE[name])
    assert isinstance(parsed, InboundMail)


def test_deep_nesting_still_yields_the_headers():
    parsed = parse_mail(HOSTILE["deep nesting"])
    assert parsed.from_address == "a@example.com" and parsed.subject == "deep"
    assert any("nest" in d for d in parsed.defects)


def test_filename_never_carries_a_path():
    [attached] = parse_mail(HOSTILE["path in filename"]).attachments
    assert attached.filename == "passwd"


def test_long_header_100k_is_cut_and_recorded():
    long_to = ", ".join(f"user{i}@example.com" for i in range(6_000))        # ~120 KB
    raw = ("From: a@example.com\nSubject: " + "ü" * 100_000 + "\nTo: " + long_to
           + "\nX-Long: " + "y" * 100_000 + "\n\nbody\n").encode()
    parsed = parse_mail(raw)
    assert len(parsed.subject) == 998 and set(parsed.subject) == {"ü"}
    assert parsed.to[0] == "user0@example.com" and 3_000 < len(parsed.to) < 6_000
    assert any(d.startswith("X-Long: ") and "cut" in d for d in parsed.defects)
    assert parsed.text == "body\n"


# ---- memory -------------------------------------------------------------------------------

MB25 = 25 * 2**20


def _big_mail(size: int) -> bytes:
    data = os.urandom(size * 3 // 4)
    head = (b"From: a@example.com\r\nTo: orders@shop.example\r\nSubject: big\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n"
            b"--BB\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            b"--BB\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Disposition: attachment; filename=big.bin\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n")
    return head + base64.encodebytes(data).replace(b"\n", b"\r\n") + b"--BB--\r\n"


def _big_text(ctype: str, line: bytes) -> bytes:
    return (f"From: a@example.com\r\nContent-Type: {ctype}; charset=utf-8\r\n\r\n".encode()
            + line * (MB25 // len(line)))


def _big_forward() -> bytes:
    return (b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=OUT\r\n\r\n"
            b"--OUT\r\nContent-Type: text/plain\r\n\r\nforwarded\r\n"
            b"--OUT\r\nContent-Type: message/rfc822\r\n\r\n" + _big_mail(MB25) + b"\r\n--OUT--\r\n")


BIG_MAILS = {
    "base64 attachment": lambda: _big_mail(MB25),
    "plain text body": lambda: _big_text("text/plain", b"Lorem ipsum dolor sit amet, consectetur\r\n"),
    "forwarded message": _big_forward,
}


@pytest.mark.parametrize("shape", sorted(BIG_MAILS))
def test_25mb_mail_peaks_below_four_times_its_size(shape):
    raw = BIG_MAILS[shape]()
    gc.collect()
    tracemalloc.start()
    try:
        parsed = parse_mail(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.from_address == "a@example.com"
    assert parsed.text or parsed.attachments[0].size > MB25 // 2
    assert peak <= 4 * len(raw), f"peak {peak / len(raw):.2f}x the message size"
    if shape == "base64 attachment":      # and the file's bytes are all there
        assert len(parsed.attachments[0].data) == parsed.attachments[0].size == MB25 * 3 // 4


def test_huge_html_only_body_is_read_to_a_megabyte_and_says_so():
    row = "<tr><td>Artikel</td><td>12,50</td></tr>\n"
    raw = ("From: a@example.com\nContent-Type: text/html; charset=utf-8\n\n<table>"
           + row * (3 * 2**20 // len(row))).encode()
    parsed = parse_mail(raw)
    assert len(parsed.html) == 2**20 and parsed.html.startswith("<table><tr><td>Artikel")
    assert parsed.text.startswith("Artikel") and len(parsed.text) < 2**20
    assert "text/html part cut at 1048576 bytes" in parsed.defects


def test_a_25_mb_text_reply_costs_little_more_than_its_bytes():
    """Quoted history pasted 25 MB deep: the text is read to 1 MB, the raw stays whole."""
    quote = b"> " + b"q" * 74 + b"\r\n"
    raw = (b"From: Erika <erika@example.org>\r\nSubject: Re: Bestellung\r\n\r\nDanke, passt so.\r\n\r\n"
           + quote * (MB25 // len(quote)))
    tracemalloc.start()
    parsed = parse_mail(raw, keep_attachment_bytes=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert parsed.text.startswith("Danke, passt so.") and len(parsed.text) <= 2**20
    assert "text/plain part cut at 1048576 bytes" in parsed.defects
    assert peak < 0.5 * len(raw)


# ---- real-world corpora -----------------------------------------------------------------------

def _corpus_files() -> list[Path]:
    if not CORPORA.is_dir():
        return []
    files = []
    for folder in CORPUS_FOLDERS:
        files += sorted(p for p in (CORPORA / folder).iterdir()
                        if p.is_file() and p.name != "LICENSE_NOTE.txt" and p.suffix != ".json")
    return files


@pytest.mark.parametrize("path", _corpus_files() or [None],
                         ids=lambda p: str(p.relative_to(CORPORA)) if p else "no-corpora")
def test_corpus_mail_parses_into_inbound_mail(path):
    if path is None:
        pytest.skip(f"shared mail corpora not found at {CORPORA} (see ../shared/corpora/README.md)")
    parsed = parse_mail(path.read_bytes())
    assert isinstance(parsed, InboundMail)
    assert isinstance(parsed.text, str) and isinstance(parsed.subject, str)
    assert "\n" not in parsed.subject and len(parsed.subject) <= 998
