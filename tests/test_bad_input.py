"""What a careless or hostile user types — numbers past any database's range,
control characters in an address, an over-long tracking code, a total that
does not match its items — gets a clear answer at the door (404, 400 naming
the field, exit 2 with one line), never a traceback; on both databases.
"""
from __future__ import annotations

import dataclasses
import html
import json

import pytest

from conftest import sample_order
from daemon.handling import commands
from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.orders.service import Content, NewFile, Via
from daemon.store.models import Order, OutboxMessage, utcnow
from test_api import api_settings, call, deliver_woocommerce, post_order, woocommerce_order  # noqa: F401
from test_pages import Client, csrf_of, signed_in
from statuspage.app import make_app

HUGE = "99999999999999999999"           # past 2**64
UNICODE_DIGIT = "\u00b2"                # "²": str.isdigit() says yes, int() says no


# ---- numbers from outside ------------------------------------------------------------------------

@pytest.fixture
def order_with_file(store, settings):
    order = orders.create_order(store, settings, sample_order())
    orders.add_message(store, settings, "1042", Content(text="Rechnung anbei",
                                                        files=(NewFile("r.pdf", "application/pdf", b"%PDF-1"),)))
    return order


@pytest.mark.parametrize("file_id", [HUGE, "9223372036854775808", "-1", "0", UNICODE_DIGIT, "1e3", " 1"])
def test_a_file_id_out_of_range_or_not_a_number_is_a_plain_404(store, settings, order_with_file, file_id):
    client = Client(make_app(settings, store))      # the client fails the test on any 500
    path = f"/o/{order_with_file.status_token}/files/{file_id}"
    assert client.get(path).status == 404
    owner = signed_in(Client(make_app(settings, store), address="192.0.2.99"), store, settings, "owner@shop.example")
    assert owner.get(f"/admin/files/{file_id}").status == 404


def test_the_file_itself_is_still_served_and_a_strange_page_number_shows_the_first_page(
        store, settings, order_with_file):
    client = Client(make_app(settings, store))
    attachment_id = orders.order_events(order_with_file)[-1].attachments[0].id
    assert client.get(f"/o/{order_with_file.status_token}/files/{attachment_id}").body == b"%PDF-1"
    owner = signed_in(client, store, settings, "owner@shop.example")
    for page in (HUGE, "%C2%B2", "-3"):                  # %C2%B2: "²" in UTF-8
        reply = owner.get(f"/admin?page={page}")
        assert reply.status == 200 and "1042" in reply.text


@pytest.mark.parametrize("argv, named", [
    (("orders", "list", "--limit", HUGE), "argument --limit: must be a whole number from 0 to 1000000000"),
    (("orders", "list", "--limit", "-1"), "argument --limit: must be a whole number from 0"),
    (("inbound", "list", "--limit", HUGE), "argument --limit: must be a whole number from 1"),
    (("inbound", "show", HUGE), "argument id: must be a whole number from 0 to 9223372036854775807"),
    (("inbound", "retry", UNICODE_DIGIT), "argument id: must be a whole number"),
    (("outbox", "list", "--limit", "0"), "argument --limit: must be a whole number from 1"),
    (("outbox", "retry", HUGE), "argument id: must be a whole number"),
    (("jobs", "run", "outbox-retry", "--now", "0001-01-01T00:00+14:00"), "--now '0001-01-01T00:00+14:00' is not"),
    (("jobs", "run", "outbox-retry", "--now", "9999-12-31T23:00"), "--now must be a time from 1970 to 8999"),
])
def test_a_number_out_of_range_on_the_command_line_is_exit_2_with_one_line(ordermail, argv, named):
    result = ordermail(*argv)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and named in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_largest_list_limit_still_lists(ordermail, store, settings):
    orders.create_order(store, settings, sample_order())
    result = ordermail("orders", "list", "--limit", "1000000000")
    assert result.returncode == 0 and "1042" in result.stdout


def test_a_timestamp_that_is_no_unix_time_is_401_not_500(store, api_settings):  # noqa: F811
    app = make_app(api_settings, store)
    for stamp in (UNICODE_DIGIT, HUGE + HUGE, "-5"):
        answer = post_order(app, sample_order(), timestamp=stamp)
        assert answer.status == 401 and "X-Ordermail-Timestamp" in answer.json()["error"]
    assert Order.select().count() == 0


# ---- control characters in an address ------------------------------------------------------------

CONTROL = ["a\u0001b@example.org", "erika\u007f@example.org", "erika\u0085@example.org", "erika\u0000@example.org"]


