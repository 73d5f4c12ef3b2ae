"""The domain service: every change writes its event, flags and notification together."""
from __future__ import annotations

import decimal
import threading

import pytest

from conftest import sample_order
from daemon.orders import service as orders
from daemon.errors import InputError, OrderNotFound, Refused
from daemon.orders.service import Content, NewFile, Via
from daemon.store.models import Attachment, Blob, Event, Order, OrderItem, OutboxMessage, utcnow


def kinds(number: str) -> list[str]:
    return [e.kind for e in orders.order_events(orders.find_order(number))]


def outbox_kinds(number: str) -> list[str]:
    order = orders.find_order(number)
    return [m.kind for m in OutboxMessage.select().where(OutboxMessage.order == order).order_by(OutboxMessage.id)]


# ---- creating ------------------------------------------------------------------

def test_created_order_keeps_the_contract_fields_and_queues_the_confirmation(store, settings):
    order = orders.create_order(store, settings, sample_order())
    order = orders.find_order("1042")
    assert (order.customer_name, order.customer_email) == ("Erika Mustermann", "erika@example.org")
    assert order.total == decimal.Decimal("24.90") and order.currency == "EUR"
    assert [(i.name, i.quantity, i.unit_price) for i in order.items] == [("Teekanne", 1, decimal.Decimal("24.90"))]
    assert kinds("1042") == ["created"]
    mail = OutboxMessage.get(OutboxMessage.order == order)
    assert mail.recipient == "erika@example.org" and mail.state == "pending"
    assert mail.message_id.endswith("@shop.example>")


def test_status_token_and_reply_secret_carry_at_least_128_bits_and_differ_per_order(store, settings):
    first = orders.create_order(store, settings, sample_order("1"))
    second = orders.create_order(store, settings, sample_order("2"))
    assert len(first.status_token) >= 22          # 22 urlsafe chars = 132 bits
    assert len(first.reply_secret) >= 32          # hex: 128 bits
    assert first.status_token != second.status_token and first.reply_secret != second.reply_secret


def test_orders_without_a_number_are_numbered_in_sequence(store, settings):
    numbers = [orders.create_order(store, settings, sample_order(None)).number for _ in range(3)]
    assert numbers == ["1001", "1002", "1003"]


def test_assigned_numbers_skip_numbers_already_taken(store, settings):
    orders.create_order(store, settings, sample_order("1001"))
    assert orders.create_order(store, settings, sample_order(None)).number == "1002"


def test_an_existing_number_is_refused_and_nothing_is_written(store, settings):
    orders.create_order(store, settings, sample_order())
    with pytest.raises(Refused, match="order 1042 exists already"):
        orders.create_order(store, settings, sample_order(items=[
            {"name": "Tasse", "quantity": 2, "unit_price": "5.00"}]))
    assert OrderItem.select().count() == 1 and Event.select().count() == 1


@pytest.mark.parametrize("change, message", [
    ({"customer": {"name": "Erika"}}, "customer.email is missing"),
    ({"customer": {"name": "Erika", "email": "not-an-address"}}, "is not a mail address"),
    ({"items": [{"name": "Teekanne", "quantity": -1, "unit_price": "1.00"}]}, "items[0].quantity must be a whole number of at least 1"),
    ({"items": []}, "items must be a non-empty list"),
    ({"payment_method": "bitcoin"}, "unknown payment_method 'bitcoin' (configured: bank_transfer, paypal)"),
    ({"total": "-3"}, "total must be an amount of 0 or more"),
    ({"total": "1.234"}, "total has more than two decimal places"),
    ({"total": "zwanzig"}, "total must be an amount like"),
    ({"locale": "xx"}, "locale must be one of de, en, fr"),
    ({"currency": "euro"}, "currency must be a three-letter code"),
    ({"number": "10 42"}, "number must be up to 32 letters"),
    ({"totl": "1.00"}, "unknown field 'totl'"),
])
def test_bad_order_json_is_refused_naming_the_field(store, settings, change, message):
    with pytest.raises(InputError) as raised:
        orders.create_order(store, settings, sample_order(**change))
    assert message in str(raised.value)
    assert Order.select().count() == 0


def test_amounts_with_a_decimal_comma_are_understood(store, settings):
    order = orders.create_order(store, settings, sample_order(total="24,90"))
    assert order.total == decimal.Decimal("24.90")


# ---- status rules ----------------------------------------------------------------

@pytest.fixture
def order_1042(store, settings):
    return orders.create_order(store, settings, sample_order())


def test_paid_sets_the_flag_logs_and_notifies(store, settings, order_1042):
    change = orders.mark_paid(store, settings, "1042")
    order = orders.find_order("1042")
    assert change.done and change.notified and change.summary == "1042 marked paid"
    assert order.status_words()["paid"] and order.paid_at is not None
    assert kinds("1042") == ["created", "paid"]
    assert outbox_kinds("1042") == ["created", "paid"]


