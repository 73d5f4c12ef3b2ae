"""The two ways a statement comes in: `ordermail payments import FILE`, and a
statement mailed to the command address (the same authenticated path as
every command mail), both on both databases.

The CLI runs as a real process; the mail goes through the pipe door and the
worker's handling, as in tests/test_owner_mail.py, and once over SMTP into
the running daemon, the receipt and the customer's mail read from its
outbound maildir.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

from conftest import sample_order
from daemon.orders import service as orders
from daemon.intake import pipe
from daemon.store.models import InboundMessage, OutboxMessage, StatementEntry
from mailbuilder import mail
from statementfiles import Booking, camt053, mt940, sparkasse_csv, zipped
from test_owner_mail_e2e import daemon, text_of, to, wait_for_mail  # noqa: F401  (fixture)
from test_owner_mail_e2e import send as send_by_smtp

OWNER = "Olga Owner <owner@shop.example>"
OWNER_MAILS = Path(__file__).with_name("mails") / "owner"


def statement() -> bytes:
    return camt053([Booking("24.90", "Bestellung 1042", reference="R-1042"),
                    Booking("20.00", "Bestellung 1043", payer="Max Muster", reference="R-1043"),
                    Booking("-9.99", "Porto", payer="Post", reference="R-D"),
                    Booking("50.00", "Miete Dezember", payer="Untermieter", reference="R-X")])


# ---- the command line -------------------------------------------------------------------------

def test_payments_import_prints_what_it_did_and_again_changes_nothing(ordermail, tmp_path):
    for number in ("1042", "1043"):
        assert ordermail("order", "create", "--json", "-", stdin=json.dumps(sample_order(number))).returncode == 0
    path = tmp_path / "camt053_2026-11-20.xml"
    path.write_bytes(statement())
    first = ordermail("payments", "import", str(path))
    assert first.returncode == 0, first.stderr
    out = first.stdout
    assert "camt053_2026-11-20.xml (camt.053): 4 Buchungen, 3 Gutschriften, 1 Lastschrift oder nicht gebuchte Buchung übergangen" in out
    assert "Jetzt bezahlt (1):\n  1042" in out and "Erika Mustermann: Bestellung 1042" in out
    assert "Betrag weicht ab: nicht als bezahlt vermerkt, an der Bestellung notiert (1):\n  1043" in out
    assert "die Bestellsumme beträgt 24.90 EUR" in out
    assert "Nicht zugeordnete Gutschriften (1):\n  -" in out and "Untermieter: Miete Dezember — keine Bestellnummer gefunden" in out
    shown = json.loads(ordermail("order", "show", "1042", "--format", "json").stdout)
    assert shown["status"]["paid"] and shown["events"][-1]["author"] == "system"

    again = ordermail("payments", "import", str(path), "--format", "json")
    document = json.loads(again.stdout)
    assert again.returncode == 0 and document["imported_before"] == 3
    assert document["paid"] == [] and document["unmatched"] == [] and document["format"] == "camt.053"


def test_payments_import_as_json_lists_each_outcome(ordermail, tmp_path):
    ordermail("order", "create", "--json", "-", stdin=json.dumps(sample_order("1042")))
    path = tmp_path / "umsaetze.sta"
    path.write_bytes(mt940([Booking("24.90", "Bestellung 1042", end_to_end="E2E-1")]))
    result = ordermail("payments", "import", str(path), "--format", "json")
    document = json.loads(result.stdout)
    [paid] = document["paid"]
    assert paid["orders"] == ["1042"] and paid["amount"] == "24.90" and paid["currency"] == "EUR"
    assert paid["end_to_end_id"] == "E2E-1" and paid["booked_on"] == "2026-11-20"
    assert document["format"] == "mt940" and document["preview"] is False


def test_preview_says_what_would_happen_and_changes_nothing(ordermail, tmp_path):
    ordermail("order", "create", "--json", "-", stdin=json.dumps(sample_order("1042")))
    path = tmp_path / "umsatz.csv"
    path.write_bytes(sparkasse_csv([Booking("24.90", "Bestellung 1042")]))
    preview = ordermail("payments", "import", str(path), "--preview")
    assert preview.stdout.startswith("Vorschau, nichts wurde geändert.") and "Jetzt bezahlt (1)" in preview.stdout
    assert not json.loads(ordermail("order", "show", "1042", "--format", "json").stdout)["status"]["paid"]
    assert "Jetzt bezahlt (1)" in ordermail("payments", "import", str(path)).stdout


def test_a_file_that_is_no_statement_is_one_line_and_exit_2(ordermail, tmp_path):
    path = tmp_path / "rechnung.pdf"
    path.write_bytes(b"%PDF-1.4\n...")
    result = ordermail("payments", "import", str(path))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "ordermail: rechnung.pdf: a PDF is for reading, not for importing; export CAMT.053 XML (also zipped), "
        "MT940, or a CSV export whose header line names its columns"]
    missing = ordermail("payments", "import", str(tmp_path / "nope.xml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr and "No such file" in missing.stderr


def test_a_statement_from_stdin(ordermail):
    ordermail("order", "create", "--json", "-", stdin=json.dumps(sample_order("1042")))
    result = ordermail("payments", "import", "-", stdin=zipped({"a.xml": statement()}))
    assert result.returncode == 0 and result.stdout.startswith("stdin (camt.053): 4 Buchungen")


# ---- by mail --------------------------------------------------------------------------------

def send(store, settings, raw: bytes) -> InboundMessage:
    pipe.deliver(store, settings, io.BytesIO(raw), [settings.command_address], "owner@shop.example")
    return InboundMessage.select().order_by(InboundMessage.id.desc()).first()


def receipts() -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == "receipt").order_by(OutboxMessage.id))


def test_a_statement_mailed_to_the_command_address_is_imported_and_the_receipt_lists_it(store, settings):
    for number in ("1042", "1043"):
        orders.create_order(store, settings, sample_order(number))
    logo = ("logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + b"p" * 200)
    raw = mail(to=settings.command_address, sender=OWNER, subject="Kontoauszug", body="",
               attachments=(("camt.zip", "application/zip", zipped({"20261120.xml": statement()})), logo),
               message_id="<auszug-1@shop.example>")
    message = send(store, settings, raw)
    assert message.state == "done" and "1 statement(s)" in message.reason
    assert orders.find_order("1042").paid_at is not None and orders.find_order("1043").paid_at is None
    [receipt] = receipts()
    text = receipt.data["text"]
    assert text.startswith("> camt.zip\ncamt.zip (camt.053): 4 Buchungen, 3 Gutschriften")
    assert "Jetzt bezahlt (1):\n  1042" in text and "Betrag weicht ab" in text and "Nicht zugeordnete Gutschriften (1)" in text
    assert "logo.png" not in text and "Kein Befehl gefunden" not in text
    assert "mit „rückgängig“" in text
    assert OutboxMessage.select().where(OutboxMessage.kind == "paid").count() == 1


def test_undo_of_a_mailed_statement_puts_the_orders_back_and_it_stays_imported(store, settings):
    orders.create_order(store, settings, sample_order("1042"))
    raw = mail(to=settings.command_address, sender=OWNER, subject="Auszug", body="",
               attachments=(("auszug.xml", "application/xml", statement()),))
    send(store, settings, raw)
    receipt = receipts()[0]
    send(store, settings, mail(to=settings.command_address, sender=OWNER, subject="Re: Auszug", body="undo",
                               in_reply_to=receipt.message_id))
    assert orders.find_order("1042").paid_at is None
    assert "1042: bezahlt rückgängig gemacht" in receipts()[1].data["text"]
    again = mail(to=settings.command_address, sender=OWNER, subject="Auszug nochmal", body="",
                 attachments=(("auszug.xml", "application/xml", statement()),))
    send(store, settings, again)
    assert "3 Gutschriften wurden bereits früher eingelesen" in receipts()[2].data["text"]
    assert orders.find_order("1042").paid_at is None


def test_a_broken_statement_by_mail_is_one_line_in_the_receipt_and_the_commands_still_run(store, settings):
    orders.create_order(store, settings, sample_order("1043"))
    raw = mail(to=settings.command_address, sender=OWNER, subject="Heute", body="note 1043 Auszug kaputt",
               attachments=(("auszug.xml", "text/xml", b"<Document><BkToCstmrStmt><Stmt><Ntry>"),))
    send(store, settings, raw)
    text = receipts()[0].data["text"]
    assert "> auszug.xml\nNICHT AUSGEFÜHRT: auszug.xml: kein wohlgeformtes XML" in text
    assert "1043: interner Vermerk hinzugefügt" in text
    assert StatementEntry.select().count() == 0


def test_a_statement_from_a_stranger_imports_nothing(store, settings):
    orders.create_order(store, settings, sample_order("1042"))
    raw = mail(to=settings.command_address, sender="mallory@evil.example", subject="Auszug", body="",
               attachments=(("auszug.xml", "application/xml", statement()),))
    message = send(store, settings, raw)
    assert message.reason.startswith("owner mail: discarded, not answered")
    assert orders.find_order("1042").paid_at is None and StatementEntry.select().count() == 0


def test_a_full_event_keeps_its_files_for_the_customer(store, settings):
    orders.create_order(store, settings, sample_order("1042"))
    raw = mail(to=settings.command_address, sender=OWNER, subject="message 1042", body="Ihre Rechnung anbei",
               attachments=(("rechnung.xml", "application/xml", statement()),))
    send(store, settings, raw)
    event = orders.order_events(orders.find_order("1042"))[-1]
    assert event.kind == "message" and [a.filename for a in event.attachments] == ["rechnung.xml"]
    assert orders.find_order("1042").paid_at is None and StatementEntry.select().count() == 0


def test_a_statement_mailed_over_smtp_to_the_running_daemon(daemon, settings):
    data = mt940([Booking("24.90", "Bestellung 1042 Teekanne", end_to_end="E2E-9")])
    send_by_smtp(daemon, mail(to=settings.command_address, sender=OWNER, subject="MT940 vom 20.11.",
                              body="", attachments=(("umsaetze.sta", "application/octet-stream", data),),
                              message_id="<mt940-1@owner.example>"), settings.command_address)
    receipt = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example" and "MT940" in m["Subject"])
    assert receipt["In-Reply-To"] == "<mt940-1@owner.example>"
    assert "umsaetze.sta (mt940): 1 Buchung, 1 Gutschrift" in text_of(receipt)
    assert "Jetzt bezahlt (1):\n  1042" in text_of(receipt)
    wait_for_mail(daemon, lambda m: to(m) == "erika@example.org"
                  and m["Subject"] == "Zahlung für Bestellung 1042 erhalten")
    assert orders.find_order("1042").paid_at is not None


# ---- Apple Mail: the statement inline, between or before the text ----------------------------

def apple_mail(name: str, settings) -> bytes:
    """A scenario mail of tests/mails/owner (see its X-Scenario header), sent to the command address."""
    return (OWNER_MAILS / name).read_bytes().replace(b"COMMAND_ADDRESS", settings.command_address.encode())


def test_an_inline_mt940_between_the_command_and_the_signature_is_imported(store, settings):
    for number in ("1042", "1043"):
        orders.create_order(store, settings, sample_order(number))
    message = send(store, settings, apple_mail("apple_mail_inline_sta.eml", settings))
    assert message.state == "done" and "1 statement(s)" in message.reason
    assert orders.find_order("1042").paid_at is not None
    [receipt] = receipts()
    text = receipt.data["text"]
    assert text.startswith("> umsaetze.sta\numsaetze.sta (mt940): 2 Buchungen, 2 Gutschriften")
    assert "Jetzt bezahlt (1):\n  1042" in text and "Untermieter: Miete Dezember" in text
    assert "> note 1043 Kundin hat angerufen, zahlt morgen\n1043: interner Vermerk hinzugefügt" in text
    assert "NICHT AUSGEFÜHRT" not in text and ":20:" not in text            # no line of the file taken as a command
    note = orders.order_events(orders.find_order("1043"))[-1]
    assert note.kind == "note" and note.body_text == "Kundin hat angerufen, zahlt morgen"


def test_an_inline_csv_above_the_signature_of_a_rich_text_mail_is_imported(store, settings):
    orders.create_order(store, settings, sample_order("1042"))
    message = send(store, settings, apple_mail("apple_mail_html_inline_csv.eml", settings))
    assert message.state == "done" and "1 statement(s)" in message.reason
    assert orders.find_order("1042").paid_at is not None
    [receipt] = receipts()
    text = receipt.data["text"]
    assert text.startswith("> Umsaetze_DE02120300000000202051_2026.11.20.csv\n"
                           "Umsaetze_DE02120300000000202051_2026.11.20.csv (csv): 2 Buchungen, 1 Gutschrift")
    assert "Jetzt bezahlt (1):\n  1042" in text and "Jürgen Müller: Bestellung 1042" in text
    assert "NICHT AUSGEFÜHRT" not in text and "Kein Befehl gefunden" not in text and "Auftragskonto" not in text
    assert OutboxMessage.select().where(OutboxMessage.kind == "paid").count() == 1


def test_an_apple_mail_with_an_inline_mt940_over_smtp_to_the_running_daemon(daemon, settings):
    send_by_smtp(daemon, apple_mail("apple_mail_inline_sta.eml", settings), settings.command_address)
    receipt = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example" and "Kontoauszug" in m["Subject"])
    assert receipt["In-Reply-To"] == "<4F0C2D6B-1A9E-4E43-9D8B-6C3B1E0F7A21@shop.example>"
    text = text_of(receipt)
    assert "umsaetze.sta (mt940): 2 Buchungen, 2 Gutschriften" in text and "Jetzt bezahlt (1):\n  1042" in text
    assert "1043: interner Vermerk hinzugefügt" in text and "NICHT AUSGEFÜHRT" not in text
    wait_for_mail(daemon, lambda m: to(m) == "erika@example.org"
                  and m["Subject"] == "Zahlung für Bestellung 1042 erhalten")


def test_the_resource_fork_apple_mail_sends_beside_a_file_is_no_statement(store, settings):
    """multipart/appledouble: the fork (application/applefile) and the file, both named umsaetze.sta."""
    orders.create_order(store, settings, sample_order("1042"))
    data = mt940([Booking("24.90", "Bestellung 1042")]).decode()
    raw = (f"From: {OWNER}\nTo: {settings.command_address}\nSubject: Auszug\nMessage-ID: <fork@shop.example>\n"
           "Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: text/plain\n\n\n"
           "--a\nContent-Type: multipart/appledouble; boundary=d\n\n"
           "--d\nContent-Type: application/applefile; name=umsaetze.sta\nContent-Transfer-Encoding: base64\n"
           "Content-Disposition: inline; filename=umsaetze.sta\n\nAAUWBwACAAAAAAAAAAAAAAAAAAAAAAAA\n"
           "--d\nContent-Type: text/plain; x-unix-mode=0644; name=umsaetze.sta\n"
           f"Content-Disposition: inline; filename=umsaetze.sta\n\n{data}\n--d--\n\n--a--\n").encode()
    send(store, settings, raw)
    text = receipts()[0].data["text"]
    assert text.count("> umsaetze.sta\n") == 1 and "Jetzt bezahlt (1):\n  1042" in text and "NICHT AUSGEFÜHRT" not in text