@pytest.mark.parametrize("address", CONTROL)
def test_an_address_with_control_characters_is_refused_at_every_door(store, api_settings, ordermail, address):  # noqa: F811
    app = make_app(api_settings, store)
    answer = post_order(app, sample_order(customer={"name": "Erika", "email": address}))
    assert answer.status == 400 and answer.json()["error"].startswith("order JSON: customer.email")
    result = ordermail("order", "create", "--json", "-",
                       stdin=json.dumps(sample_order(customer={"name": "Erika", "email": address})))
    assert result.returncode == 2 and result.stderr.startswith("ordermail: order JSON: customer.email")
    hook = deliver_woocommerce(app, woocommerce_order(billing={"first_name": "Camille", "last_name": "Durand",
                                                              "email": address, "country": "FR"}))
    assert hook.status == 400 and "customer.email" in hook.json()["error"]
    assert Order.select().count() == 0 and OutboxMessage.select().count() == 0


# ---- shipping details are never cut -------------------------------------------------------------

def test_a_tracking_code_or_carrier_too_long_for_the_order_is_refused_not_cut(store, settings):
    orders.create_order(store, settings, sample_order())
    code = "JJD" + "0" * 101
    [outcome] = commands.run_text(store, settings, f"shipped 1042 tracking {code}", via=Via())
    assert not outcome.ok and outcome.text == "a tracking code has at most 100 characters; this one has 104"
    [outcome] = commands.run_text(store, settings, f"shipped 1042 carrier {'D' * 61}", via=Via())
    assert not outcome.ok and outcome.text == "a carrier name has at most 60 characters; this one has 61"
    assert not orders.find_order("1042").has(2)
    [outcome] = commands.run_text(store, settings, f"shipped 1042 tracking {code[:100]} carrier {'D' * 60}",
                                  via=Via())
    assert outcome.ok and orders.find_order("1042").tracking_code == code[:100]


# ---- the total and its items --------------------------------------------------------------------

def test_a_total_that_differs_from_its_items_wins_and_the_difference_is_shown(store, settings, ordermail):
    free = sample_order("1042", items=[{"name": "Teekanne", "quantity": 2, "unit_price": "2.50"}], total="0.00")
    shipped = sample_order("1043", items=[{"name": "Tasse", "quantity": 1, "unit_price": "5.00"}], total="9.90")
    made = ordermail("order", "create", "--json", "-", stdin=json.dumps(free))
    assert made.returncode == 0
    assert ("die Artikel ergeben 5.00 EUR; es gilt die Summe (-5.00 EUR Versand, Gebühren und Rabatte)"
            in made.stdout)
    orders.create_order(store, settings, shipped)
    document = json.loads(ordermail("order", "show", "1042", "--format", "json").stdout)
    assert (document["total"], document["items_total"]) == ("0.00", "5.00")
    mails = {o.order.number: o for o in OutboxMessage.select().where(OutboxMessage.kind == "created")}
    text = notify.compose(settings, mails["1042"], utcnow()).get_body(("plain",)).get_content()
    assert "Versand, Gebühren und Rabatte: -5,00\xa0€" in text and "Summe: 0,00\xa0€" in text
    text = notify.compose(settings, mails["1043"], utcnow()).get_body(("plain",)).get_content()
    assert "Versand, Gebühren und Rabatte: 4,90\xa0€" in text
    page = Client(make_app(settings, store)).get(f"/o/{orders.find_order('1042').status_token}")
    assert "Versand, Gebühren und Rabatte" in page.text and "-5,00" in page.text


def test_where_the_items_add_up_to_the_total_no_extra_line_is_shown(store, settings, ordermail):
    orders.create_order(store, settings, sample_order())
    assert "the total counts" not in ordermail("order", "show", "1042").stdout
    page = Client(make_app(settings, store)).get(f"/o/{orders.find_order('1042').status_token}")
    assert "Versand, Gebühren und Rabatte" not in page.text


# ---- the owner's sign-in ---------------------------------------------------------------------------

def test_the_owners_sign_in_page_speaks_to_the_owner_not_to_a_customer(store, settings):
    client = Client(make_app(settings, store))
    owner_page = client.get("/admin")                      # in the shop's language, German here
    assert "E-Mail-Adresse des Shop-Inhabers" in owner_page.text
    assert "mit der Sie bestellt haben" not in owner_page.text
    asked = client.post("/account", {"email": "owner@shop.example", "csrf": csrf_of(owner_page), "next": "/admin"})
    assert "Falls owner@shop.example sich am Dashboard anmelden darf" in asked.text
    assert "Bestellungen" not in asked.text
    english = Client(make_app(dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, locale="en")),
                              store)).get("/admin")
    assert "Enter the shop owner's e-mail address" in html.unescape(english.text)
    assert "you ordered with" not in english.text
    customer_page = client.get("/account", **{"Accept-Language": "en"})
    assert "the e-mail address you ordered with" in customer_page.text