def test_paid_twice_adds_nothing_and_says_so(store, settings, order_1042):
    orders.mark_paid(store, settings, "1042")
    again = orders.mark_paid(store, settings, "1042")
    assert not again.done and "already paid on" in again.summary and "nothing changed" in again.summary
    assert kinds("1042") == ["created", "paid"] and outbox_kinds("1042") == ["created", "paid"]


def test_quiet_logs_the_event_without_mailing_the_customer(store, settings, order_1042):
    change = orders.mark_paid(store, settings, "1042", via=Via(quiet=True))
    assert change.done and not change.notified and "(customer not notified)" in change.summary
    paid = orders.order_events(orders.find_order("1042"))[-1]
    assert paid.kind == "paid" and not paid.notified
    assert outbox_kinds("1042") == ["created"]


def test_shipped_keeps_tracking_and_carrier(store, settings, order_1042):
    change = orders.mark_shipped(store, settings, "1042", tracking="XYZ123", carrier="DHL")
    order = orders.find_order("1042")
    assert (order.tracking_code, order.carrier) == ("XYZ123", "DHL")
    assert change.summary == "1042 marked shipped (carrier DHL, tracking XYZ123)"


def test_a_tracking_code_given_later_updates_a_shipped_order(store, settings, order_1042):
    orders.mark_shipped(store, settings, "1042")
    change = orders.mark_shipped(store, settings, "1042", tracking="LATE1")
    assert change.done and change.summary == "1042 shipping details updated"
    assert orders.find_order("1042").tracking_code == "LATE1"
    assert not orders.mark_shipped(store, settings, "1042", tracking="LATE1").done


def test_shipped_on_a_cancelled_order_is_refused_with_the_reason(store, settings, order_1042):
    orders.mark_cancelled(store, settings, "1042", reason="out of stock")
    with pytest.raises(Refused, match="was cancelled on .*; a cancelled order is not shipped"):
        orders.mark_shipped(store, settings, "1042")
    assert kinds("1042") == ["created", "cancelled"]
    assert not orders.find_order("1042").status_words()["shipped"]


def test_a_shipped_order_is_not_cancelled(store, settings, order_1042):
    orders.mark_shipped(store, settings, "1042")
    with pytest.raises(Refused, match="a shipped order is refunded, not cancelled"):
        orders.mark_cancelled(store, settings, "1042")


def test_the_cancel_reason_becomes_the_event_text(store, settings, order_1042):
    orders.mark_cancelled(store, settings, "1042", reason="Teekanne nicht lieferbar")
    event = orders.order_events(orders.find_order("1042"))[-1]
    assert event.body_text == "Teekanne nicht lieferbar" and event.data == {"reason": "Teekanne nicht lieferbar"}


def test_refunded_needs_a_payment(store, settings, order_1042):
    with pytest.raises(Refused, match="is not paid; only a payment can be refunded"):
        orders.mark_refunded(store, settings, "1042")
    assert kinds("1042") == ["created"]


def test_partial_refunds_add_up_and_never_exceed_the_payment(store, settings, order_1042):
    orders.mark_paid(store, settings, "1042")
    assert orders.mark_refunded(store, settings, "1042", amount=decimal.Decimal("10.00")).done
    with pytest.raises(Refused, match="more than the 14.90 EUR left to refund"):
        orders.mark_refunded(store, settings, "1042", amount=decimal.Decimal("20.00"))
    rest = orders.mark_refunded(store, settings, "1042")
    assert rest.summary == "1042 refunded 14.90 EUR"
    assert orders.find_order("1042").refunded_amount == decimal.Decimal("24.90")
    assert not orders.mark_refunded(store, settings, "1042").done


def test_unknown_orders_are_named(store, settings):
    with pytest.raises(OrderNotFound, match="no order 9999"):
        orders.mark_paid(store, settings, "9999")


# ---- messages, notes, files ---------------------------------------------------------

def test_a_note_is_internal_and_never_mailed(store, settings, order_1042):
    change = orders.add_note(store, settings, "1042", Content(text="supplier ref A77"))
    note = orders.order_events(orders.find_order("1042"))[-1]
    assert change.done and not change.notified
    assert note.kind == "note" and note.visibility == "internal" and not note.notified
    assert outbox_kinds("1042") == ["created"]


def test_even_a_quietless_note_cannot_be_made_public(store, settings, order_1042):
    orders.add_note(store, settings, "1042", Content(text="x"), via=Via(quiet=False))
    assert all(e.visibility == "internal" for e in orders.order_events(orders.find_order("1042"))
               if e.kind == "note")


