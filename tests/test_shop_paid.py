"""The shops' paid webhooks: Shopify `orders/paid`, WooCommerce `order.updated` with a paid status.

Signed as the shops sign them, sent to the real web app (in-process WSGI),
on both databases; in the order the shop chooses, and more than once.
"""
from __future__ import annotations

import pytest

from daemon.store.models import Event, Order, OutboxMessage
from test_api import (api_settings, app, deliver_shopify, deliver_woocommerce, order_count,  # noqa: F401 (fixtures)
                      post_order, shopify_order, woocommerce_order)
from conftest import sample_order


def kinds(number: str) -> list[str]:
    return [e.kind for e in Event.select().join(Order).where(Order.number == number).order_by(Event.id)]


def mails(kind: str) -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == kind))


def is_paid(number: str) -> bool:
    return Order.get(Order.number == number).status_words()["paid"]


# ---- Shopify ----------------------------------------------------------------------------

def test_shopify_orders_paid_marks_a_pending_order_paid_once_and_tells_the_customer(app):
    assert deliver_shopify(app, shopify_order(financial_status="pending")).status == 201
    assert not is_paid("1019")
    answer = deliver_shopify(app, shopify_order(), topic="orders/paid")
    assert answer.status == 200 and answer.json() == {"number": "1019", "paid": True}
    assert is_paid("1019")
    paid = Event.get(Event.kind == "paid")
    assert paid.author == "system" and paid.data == {"source": "shopify"}
    assert [m.recipient for m in mails("paid")] == ["jon@example.com"]
    again = deliver_shopify(app, shopify_order(), topic="orders/paid")       # Shopify retries
    assert again.status == 200 and again.json() == {"number": "1019", "paid": True, "duplicate": True}
    assert kinds("1019") == ["created", "paid"] and len(mails("paid")) == 1


def test_shopify_orders_paid_before_orders_create_creates_the_order_paid(app):
    """Shopify does not promise the order of topics: paid may come first."""
    answer = deliver_shopify(app, shopify_order(financial_status="pending"), topic="orders/paid")
    assert answer.status == 201 and answer.json()["status"]["paid"] is True
    late = deliver_shopify(app, shopify_order(financial_status="pending"))
    assert late.status == 200 and late.json()["duplicate"] is True
    assert kinds("1019") == ["created", "paid"] and is_paid("1019")
    assert len(mails("created")) == 1 and mails("paid") == []        # one mail: the order, already paid


def test_an_order_paid_at_creation_is_not_marked_twice_by_orders_paid(app):
    assert deliver_shopify(app, shopify_order()).status == 201          # financial_status paid
    assert deliver_shopify(app, shopify_order(), topic="orders/paid").json()["duplicate"] is True
    assert kinds("1019") == ["created", "paid"]


def test_a_badly_signed_or_unsigned_paid_hook_changes_nothing(app):
    assert deliver_shopify(app, shopify_order(financial_status="pending")).status == 201
    assert deliver_shopify(app, shopify_order(), topic="orders/paid", secret="guess").status == 401
    assert not is_paid("1019") and kinds("1019") == ["created"]


def test_a_paid_hook_for_another_customers_number_is_a_conflict(app):
    assert post_order(app, sample_order("1019")).status == 201
    answer = deliver_shopify(app, shopify_order(), topic="orders/paid")
    assert answer.status == 409 and "another customer" in answer.json()["error"]
    assert not is_paid("1019")


# ---- WooCommerce -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["processing", "completed"])
def test_woocommerce_order_updated_to_a_paid_status_marks_it_paid(app, status):
    assert deliver_woocommerce(app, woocommerce_order()).status == 201           # on-hold: a bank transfer
    answer = deliver_woocommerce(app, woocommerce_order(status=status, date_paid="2024-03-15T09:00:00"),
                                 topic="order.updated")
    assert answer.status == 200 and answer.json() == {"number": "727", "paid": True}
    assert is_paid("727") and Event.get(Event.kind == "paid").data == {"source": "woocommerce"}
    assert [m.recipient for m in mails("paid")] == ["camille@example.fr"]


def test_woocommerce_processing_then_completed_marks_paid_once(app):
    deliver_woocommerce(app, woocommerce_order())
    deliver_woocommerce(app, woocommerce_order(status="processing"), topic="order.updated")
    again = deliver_woocommerce(app, woocommerce_order(status="completed"), topic="order.updated")
    assert again.json()["duplicate"] is True
    assert kinds("727") == ["created", "paid"] and len(mails("paid")) == 1


@pytest.mark.parametrize("document", [woocommerce_order(status="on-hold"), woocommerce_order(status="cancelled"),
                                      woocommerce_order(status="pending", payment_method="stripe"), [], "x"])
def test_woocommerce_updates_that_are_no_payment_are_200_and_ignored(app, document):
    """WooCommerce disables a hook after repeated failures: an update we do not use is never an error."""
    answer = deliver_woocommerce(app, document, topic="order.updated")
    assert answer.status == 200 and "ignored" in answer.json()
    assert order_count() == 0


def test_a_woocommerce_payment_update_for_an_order_not_yet_created_creates_it_paid(app):
    answer = deliver_woocommerce(app, woocommerce_order(status="processing"), topic="order.updated")
    assert answer.status == 201 and answer.json()["status"]["paid"] is True
    assert deliver_woocommerce(app, woocommerce_order()).json()["duplicate"] is True
    assert kinds("727") == ["created", "paid"]


def test_a_malformed_paid_payload_is_400_naming_the_field(app):
    document = woocommerce_order(status="processing")
    document["billing"] = {**document["billing"], "email": ""}
    answer = deliver_woocommerce(app, document, topic="order.updated")
    assert answer.status == 400 and "customer.email" in answer.json()["error"]
    assert order_count() == 0
