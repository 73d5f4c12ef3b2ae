"""The owner's command grammar: each line, done or the reason it was not."""
from __future__ import annotations


import pytest

from conftest import sample_order
from daemon import translations
from daemon.handling import commands
from daemon.orders import service as orders
from daemon.store.models import OutboxMessage


@pytest.fixture
def two_orders(store, settings):
    orders.create_order(store, settings, sample_order("1042"))
    orders.create_order(store, settings, sample_order(
        "1043", customer={"name": "Jean Dupont", "email": "jean@example.fr"}, locale="fr"))


def run(store, settings, text):
    return commands.run_text(store, settings, text)


def test_paid_takes_several_orders_in_one_line(store, settings, two_orders):
    results = run(store, settings, "paid 1042 1043")
    assert [(r.number, r.ok, r.changed, r.text) for r in results] == [
        ("1042", True, True, "1042 marked paid"), ("1043", True, True, "1043 marked paid")]


def test_each_order_of_a_line_gets_its_own_answer(store, settings, two_orders):
    orders.mark_paid(store, settings, "1042")
    results = run(store, settings, "paid 1042 9999 1043")
    assert [(r.number, r.ok, r.changed) for r in results] == [
        ("1042", True, False), ("9999", False, False), ("1043", True, True)]
    assert "already paid" in results[0].text and results[1].text == "no order 9999"


@pytest.mark.parametrize("line, status", [
    ("bezahlt 1042", "paid"), ("versandt 1042", "shipped"), ("storniert 1042", "cancelled"),
    ("Paid #1042", "paid"), ("SHIPPED 1042", "shipped"), ("canceled 1042", "cancelled"),
])
def test_german_words_and_any_case_work(store, settings, two_orders, line, status):
    [result] = run(store, settings, line)
    assert result.ok and result.changed
    assert orders.find_order("1042").status_words()[status]


def test_erstattet_refunds(store, settings, two_orders):
    orders.mark_paid(store, settings, "1042")
    [result] = run(store, settings, "erstattet 1042 10,00 Deckel beschädigt")
    assert result.ok and result.text == "1042 refunded 10.00 EUR"
    event = orders.order_events(orders.find_order("1042"))[-1]
    assert event.body_text == "Deckel beschädigt"


def test_quiet_anywhere_on_a_line_suppresses_the_customer_mail(store, settings, two_orders):
    run(store, settings, "paid quiet 1042\nshipped 1043 quiet")
    assert OutboxMessage.select().where(OutboxMessage.kind.in_(["paid", "shipped"])).count() == 0
    assert orders.find_order("1042").status_words()["paid"]
    assert orders.find_order("1043").status_words()["shipped"]


def test_shipped_reads_tracking_and_carrier_in_any_order(store, settings, two_orders):
    run(store, settings, "shipped 1042 carrier DHL tracking 00340434")
    order = orders.find_order("1042")
    assert (order.tracking_code, order.carrier) == ("00340434", "DHL")
    run(store, settings, "versandt 1043 sendungsnummer ABC paketdienst Hermes")
    assert orders.find_order("1043").tracking_code == "ABC"


def test_a_stray_word_after_shipped_is_explained(store, settings, two_orders):
    [result] = run(store, settings, "shipped 1042 XYZ")
    assert not result.ok and result.text == "unexpected 'XYZ': write 'tracking CODE' or 'carrier NAME'"
    assert not orders.find_order("1042").status_words()["shipped"]


@pytest.mark.parametrize("line, expected", [
    ("refunded 1042 abc", "'abc' is not an amount; write 'refunded 1042 12.50 reason' or 'refunded 1042 full reason'"),
    ("refunded 1042 1.2.3", "the amount must be an amount like"),
])
def test_a_bad_refund_amount_is_named(store, settings, two_orders, line, expected):
    orders.mark_paid(store, settings, "1042")
    [result] = run(store, settings, line)
    assert not result.ok and expected in result.text
    assert not orders.find_order("1042").status_words()["refunded"]


def test_refund_in_full_with_a_reason(store, settings, two_orders):
    orders.mark_paid(store, settings, "1042")
    [result] = run(store, settings, "refunded 1042 full returned unused")
    assert result.text == "1042 refunded 24.90 EUR"


def test_message_keeps_the_text_as_typed(store, settings, two_orders):
    run(store, settings, "message 1042 Ihre Kanne  ist fertig: 2 Wochen Lieferzeit!")
    event = orders.order_events(orders.find_order("1042"))[-1]
    assert event.kind == "message" and event.body_text == "Ihre Kanne  ist fertig: 2 Wochen Lieferzeit!"
    assert event.notified


def test_note_and_vermerk_are_internal(store, settings, two_orders):
    run(store, settings, "note 1042 supplier ref A77\nvermerk 1043 Lieferant angerufen")
    for number in ("1042", "1043"):
        note = orders.order_events(orders.find_order(number))[-1]
        assert note.kind == "note" and note.visibility == "internal" and not note.notified
    assert orders.order_events(orders.find_order("1042"))[-1].body_text == "supplier ref A77"


def test_delete_asks_for_confirm_then_deletes(store, settings, two_orders):
    [asked] = run(store, settings, "delete 1042")
    assert not asked.ok and "write 'delete 1042 confirm'" in asked.text
    [done] = run(store, settings, "löschen 1042 bestätigen")
    assert done.ok and "deleted for good" in done.text
    [gone] = run(store, settings, "show 1042")
    assert not gone.ok and gone.text == "no order 1042"


def test_show_answers_with_the_whole_log_including_notes(store, settings, two_orders):
    run(store, settings, "note 1042 supplier ref A77")
    [shown] = run(store, settings, "show 1042")
    assert shown.ok and not shown.changed
    assert "Order 1042 — open (not paid)" in shown.text and "supplier ref A77" in shown.text
    assert "(internal)" in shown.text


def test_list_answers_with_the_matching_orders(store, settings, two_orders):
    orders.mark_paid(store, settings, "1043")
    [listed] = run(store, settings, "list not paid and not cancelled")
    assert "1042" in listed.text and "1043" not in listed.text


def test_list_with_a_broken_filter_says_where(store, settings, two_orders):
    [listed] = run(store, settings, "list paid and and")
    assert not listed.ok and "column" in listed.text


def test_help_lists_the_grammar_in_the_owners_language(store, settings):
    [answer] = run(store, settings, "hilfe")
    german = translations.say(answer.text, "de")
    assert answer.ok and "versandt 1042 sendungsnummer XYZ" in german and "quiet" in german
    assert "shipped 1042 tracking XYZ" in answer.text and "preview" in answer.text   # the English: API, JSON
    assert "met 'preview' ziet u wat de regel zou doen" in translations.say(answer.text, "nl")


def test_preview_shows_what_would_happen_and_changes_nothing(store, settings, two_orders):
    [result] = run(store, settings, "paid 1042 preview")
    assert result.ok and not result.changed and result.text == "preview, nothing done: 1042 marked paid"
    assert not orders.find_order("1042").status_words()["paid"]
    assert OutboxMessage.select().where(OutboxMessage.kind == "paid").count() == 0


def test_unknown_words_and_missing_numbers_are_explained(store, settings, two_orders):
    results = run(store, settings, "frobnicate 1042\npaid\n# a comment\n\nbezahlt 1042")
    assert [(r.ok, r.text) for r in results] == [
        (False, "unknown command 'frobnicate' (try 'help')"),
        (False, "'paid' needs an order number"),
        (True, "1042 marked paid"),
    ]