def test_a_message_is_public_mailed_and_needs_text(store, settings, order_1042):
    with pytest.raises(InputError, match="has no text"):
        orders.add_message(store, settings, "1042", Content(text="  "))
    orders.add_message(store, settings, "1042", Content(text="Ihre Kanne ist graviert."))
    message = orders.order_events(orders.find_order("1042"))[-1]
    assert message.visibility == "public" and message.notified
    assert message.body_html == "<p>Ihre Kanne ist graviert.</p>"
    assert outbox_kinds("1042") == ["created", "message"]


def test_owner_html_is_sanitised_before_it_is_stored(store, settings, order_1042):
    orders.add_message(store, settings, "1042", Content(
        text="Hallo", html='<p onclick="steal()">Hallo<script>alert(1)</script>'
                          '<img src="cid:kanne" onerror="x()"><a href="javascript:evil()">x</a></p>'))
    html = orders.order_events(orders.find_order("1042"))[-1].body_html
    assert "script" not in html and "onclick" not in html and "onerror" not in html
    assert "javascript:" not in html and 'src="cid:kanne"' in html


def test_files_are_stored_once_by_content(store, settings, order_1042):
    orders.create_order(store, settings, sample_order("1043"))
    photo = NewFile("kanne.jpg", "image/jpeg", b"\xff\xd8jpeg-bytes", content_id="kanne")
    orders.add_message(store, settings, "1042", Content(text="Foto", files=(photo,)))
    orders.add_message(store, settings, "1043", Content(text="Foto", files=(photo,)))
    assert Attachment.select().count() == 2 and Blob.select().count() == 1
    assert Blob.get().data == b"\xff\xd8jpeg-bytes"


def test_a_file_over_the_cap_is_refused_and_nothing_is_written(store, settings, order_1042):
    big = NewFile("big.bin", "application/octet-stream", b"x" * (settings.limits.attachment_max_bytes + 1))
    with pytest.raises(InputError, match="over the limit"):
        orders.add_message(store, settings, "1042", Content(text="big", files=(big,)))
    assert kinds("1042") == ["created"] and Blob.select().count() == 0


def test_the_same_received_mail_never_logs_twice(store, settings, order_1042):
    via = Via(author="customer", message_id="<reply-1@example.org>")
    assert orders.add_note(store, settings, "1042", Content(text="a"), via=via).done
    again = orders.add_note(store, settings, "1042", Content(text="a"), via=via)
    assert not again.done and "already done by this mail" in again.summary
    assert kinds("1042") == ["created", "note"]


def test_one_owner_mail_may_add_two_notes_to_one_order(store, settings, order_1042):
    via = Via(author="owner", message_id="<cmd-1@owner.example>")
    orders.add_note(store, settings, "1042", Content(text="a"), via=via)
    orders.add_note(store, settings, "1042", Content(text="b"), via=via)
    assert kinds("1042") == ["created", "note", "note"]


# ---- one transaction -------------------------------------------------------------------

