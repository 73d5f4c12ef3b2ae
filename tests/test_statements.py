"""Bank statements mark transfers paid: CAMT.053, MT940 and CSV, on both databases.

The statement files are written by tests/statementfiles.py the way banks
write them; each test imports one through `importer.import_statement` (the
code path of `ordermail payments import` and of a mailed statement) and
looks at what the owner and the customer would see: the order's status and
log, the customer's mail in the outbox, the import's report.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import tracemalloc
from decimal import Decimal

import pytest

from conftest import sample_order
from daemon.orders import service as orders
from daemon.config import StatementCsvSettings, StatementSettings, settings_from_dict
from daemon.errors import ConfigError, InputError
from daemon.payments.statements import importer, matching, report
from daemon.payments.statements.reading import read_statement
from daemon.store.models import Event, OutboxMessage, StatementEntry
from statementfiles import Booking, camt053, mt940, sparkasse_csv, zipped


def make_orders(store, settings, *numbers, total="24.90", currency="EUR"):
    for number in numbers:
        orders.create_order(store, settings, sample_order(number, total=total, currency=currency,
                                                          items=[{"name": "Teekanne", "quantity": 1,
                                                                  "unit_price": total}]))


def run(store, settings, data: bytes, name="auszug.xml", **kw) -> importer.ImportResult:
    return importer.import_statement(store, settings, data, name, **kw)


def paid(number: str) -> bool:
    return orders.find_order(number).paid_at is not None


def log(number: str) -> list[Event]:
    return orders.order_events(orders.find_order(number))


def mails(kind: str) -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == kind))


def numbers(result, kind) -> list[str]:
    return [" ".join(o.numbers) for o in result.of(kind)]


# ---- what an import does ---------------------------------------------------------------

def test_a_camt053_credit_marks_its_order_paid_and_the_customer_is_told(store, settings):
    make_orders(store, settings, "1042", "1043")
    data = camt053([Booking("24.90", "Bestellung 1042 vielen Dank", reference="2026112000017")])
    result = run(store, settings, data)
    assert numbers(result, "paid") == ["1042"] and paid("1042") and not paid("1043")
    event = log("1042")[-1]
    assert event.kind == "paid" and event.author == "system" and event.notified
    assert event.data["reference"] == "2026112000017" and event.data["bank_statement"] == "camt.053"
    assert event.data["amount"] == "24.90" and event.data["payer"] == "Erika Mustermann"
    assert [m.recipient for m in mails("paid")] == ["erika@example.org"]


def test_the_same_statement_twice_changes_nothing(store, settings):
    make_orders(store, settings, "1042", "1043")
    data = camt053([Booking("24.90", "Bestellung 1042", reference="R1"),
                    Booking("20.00", "Bestellung 1043", reference="R2"),
                    Booking("99.00", "Miete", payer="Vermieter")])
    first = run(store, settings, data)
    events = Event.select().count()
    outbox = OutboxMessage.select().count()
    second = run(store, settings, data)
    assert (len(first.of("paid")), len(first.of("amount_differs")), len(first.of("unmatched"))) == (1, 1, 1)
    assert second.outcomes == [] and second.imported_before == 3
    assert Event.select().count() == events and OutboxMessage.select().count() == outbox
    assert "3 credits were imported before; nothing was done again" in report.as_text(second)


def test_an_export_overlapping_the_last_one_settles_only_the_new_days(store, settings):
    make_orders(store, settings, "1042", "1043")
    monday = Booking("24.90", "Bestellung 1042", day=dt.date(2026, 11, 23))
    tuesday = Booking("24.90", "Bestellung 1043", day=dt.date(2026, 11, 24))
    run(store, settings, mt940([monday]), "mo.sta")
    result = run(store, settings, mt940([monday, tuesday]), "mo-di.sta")
    assert result.imported_before == 1 and numbers(result, "paid") == ["1043"]


def test_an_amount_that_differs_is_noted_on_the_order_not_paid(store, settings):
    make_orders(store, settings, "1042")
    result = run(store, settings, camt053([Booking("20.00", "Bestellung 1042")]))
    assert numbers(result, "amount_differs") == ["1042"] and not paid("1042")
    note = log("1042")[-1]
    assert note.kind == "system" and note.visibility == "internal" and not note.notified
    assert "20.00 EUR" in note.body_text and "24.90 EUR" in note.body_text
    assert note.subject == "Banküberweisung: der Betrag weicht ab"     # the German shop's owner reads it
    assert "nicht als bezahlt markiert" in note.body_text and "Verwendungszweck: Bestellung 1042" in note.body_text
    assert mails("paid") == []
    assert "the order's total is 24.90 EUR" in report.as_text(result)


def test_an_order_paid_by_hand_is_listed_as_already_paid(store, settings):
    make_orders(store, settings, "1042")
    orders.mark_paid(store, settings, "1042")
    result = run(store, settings, camt053([Booking("24.90", "Bestellung 1042")]))
    assert numbers(result, "already_paid") == ["1042"]
    assert [e.kind for e in log("1042")] == ["created", "paid"]


@pytest.mark.parametrize("batch", [1, 2, importer.SETTLE_BATCH])
def test_credits_for_one_order_settle_in_the_files_order_however_they_are_batched(store, settings, monkeypatch,
                                                                                 batch):
    make_orders(store, settings, "1042", "1043")
    monkeypatch.setattr(importer, "SETTLE_BATCH", batch)
    result = run(store, settings, camt053([
        Booking("20.00", "Bestellung 1043", reference="R1"),     # noted, not paid
        Booking("24.90", "Bestellung 1042", reference="R2"),     # paid
        Booking("20.00", "Bestellung 1042", reference="R3"),     # another amount, but the order is paid
        Booking("24.90", "Bestellung 1042", reference="R4"),     # paid a second time: listed, nothing done
        Booking("24.90", "Bestellung 1043", reference="R5"),     # paid after its note
    ]))
    assert [(o.kind, o.numbers) for o in result.outcomes] == [
        ("amount_differs", ("1043",)), ("paid", ("1042",)), ("already_paid", ("1042",)),
        ("already_paid", ("1042",)), ("paid", ("1043",))]
    assert "the order's total 24.90 EUR" in result.outcomes[2].detail
    assert "1042 was already paid on" in result.outcomes[3].detail
    assert [e.kind for e in log("1042")] == ["created", "paid"]
    assert [e.kind for e in log("1043")] == ["created", "system", "paid"]
    assert len(mails("paid")) == 2 and StatementEntry.select().count() == 5


def test_debits_pending_entries_and_foreign_currency_are_not_paid(store, settings):
    make_orders(store, settings, "1042", "1043", "1044")
    data = camt053([Booking("-24.90", "Bestellung 1042", payer="Lieferant"),
                    Booking("24.90", "Bestellung 1043", booked=False),
                    Booking("24.90", "Order 1044", currency="USD", payer="John Smith"),
                    Booking("50.00", "Geschenk", payer="Oma")])
    result = run(store, settings, data)
    assert result.passed_over == 2 and result.credits == 2
    assert not any(paid(n) for n in ("1042", "1043", "1044"))
    unmatched = {o.entry.payer: o.detail for o in result.of("unmatched")}
    assert unmatched == {"John Smith": "foreign currency: USD, order 1044 is in EUR",
                         "Oma": "no order number found"}


def test_one_transfer_for_two_orders_pays_both(store, settings):
    make_orders(store, settings, "1042", "1043")
    result = run(store, settings, camt053([Booking("49.80", "Bestellungen 1042 und 1043")]))
    assert numbers(result, "paid") == ["1042 1043"] and paid("1042") and paid("1043")
    assert log("1043")[-1].data["orders_paid_together"] == 2


def test_two_orders_of_the_amount_in_one_text_pay_neither(store, settings):
    make_orders(store, settings, "1042", "1043")
    result = run(store, settings, camt053([Booking("24.90", "1042 oder 1043?")]))
    assert result.of("unmatched")[0].detail == "names several orders of this amount"
    assert not paid("1042") and not paid("1043")


# ---- finding the number in what the payer wrote ------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Bestellung 10420", "10420"),          # 1042 is no order of it
    ("Best.Nr.1042 Teekanne", "1042"),
    ("RE1042", "1042"),
    ("bestellung a-1042", "A-1042"),
    ("Auftrag A 1042", None),              # A-1042 or 1042? both fit the amount: neither is paid
    ("A1042", "A-1042"),
    ("demo 1", "DEMO-1"),
    ("Rechnung 21042 und 104", None),       # no token is an order number
])
def test_the_number_is_found_as_its_own_token_however_written(store, settings, text, expected):
    make_orders(store, settings, "1042", "10420", "A-1042", "DEMO-1", total="24.90")
    result = run(store, settings, camt053([Booking("24.90", text)]))
    assert numbers(result, "paid") == ([expected] if expected else [])


def test_a_number_cut_by_the_banks_line_break_is_found(store, settings):
    make_orders(store, settings, "1042")
    # <Ustrd> lines of 13 characters: "Bestellung 10" / "42, danke"
    data = camt053([Booking("24.90", "Bestellung 1042, danke")], lines=13)
    assert numbers(run(store, settings, data), "paid") == ["1042"]


def test_a_number_split_by_a_space_is_found(store, settings):
    make_orders(store, settings, "A-1042", "DEMO-1")
    result = run(store, settings, camt053([Booking("24.90", "Auftrag A 1042"), Booking("24.90", "DEMO 1")]))
    assert numbers(result, "paid") == ["A-1042", "DEMO-1"]


def test_a_longer_order_number_written_as_one_word_wins_over_its_tail(store, settings):
    make_orders(store, settings, "1042", "A-1042")
    result = run(store, settings, camt053([Booking("24.90", "Bestellung A-1042")]))
    assert numbers(result, "paid") == ["A-1042"] and not paid("1042")


def test_a_date_in_the_text_names_no_order(store, settings):
    make_orders(store, settings, "1042", "2026")
    result = run(store, settings, camt053([Booking("24.90", "Bestellung 1042 vom 19.11.2026")]))
    assert numbers(result, "paid") == ["1042"] and not paid("2026")
    assert {c.key for c in matching.candidates("Rechnung vom 1.2.26, Nr. 1042")} == {"1042"}


def test_candidates_keep_digit_runs_whole():
    keys = {c.key for c in matching.candidates("Zahlung 10420/2026")}
    assert "10420" in keys and "1042" not in keys and "104202026" in keys


# ---- the formats -----------------------------------------------------------------------

@pytest.mark.parametrize("version", ["02", "04", "06", "08", "10"])
def test_every_camt053_version_is_read(version):
    data = camt053([Booking("24.90", "Bestellung 1042", reference="R1"), Booking("-5.00", "Gebühr")],
                   version=version)
    statement = read_statement(data, "x.xml", StatementSettings())
    credit, debit = statement.entries
    assert statement.format == "camt.053"
    assert (credit.credit, credit.amount, credit.payer, credit.reference) == (True, Decimal("24.90"), "Erika Mustermann", "R1")
    assert "Bestellung 1042" in credit.remittance and not debit.credit


def test_a_batch_entry_is_one_credit_per_transaction():
    xml = camt053([Booking("49.80", "x")]).decode()
    tx = ('<TxDtls><Refs><AcctSvcrRef>T{n}</AcctSvcrRef></Refs><Amt Ccy="EUR">24.90</Amt>'
          '<RmtInf><Ustrd>Bestellung {n}</Ustrd></RmtInf></TxDtls>')
    start, end = xml.index("<TxDtls>"), xml.index("</TxDtls>") + len("</TxDtls>")
    batch = xml[:start] + tx.format(n=1042) + tx.format(n=1043) + xml[end:]
    entries = read_statement(batch.encode(), "b.xml", StatementSettings()).entries
    assert [(e.amount, e.remittance) for e in entries] == [(Decimal("24.90"), "Bestellung 1042"),
                                                         (Decimal("24.90"), "Bestellung 1043")]
    assert entries[0].key != entries[1].key


@pytest.mark.parametrize("message, kind", [("BkToCstmrAcctRpt", "camt.052"), ("BkToCstmrDbtCdtNtfctn", "camt.054")])
def test_camt052_and_camt054_are_read_like_camt053(message, kind):
    data = camt053([Booking("24.90", "Bestellung 1042")]).replace(b"BkToCstmrStmt", message.encode()).replace(
        b"<Stmt>", b"<Rpt>" if kind == "camt.052" else b"<Ntfctn>").replace(
        b"</Stmt>", b"</Rpt>" if kind == "camt.052" else b"</Ntfctn>")
    statement = read_statement(data, "x.xml", StatementSettings())
    assert statement.format == kind and statement.entries[0].remittance == "Bestellung 1042"


def test_a_zip_inside_a_zip_is_refused():
    with pytest.raises(InputError, match="a.zip/inner.zip: a .zip inside a .zip is not read"):
        read_statement(zipped({"inner.zip": zipped({"x.xml": camt053([])})}), "a.zip", StatementSettings())


def test_a_csv_export_with_a_preamble_and_a_bom_read_by_its_column_names():
    text = ("\ufeff\"Konto:\";\"DE02120300000000202051\"\n\"Zeitraum:\";\"01.11.2026 - 20.11.2026\"\n\n"
            "\"Buchungsdatum\";\"Wertstellung\";\"Status\";\"Zahlungspflichtige*r\";\"Zahlungsempfänger*in\";"
            "\"Verwendungszweck\";\"Umsatztyp\";\"IBAN\";\"Betrag (€)\";\"Gläubiger-ID\";\"Mandatsreferenz\";"
            "\"Kundenreferenz\"\n"
            "\"20.11.26\";\"20.11.26\";\"Gebucht\";\"Jürgen Müller\";\"Teeladen\";\"Bestellung 1042\";"
            "\"Eingang\";\"DE89370400440532013000\";\"1.024,90\";\"\";\"\";\"E2E-5\"\n"
            "\"21.11.26\";\"21.11.26\";\"Vorgemerkt\";\"Max\";\"Teeladen\";\"Bestellung 1043\";"
            "\"Eingang\";\"DE89370400440532013000\";\"24,90\";\"\";\"\";\"\"\n")
    first, pending = read_statement(text.encode("utf-8"), "dkb.csv", StatementSettings()).entries
    assert (first.amount, first.payer, first.reference, first.booked_on) == (
        Decimal("1024.90"), "Jürgen Müller", "E2E-5", dt.date(2026, 11, 20))
    assert first.credit and first.booked and not pending.booked


def test_a_zip_of_camt_files_as_german_banks_export_it(store, settings):
    make_orders(store, settings, "1042", "1043")
    data = zipped({"2026-11-20_camt053.xml": camt053([Booking("24.90", "Bestellung 1042", reference="A")]),
                   "2026-11-21_camt053.xml": camt053([Booking("24.90", "Bestellung 1043", reference="B")])})
    result = run(store, settings, data, "camt.zip")
    assert result.format == "camt.053" and numbers(result, "paid") == ["1042", "1043"]


def test_a_german_mt940_with_structured_remittance(store, settings):
    make_orders(store, settings, "1042", "A-7")
    data = mt940([Booking("24.90", "Bestellnummer 1042 Erika Mustermann Teekanne", end_to_end="E2E-77"),
                  Booking("-12.00", "Strom November", payer="Stadtwerke"),
                  Booking("24.90", "Ihre Bestellung A 7 vom 19.11.")])
    result = run(store, settings, data, "umsaetze.sta")
    assert result.format == "mt940" and result.passed_over == 1
    assert numbers(result, "paid") == ["1042", "A-7"]
    first = result.of("paid")[0].entry
    assert first.remittance == "Bestellnummer 1042 Erika Mustermann Teekanne"
    assert first.end_to_end_id == "E2E-77" and first.payer == "Erika Mustermann"
    assert log("1042")[-1].data["end_to_end_id"] == "E2E-77"


def test_a_sparkasse_csv_export_in_windows_1252(store, settings):
    make_orders(store, settings, "1042", "1043")
    data = sparkasse_csv([Booking("24.90", "Bestellung 1042", payer="Jürgen Müller"),
                          Booking("24.90", "Bestellung 1043", booked=False),
                          Booking("-3.50", "Kontoführung", payer="Sparkasse")])
    result = run(store, settings, data, "umsatz.csv")
    assert result.format == "csv" and numbers(result, "paid") == ["1042"] and result.passed_over == 2
    entry = result.of("paid")[0].entry
    assert entry.payer == "Jürgen Müller" and entry.booked_on == dt.date(2026, 11, 20)


def test_a_csv_layout_named_in_the_configuration(store, settings):
    make_orders(store, settings, "1042")
    layout = StatementCsvSettings(delimiter=",", decimal_separator=".", date_format="%Y-%m-%d",
                                  date_column="Date", amount_column="Amount (EUR)",
                                  remittance_columns=("Reference 1", "Reference 2"), payer_column="Counterparty")
    own = dataclasses.replace(settings, statements=StatementSettings(csv=layout))
    data = ("Account export\n\nDate,Counterparty,Reference 1,Reference 2,Amount (EUR),Balance\n"
            "2026-11-20,Erika Mustermann,Order,1042,\"1,024.90\",2000.00\n"
            "2026-11-20,Erika Mustermann,Order,1042,24.90,2024.90\n").encode()
    result = run(store, own, data, "export.csv")
    assert numbers(result, "amount_differs") == ["1042"] and numbers(result, "paid") == ["1042"]
    assert [o.entry.amount for o in result.outcomes] == [Decimal("1024.90"), Decimal("24.90")]
    with pytest.raises(InputError, match="with the columns of \\[statements.csv\\]"):
        run(store, own, sparkasse_csv([Booking("24.90", "x")]), "sparkasse.csv")


def test_thousands_of_entries_in_one_import(store, settings):
    count = 300
    for n in range(count):
        orders.create_order(store, settings, sample_order(str(5000 + n)), quiet=True)
    bookings = [Booking("24.90", f"Bestellung {5000 + n}") for n in range(count)]
    bookings += [Booking("-1.00", f"Gebuehr {n}") for n in range(1000)]
    bookings += [Booking("7.00", f"Spende {n}") for n in range(1000)]
    result = run(store, settings, camt053(bookings))
    assert len(result.of("paid")) == count and len(result.of("unmatched")) == 1000
    assert result.passed_over == 1000 and StatementEntry.select().count() == count + 1000


# ---- bad input: refused whole, nothing half-imported -----------------------------------------

def test_a_statement_with_one_broken_entry_changes_nothing(store, settings):
    make_orders(store, settings, "1042")
    data = camt053([Booking("24.90", "Bestellung 1042"), Booking("1.00", "x")]).replace(
        b">1.00</Amt>", b">1,00 Euro</Amt>")
    with pytest.raises(InputError, match=r"auszug.xml: entry 2: '1,00 Euro' is not an amount"):
        run(store, settings, data)
    assert not paid("1042") and StatementEntry.select().count() == 0


@pytest.mark.parametrize("data, message", [
    (b"<?xml version='1.0'?><Document><BkToCstmrStmt><Stmt>", "not well-formed XML"),
    (b"<?xml version='1.0'?><html><body>hi</body></html>", "XML, but no bank statement"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
     b"<Document>&lol2;</Document>", "XML with a DOCTYPE is refused"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "a PDF is for reading, not for importing"),
    (b"Liebe Kundin,\nanbei Ihre Rechnung.\n", "not a bank statement this can read"),
    (b"PK\x03\x04garbage", "a damaged .zip"),
])
def test_what_is_no_statement_is_refused_in_one_line(store, settings, data, message):
    with pytest.raises(InputError, match=message) as refused:
        run(store, settings, data, "upload.bin")
    assert "\n" not in str(refused.value) and str(refused.value).startswith("upload.bin")


def test_a_zip_bomb_stops_at_the_limit_without_eating_memory():
    limit = StatementSettings(max_bytes=2 * 2**20)
    bomb = zipped({"camt.xml": b"<" + b" " * (200 * 2**20)})     # 200 MB of spaces, ~200 KB zipped
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="more than \\[statements\\] max_bytes allows"):
            read_statement(bomb, "bomb.zip", limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit.max_bytes


def test_too_many_entries_are_refused():
    data = camt053([Booking("1.00", str(n)) for n in range(30)])
    with pytest.raises(InputError, match="30 entries, more than the 20 of \\[statements\\] max_entries"):
        read_statement(data, "big.xml", StatementSettings(max_entries=20))


# ---- the match uses the index --------------------------------------------------------------

def test_the_match_query_reads_the_number_index_not_the_table(store, settings):
    make_orders(store, settings, "1042")
    sql = matching.match_sql(store, 3)
    if store.backend == "sqlite":
        plan = " ".join(row[-1] for row in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, ["A", "B", "C"]))
        assert "USING INDEX orders_number_key" in plan, plan
    else:
        store.db.execute_sql("SET enable_seqscan = off")    # a tiny table would be scanned: can it use the index?
        plan = " ".join(row[0] for row in store.db.execute_sql("EXPLAIN " + sql, ["A", "B", "C"]))
        store.db.execute_sql("RESET enable_seqscan")
        assert "orders_number_key" in plan, plan


# ---- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    ({"statements": {"max_bytes": 0}}, "[statements] max_bytes must be at least 1, not 0"),
    ({"statements": {"max_entriess": 5}}, "unknown key [statements] max_entriess"),
    ({"statements": {"csv": {"delimiter": ";;"}}}, '[statements.csv] delimiter must be ";", ",", "\\t" or "|"'),
    ({"statements": {"csv": {"decimal_separator": "'"}}}, '[statements.csv] decimal_separator must be "," or "."'),
    ({"statements": {"csv": {"encoding": "klingon"}}}, "[statements.csv] encoding 'klingon' is not an encoding"),
    ({"statements": {"csv": {"currency": "euro"}}}, '[statements.csv] currency must be a code like "EUR"'),
    ({"statements": {"csv": {"amount_column": "Betrag"}}},
     "[statements.csv] a layout of your own needs amount_column and remittance_columns"),
    ({"statements": {"csv": {"remittance_columns": "Zweck"}}}, "[statements.csv] remittance_columns must be a list"),
])
def test_statement_settings_mistakes_are_named_by_their_key(raw, message):
    with pytest.raises(ConfigError) as raised:
        settings_from_dict(raw)
    assert message in str(raised.value)


def test_a_long_report_is_cut_where_asked():
    entries = read_statement(camt053([Booking("7.00", f"Spende {n}") for n in range(5)]), "s.xml",
                             StatementSettings()).entries
    result = importer.ImportResult("s.xml", "camt.053", 5, 5,
                                   outcomes=[importer.Outcome("unmatched", e, (), "no order number found")
                                             for e in entries])
    text = report.as_text(result, limit=2)
    assert text.count("Spende") == 2 and "  … and 3 more" in text
    assert report.as_text(result).count("Spende") == 5