def test_a_failure_while_queueing_the_mail_leaves_the_order_untouched(store, settings, order_1042, monkeypatch):
    def broken_queue(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(orders, "queue_mail", broken_queue)
    with pytest.raises(RuntimeError):
        orders.mark_paid(store, settings, "1042")
    monkeypatch.undo()
    order = orders.find_order("1042")
    assert not order.status_words()["paid"] and order.paid_at is None
    assert kinds("1042") == ["created"]


def test_two_writers_marking_paid_at_once_log_it_once(store, settings, order_1042):
    results, barrier = [], threading.Barrier(4)

    def pay():
        barrier.wait()
        results.append(orders.mark_paid(store, settings, "1042").done)
        store.db.close()

    threads = [threading.Thread(target=pay) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]
    assert kinds("1042") == ["created", "paid"]


# ---- batches ---------------------------------------------------------------------------------

def logged(number: str) -> list[tuple]:
    """An order's log and mails as the owner and the customer see them (no ids, no Message-IDs)."""
    order = orders.find_order(number)
    events = [(e.kind, e.author, e.subject, e.body_text, e.body_html, e.data, e.notified, e.message_id,
               e.created_at) for e in orders.order_events(order)]
    mails = [(m.kind, m.recipient, m.state, m.data, m.next_attempt_at, m.event.kind if m.event_id else None)
             for m in OutboxMessage.select().where(OutboxMessage.order == order).order_by(OutboxMessage.id)]
    flags = (order.status, order.paid_at, order.updated_at)
    return [flags, events, mails]


def test_a_batch_pays_each_order_as_paying_them_one_by_one_does(store, settings):
    now = utcnow().replace(microsecond=0)
    for number in ("1", "2", "3", "4"):
        orders.create_order(store, settings, sample_order(number), now=now)
    for number in ("2", "4"):
        orders.mark_cancelled(store, settings, number, reason="changed my mind", via=Via(now=now))
    via, data = Via(author="system", now=now), {"bank_statement": "camt.053"}
    one = [orders.mark_paid(store, settings, number, via=via, data=data) for number in ("1", "2")]
    batch = orders.mark_paid_many(store, settings, [orders.PerOrder(n, data) for n in ("3", "4")], via=via)
    assert [c.summary for c in one] == ["1 marked paid", "2 marked paid (note: it is cancelled)"]
    assert [c.summary for c in batch] == ["3 marked paid", "4 marked paid (note: it is cancelled)"]
    assert all(c.done and c.notified and c.event_id for c in one + batch)
    assert logged("1") == logged("3") and logged("2") == logged("4")
    assert logged("3")[1][-1][:2] == ("paid", "system") and logged("3")[1][-1][5] == data
    assert logged("3")[2][-1][0] == "paid"


def test_an_order_named_twice_in_a_batch_is_paid_once(store, settings, order_1042):
    first, second = orders.mark_paid_many(store, settings, [orders.PerOrder("1042"), orders.PerOrder("#1042")])
    assert first.done and first.before["status"] == 0 and first.before["paid_at"] is None
    assert not second.done and "already paid on" in second.summary
    assert kinds("1042") == ["created", "paid"] and outbox_kinds("1042") == ["created", "paid"]


def test_an_unknown_order_in_a_batch_changes_nothing(store, settings, order_1042):
    with pytest.raises(OrderNotFound, match="9999"):
        orders.mark_paid_many(store, settings, [orders.PerOrder("1042"), orders.PerOrder("9999")])
    assert not orders.find_order("1042").status_words()["paid"]
    assert kinds("1042") == ["created"] and outbox_kinds("1042") == ["created"]


def test_a_batch_of_hundreds_of_orders_names_each_event_in_its_own_mail(store, settings):
    """More orders than one locked read takes, and a count no INSERT size divides."""
    count = 700
    now = orders.utcnow()
    Order.insert_many([{"number": str(5000 + n), "customer_name": "Erika Mustermann",
                        "customer_email": f"c{n}@example.org", "customer_key": "erika mustermann",
                        "surname_key": "mustermann", "total": decimal.Decimal("9.90"), "currency": "EUR",
                        "payment_method": "bank_transfer", "locale": "de", "created_at": now,
                        "updated_at": now, "status_token": f"token-{n}", "reply_secret": f"secret-{n}"}
                       for n in range(count)]).execute()
    changes = orders.mark_paid_many(store, settings, [orders.PerOrder(str(5000 + n), {"n": n})
                                                      for n in range(count)])
    assert [c.number for c in changes] == [str(5000 + n) for n in range(count)] and all(c.done for c in changes)
    events = {e.id: e for e in Event.select().where(Event.kind == "paid")}
    assert sorted(events) == sorted(c.event_id for c in changes)
    assert all(events[c.event_id].order.number == c.number and events[c.event_id].data == {"n": n}
               for n, c in enumerate(changes))
    mails = list(OutboxMessage.select().where(OutboxMessage.kind == "paid"))
    assert len(mails) == count and len({m.message_id for m in mails}) == count
    assert all(m.event_id in events and events[m.event_id].order_id == m.order_id
               and m.recipient == m.order.customer_email for m in mails)
    assert Order.select().where(Order.status == 1).count() == count
    note = orders.add_note(store, settings, "5000", Content(text="after the batch"))
    assert note.event_id > max(events)          # the ids drawn for the batch are not given again


# ---- deleting ------------------------------------------------------------------------------

def test_delete_needs_confirm(store, settings, order_1042):
    with pytest.raises(Refused, match="write 'delete 1042 confirm'"):
        orders.delete_order(store, "1042", confirm=False)
    assert orders.find_order("1042")


def test_delete_removes_the_order_and_its_whole_log_for_good(store, settings, order_1042):
    orders.create_order(store, settings, sample_order("1043"))
    shared = NewFile("a.png", "image/png", b"shared")
    own = NewFile("b.png", "image/png", b"only-1042")
    orders.add_message(store, settings, "1042", Content(text="x", files=(shared, own)))
    orders.add_message(store, settings, "1043", Content(text="x", files=(shared,)))
    change = orders.delete_order(store, "1042", confirm=True)
    assert change.summary == "order 1042 and its log (2 events) deleted for good"
    with pytest.raises(OrderNotFound):
        orders.find_order("1042")
    assert Event.select().join(Order).where(Order.number == "1042").count() == 0
    assert OrderItem.select().count() == 1
    assert OutboxMessage.select().count() == 2           # 1043's confirmation and message
    assert [b.data for b in Blob.select()] == [b"shared"]
