"""PayPal IPN: POST /hooks/paypal-ipn, the post-back to a fake PayPal on loopback, and what it does.

The web app is called as a WSGI app (and behind gunicorn and the daemon's
own server at the end); PayPal's verification endpoint is a real HTTP
server on a loopback port (tests/fakepaypal.py), or a port where nothing
listens. Every test runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from urllib.parse import urlencode

import pytest

from conftest import sample_order
from daemon.cli import main as cli
from daemon.orders import service as orders
from daemon.payments import paypal, paypal_verifier
from daemon.config import PaypalSettings, settings_from_dict
from daemon.errors import ConfigError
from daemon.store.models import Event, Order, OutboxMessage, PaypalIpn, utcnow
from daemonproc import Daemon, free_port, gunicorn, wait_for_port, wait_until
from fakepaypal import PATH, FakePayPal, closed_port_url
from statuspage import api
from statuspage.app import make_app
from test_api import call, http, scrape

RECEIVER = "pay@shop.example"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def ipn_body(charset: str = "windows-1252", **changes) -> bytes:
    """An IPN as PayPal posts it for a web_accept payment of order 1042 (fields in PayPal's order)."""
    fields = {
        "mc_gross": "24.90", "protection_eligibility": "Eligible", "address_status": "confirmed",
        "payer_id": "LPLWNMTBWMFAY", "payment_date": "20:12:59 Jan 13, 2026 PST", "payment_status": "Completed",
        "charset": charset, "address_zip": "10115", "first_name": "Erika", "mc_fee": "0.88",
        "address_country_code": "DE", "address_name": "Erika Mustermann", "notify_version": "3.9", "custom": "",
        "payer_status": "verified", "business": RECEIVER, "address_country": "Germany", "address_city": "Berlin",
        "quantity": "1", "verify_sign": "AtkOfCXbDm2hu0ZELryHFjY-Vb7PAUvS6nMXgysbElEn9v-1XcmSoGtf",
        "payer_email": "erika@example.org", "txn_id": "61E67681CH3238416", "payment_type": "instant",
        "last_name": "Mustermann", "address_state": "", "receiver_email": RECEIVER, "payment_fee": "",
        "receiver_id": "S8XGHLYDW9T3S", "txn_type": "web_accept", "item_name": "Teekanne", "mc_currency": "EUR",
        "item_number": "TK-1", "residence_country": "DE", "invoice": "1042", "handling_amount": "0.00",
        "transaction_subject": "", "payment_gross": "", "shipping": "0.00", "ipn_track_id": "a1b2c3d4e5f6",
    }
    fields.update(changes)
    return urlencode({k: v for k, v in fields.items() if v is not None}, encoding=charset).encode("ascii")


def with_paypal(settings, url: str, **changes):
    return dataclasses.replace(settings, paypal=PaypalSettings(ipn_verify_url=url, receiver_email=RECEIVER,
                                                               **changes))


def post_ipn(app, body: bytes, headers=FORM):
    return call(app, "POST", "/hooks/paypal-ipn", body, headers)


@pytest.fixture
def fake():
    with FakePayPal(["VERIFIED"]) as server:
        yield server


@pytest.fixture
def pp_settings(settings, fake):
    return with_paypal(settings, fake.url)


@pytest.fixture
def app(pp_settings, store):
    return make_app(pp_settings, store)


@pytest.fixture
def order(pp_settings, store):
    return orders.create_order(store, pp_settings, sample_order(payment_method="paypal"))


def verify(settings, store, now=None) -> paypal_verifier.Pass:
    return paypal_verifier.verify_due(store, settings, now)


def the_ipn(ipn_id=None) -> PaypalIpn:
    return PaypalIpn.get_by_id(ipn_id) if ipn_id else PaypalIpn.select().order_by(PaypalIpn.id.desc()).get()


def events(number="1042") -> list[Event]:
    return list(Event.select().join(Order).where(Order.number == number).order_by(Event.id))


def owner_alerts() -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == "owner_alert").order_by(OutboxMessage.id))


def customer_mails(kind: str) -> list[OutboxMessage]:
    return list(OutboxMessage.select().where((OutboxMessage.kind == kind)
                                             & (OutboxMessage.recipient == "erika@example.org")))


# ---- the happy path ----------------------------------------------------------------------

def test_a_verified_payment_is_answered_at_once_then_marks_the_order_paid_and_tells_the_customer(
        app, pp_settings, store, fake, order):
    body = ipn_body()
    answer = post_ipn(app, body)
    assert (answer.status, answer.body) == (200, b"")
    assert fake.received == []                       # answered before PayPal was asked
    assert the_ipn().state == "pending" and not Order.get().has(1)

    assert verify(pp_settings, store) == paypal_verifier.Pass(settled=1)
    post, = fake.received
    assert post.path == PATH
    assert post.body == b"cmd=_notify-validate&" + body
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert post.headers["user-agent"].startswith("ordermail")
    paid = Order.get()
    assert paid.status_words()["paid"] is True
    event = events()[-1]
    assert (event.kind, event.author) == ("paid", "system")
    assert event.data["txn_id"] == "61E67681CH3238416" and event.data["source"] == "paypal"
    assert len(customer_mails("paid")) == 1 and owner_alerts() == []
    row = the_ipn()
    assert (row.state, row.verdict, row.outcome, row.order_id) == ("done", "VERIFIED", "paid", paid.id)
    assert verify(pp_settings, store) == paypal_verifier.Pass(settled=0)     # nothing left to do
    assert len(fake.received) == 1


@pytest.mark.parametrize("charset", ["windows-1252", "UTF-8"])
def test_the_post_back_is_the_body_unchanged_in_its_own_charset(app, pp_settings, store, fake, order, charset):
    body = ipn_body(charset, first_name="Jürgen", last_name="Weiß", address_name="Jürgen Weiß",
                    item_name="Teekanne „Blau“ – 1 €", custom="a+b c&d=e")
    assert post_ipn(app, body).status == 200
    verify(pp_settings, store)
    assert fake.received[0].body == b"cmd=_notify-validate&" + body
    assert Order.get().status_words()["paid"] is True
    fields = dict(paypal.parse(the_ipn().raw).pairs)
    assert (fields["first_name"], fields["item_name"], fields["custom"]) == (
        "Jürgen", "Teekanne „Blau“ – 1 €", "a+b c&d=e")


# ---- forged, unreachable, replayed ----------------------------------------------------------

def test_an_invalid_message_pays_nothing_and_mails_nobody(app, pp_settings, store, fake, order):
    fake.script = ["INVALID"]
    assert post_ipn(app, ipn_body()).status == 200
    verify(pp_settings, store)
    assert Order.get().status_words()["paid"] is False
    assert [e.kind for e in events()] == ["created"]
    assert owner_alerts() == []
    row = the_ipn()
    assert (row.state, row.verdict, row.outcome) == ("done", "INVALID", "invalid")
    samples = scrape(make_app(pp_settings, store))
    assert samples[("ordermail_paypal_ipn_recent", (("outcome", "invalid"),))] == 1
    assert samples[("ordermail_paypal_ipn_recent", (("outcome", "paid"),))] == 0


def test_while_paypal_cannot_be_reached_it_is_retried_with_backoff_then_paid_once(settings, store, order):
    port = free_port()
    pp_settings = with_paypal(settings, f"http://127.0.0.1:{port}{PATH}")
    app = make_app(pp_settings, store)
    body = ipn_body()
    assert post_ipn(app, body).status == 200
    start = the_ipn().received_at

    refused = verify(pp_settings, store, start)
    assert refused.settled == 0 and "cannot reach" in refused.unreachable
    row = the_ipn()
    assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, start + dt.timedelta(seconds=60))
    assert "cannot reach" in row.last_error
    assert verify(pp_settings, store, start + dt.timedelta(seconds=30)) == paypal_verifier.Pass(0)   # not due

    with FakePayPal([503, "VERIFIED"], port=port) as fake:
        later = start + dt.timedelta(seconds=61)
        assert "HTTP 503" in verify(pp_settings, store, later).unreachable
        assert the_ipn().next_attempt_at == later + dt.timedelta(seconds=120)      # doubled
        assert verify(pp_settings, store, later + dt.timedelta(seconds=121)).settled == 1
        assert verify(pp_settings, store, later + dt.timedelta(hours=5)).settled == 0
    assert [p.body for p in fake.received] == [b"cmd=_notify-validate&" + body] * 2
    assert Order.get().status_words()["paid"] is True
    assert [e.kind for e in events()] == ["created", "paid"] and len(customer_mails("paid")) == 1


def test_an_answer_that_is_no_verdict_is_retried_not_taken(settings, store, order):
    with FakePayPal(["<html>Down for maintenance</html>", "VERIFIED"]) as fake:
        pp_settings = with_paypal(settings, fake.url)
        post_ipn(make_app(pp_settings, store), ipn_body())
        start = the_ipn().received_at
        assert "neither VERIFIED nor INVALID" in verify(pp_settings, store, start).unreachable
        assert the_ipn().state == "pending" and not Order.get().status_words()["paid"]
        assert verify(pp_settings, store, start + dt.timedelta(seconds=61)).settled == 1
    assert Order.get().status_words()["paid"] is True


def test_after_give_up_hours_the_owner_is_told_and_retry_takes_it_up_again(settings, store, order, capsys):
    port = free_port()
    pp_settings = with_paypal(settings, f"http://127.0.0.1:{port}{PATH}", give_up_after_hours=2)
    assert post_ipn(make_app(pp_settings, store), ipn_body()).status == 200
    row = the_ipn()
    verify(pp_settings, store, row.received_at + dt.timedelta(hours=3))
    row = the_ipn()
    assert row.state == "failed" and "cannot reach" in row.last_error
    alert, = owner_alerts()
    assert alert.recipient == "owner@shop.example" and "not verified" in alert.data["subject"]
    assert f"ordermail payments ipn retry {row.id}" in alert.data["text"]
    assert Order.get().status_words()["paid"] is False

    with FakePayPal(["VERIFIED"], port=port):
        assert run_cli(store, pp_settings, "payments", "ipn", "retry", str(row.id)) == 0
        assert f"PayPal-Nachricht {row.id} wird jetzt erneut geprüft" in capsys.readouterr().out
        assert verify(pp_settings, store).settled == 1
    assert Order.get().status_words()["paid"] is True


def test_a_replay_pays_nothing_twice_and_the_same_body_is_stored_once(app, pp_settings, store, fake, order):
    body = ipn_body()
    assert post_ipn(app, body).status == 200
    assert post_ipn(app, body).status == 200            # PayPal sent it again: stored once
    assert PaypalIpn.select().count() == 1
    verify(pp_settings, store)
    resent = body + b"&resend=true"                      # resent from PayPal's IPN history: new bytes, same txn
    assert post_ipn(app, resent).status == 200
    verify(pp_settings, store)
    assert the_ipn().outcome == "replay"
    assert [e.kind for e in events()] == ["created", "paid"]
    assert len(customer_mails("paid")) == 1 and owner_alerts() == []


def test_two_messages_of_one_payment_settled_side_by_side_pay_once(app, pp_settings, store, fake, order):
    """Two verifiers (two daemons) with the same payment: the order is paid once, nothing else logged."""
    post_ipn(app, ipn_body())
    post_ipn(app, ipn_body(ipn_track_id="ffff00001111"))
    first, second = [r.id for r in PaypalIpn.select().order_by(PaypalIpn.id)]
    now = utcnow()
    paypal.settle(store, pp_settings, first, "VERIFIED", now)
    PaypalIpn.update(state="done", verdict="").where(PaypalIpn.id == first).execute()   # not yet seen as handled
    assert paypal.settle(store, pp_settings, second, "VERIFIED", now).outcome == "replay"
    assert [e.kind for e in events()] == ["created", "paid"]
    assert owner_alerts() == []


# ---- payments that do not pay the order ------------------------------------------------------

@pytest.mark.parametrize("change, outcome, words", [
    ({"mc_gross": "2.49"}, "wrong_amount", "paid 2.49 EUR, the order's total is 24.90 EUR"),
    ({"mc_currency": "USD"}, "wrong_currency", "paid in USD, the order is in EUR"),
    ({"receiver_email": "attacker@example.net"}, "wrong_receiver", "to attacker@example.net, not to our"),
])
def test_a_wrong_amount_currency_or_receiver_pays_nothing_and_tells_the_owner(
        app, pp_settings, store, fake, order, change, outcome, words):
    assert post_ipn(app, ipn_body(**change)).status == 200
    verify(pp_settings, store)
    assert Order.get().status_words()["paid"] is False
    row = the_ipn()
    assert row.outcome == outcome and words in row.reason
    note = events()[-1]
    assert (note.kind, note.visibility, note.author) == ("system", "internal", "system")
    assert words in note.body_text and note.data["outcome"] == outcome
    alert, = owner_alerts()
    assert alert.order_id == order.id and words in alert.data["text"] and alert.data["topic"] == "paypal"
    assert customer_mails("paid") == []


def test_alerts_are_bounded_whatever_is_posted(app, pp_settings, store, fake, order):
    for n in range(paypal.ALERTS_PER_HOUR + 4):
        post_ipn(app, ipn_body(mc_gross="1.00", txn_id=f"9WRONG{n:011d}"))
    verify(pp_settings, store)
    assert PaypalIpn.select().where(PaypalIpn.outcome == "wrong_amount").count() == paypal.ALERTS_PER_HOUR + 4
    assert len(events()) == 1 + paypal.ALERTS_PER_HOUR + 4         # every one is on the order
    assert len(owner_alerts()) == paypal.ALERTS_PER_HOUR            # the mail is bounded


def test_an_unknown_invoice_waits_for_its_order_without_asking_paypal_again(app, pp_settings, store, fake):
    assert post_ipn(app, ipn_body(invoice="1050")).status == 200
    start = the_ipn().received_at
    verify(pp_settings, store, start)
    row = the_ipn()
    assert (row.state, row.verdict, row.outcome) == ("pending", "VERIFIED", "")
    assert "waiting for order 1050" in row.reason
    orders.create_order(store, pp_settings, sample_order("1050"))      # the shop's webhook comes late
    verify(pp_settings, store, start + dt.timedelta(minutes=5))
    assert the_ipn().outcome == "paid" and Order.get(Order.number == "1050").status_words()["paid"]
    assert len(fake.received) == 1


def test_an_invoice_that_never_arrives_is_told_to_the_owner(app, pp_settings, store, fake):
    post_ipn(app, ipn_body(invoice="1050"))
    verify(pp_settings, store, the_ipn().received_at)
    verify(pp_settings, store, the_ipn().received_at + paypal.ORDER_WAIT + dt.timedelta(minutes=1))
    assert the_ipn().outcome == "unknown_invoice"
    alert, = owner_alerts()
    assert "no known order" in alert.data["subject"] and "1050" in alert.data["text"]


# ---- other statuses ------------------------------------------------------------------------

def test_pending_is_logged_with_its_reason_and_the_completion_then_pays(app, pp_settings, store, fake, order):
    post_ipn(app, ipn_body(payment_status="Pending", pending_reason="echeck"))
    verify(pp_settings, store)
    note = events()[-1]
    assert (note.kind, note.visibility) == ("system", "internal")
    assert "pending" in note.subject.lower() and note.data["pending_reason"] == "echeck"
    assert Order.get().status_words()["paid"] is False and owner_alerts() == []
    post_ipn(app, ipn_body())                             # the same txn_id, Completed: not a replay
    verify(pp_settings, store)
    assert Order.get().status_words()["paid"] is True


@pytest.mark.parametrize("status", ["Refunded", "Reversed", "Canceled_Reversal"])
def test_a_refund_or_reversal_is_logged_and_the_owner_told_the_order_unchanged(
        app, pp_settings, store, fake, order, status):
    post_ipn(app, ipn_body())
    verify(pp_settings, store)
    # PayPal's refund message: its own txn_id, the payment's as parent_txn_id, no invoice needed
    post_ipn(app, ipn_body(payment_status=status, txn_id="8RF12345AB6789012", parent_txn_id="61E67681CH3238416",
                           mc_gross="-24.90", reason_code="refund", invoice=None, txn_type=None))
    verify(pp_settings, store)
    note = events()[-1]
    assert note.kind == "system" and note.data["parent_txn_id"] == "61E67681CH3238416"
    assert status.replace("_", " ").lower() in note.subject.lower()
    alert, = owner_alerts()
    assert alert.order_id == order.id and "refunded 1042" in alert.data["text"]
    assert Order.get().status_words() == {"paid": True, "shipped": False, "cancelled": False, "refunded": False}
    assert the_ipn().outcome == "reversal"


def test_a_payment_for_a_cancelled_order_is_taken_and_the_owner_told(app, pp_settings, store, fake, order):
    orders.mark_cancelled(store, pp_settings, "1042", reason="no payment")
    post_ipn(app, ipn_body())
    verify(pp_settings, store)
    assert Order.get().status_words()["paid"] is True
    alert, = owner_alerts()
    assert "cancelled" in alert.data["subject"]


def test_a_payment_for_an_order_paid_by_hand_is_logged_only(app, pp_settings, store, fake, order):
    orders.mark_paid(store, pp_settings, "1042")
    post_ipn(app, ipn_body())
    verify(pp_settings, store)
    assert the_ipn().outcome == "already_paid"
    assert events()[-1].subject == "PayPal: payment for a paid order" and events()[-1].visibility == "internal"
    assert owner_alerts() == []


def test_a_second_paypal_payment_for_one_order_tells_the_owner(app, pp_settings, store, fake, order):
    post_ipn(app, ipn_body())
    post_ipn(app, ipn_body(txn_id="2ND00000000000000"))      # the customer paid again
    verify(pp_settings, store)
    assert [r.outcome for r in PaypalIpn.select().order_by(PaypalIpn.id)] == ["paid", "already_paid"]
    alert, = owner_alerts()
    assert "paid twice" in alert.data["subject"] and "2ND00000000000000" in alert.data["text"]
    assert len(customer_mails("paid")) == 1


# ---- what is no IPN, and bounds -------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b'{"txn_id": "1"}', b"hello", b"a=1&b=2", b"txn_type=web_accept",
                                  b"\xff\xfe\x00garbage=\x01"])
def test_a_body_that_is_no_ipn_is_400_and_nothing_is_stored(app, body):
    answer = post_ipn(app, body)
    assert answer.status == 400 and len(answer.json()["error"].splitlines()) == 1
    assert PaypalIpn.select().count() == 0


@pytest.mark.parametrize("change, reason", [
    ({"mc_gross": "24,90"}, "mc_gross '24,90' is not an amount"),
    ({"txn_id": ""}, "no usable txn_id"),
])
def test_a_malformed_ipn_is_answered_200_and_pays_nothing(app, pp_settings, store, fake, order, change, reason):
    assert post_ipn(app, ipn_body(**change)).status == 200
    verify(pp_settings, store)
    assert (the_ipn().outcome, the_ipn().reason) == ("malformed", reason)
    assert Order.get().status_words()["paid"] is False


def test_a_repeated_field_is_not_taken_at_its_word(app, pp_settings, store, fake, order):
    post_ipn(app, ipn_body(mc_gross="1.00") + b"&mc_gross=24.90")
    verify(pp_settings, store)
    assert the_ipn().outcome == "malformed" and "mc_gross appears more than once" in the_ipn().reason
    assert Order.get().status_words()["paid"] is False


def test_a_body_over_the_limit_is_413_and_a_full_queue_503(app, pp_settings, store, monkeypatch):
    huge = ipn_body(custom="x" * paypal.IPN_MAX_BYTES)
    assert post_ipn(app, huge).status == 413
    monkeypatch.setattr(paypal, "MAX_QUEUED", 2)
    assert post_ipn(app, ipn_body(txn_id="A1")).status == 200
    assert post_ipn(app, ipn_body(txn_id="A2")).status == 200
    full = post_ipn(app, ipn_body(txn_id="A3"))
    assert full.status == 503 and full.headers["Retry-After"] and "wait for verification" in full.json()["error"]
    assert PaypalIpn.select().count() == 2


def test_one_client_posting_too_many_gets_429(pp_settings, store, monkeypatch):
    monkeypatch.setattr(api, "IPN_PER_CLIENT_PER_HOUR", 3)
    app = make_app(pp_settings, store)
    statuses = [post_ipn(app, ipn_body(txn_id=f"T{n}")).status for n in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_the_route_is_404_while_no_receiver_email_is_set(settings, store):
    answer = post_ipn(make_app(settings, store), ipn_body())
    assert answer.status == 404 and PaypalIpn.select().count() == 0


# ---- configuration -----------------------------------------------------------------------------

@pytest.mark.parametrize("paypal_table, message", [
    ({"ipn_verify_url": "http://ipnpb.paypal.com/cgi-bin/webscr"}, "[paypal] ipn_verify_url must use https://"),
    ({"ipn_verify_url": "ipnpb.paypal.com"}, "[paypal] ipn_verify_url must be an https:// URL"),
    ({"receiver_email": "pay"}, "[paypal] receiver_email must be a mail address"),
    ({"receiver_email": "pay @shop.example"}, "[paypal] receiver_email must be a mail address"),
    ({"retry_base_seconds": 0}, "[paypal] retry_base_seconds must be at least 1"),
    ({"recevier_email": "pay@shop.example"}, "unknown key [paypal] recevier_email"),
])
def test_paypal_settings_are_checked_naming_the_key(paypal_table, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings_from_dict({"paypal": paypal_table})


def test_loopback_http_is_allowed_for_tests():
    for url in ("http://127.0.0.1:8999/cgi-bin/webscr", "http://localhost/x", "http://[::1]:80/x"):
        assert settings_from_dict({"paypal": {"ipn_verify_url": url}}).paypal.ipn_verify_url == url


# ---- the command line, gunicorn, and the daemon across a restart ----------------------------------

def write_config(settings, path, url: str, web_listen: str = "") -> str:
    path.write_text(
        "[shop]\nname = \"Teeladen\"\naddress = \"orders@shop.example\"\n"
        "base_url = \"https://shop.example/status\"\nlocale = \"de\"\n"
        "[owner]\naddresses = [\"owner@shop.example\"]\nsecret = \"s3cret-command-key-0123\"\n"
        f"[database]\nurl = {json.dumps(settings.database.url)}\n"
        f"[outbound]\nmaildir = {json.dumps(settings.outbound.maildir)}\n"
        f"[web]\nlisten = {json.dumps(web_listen)}\n"
        f"[paypal]\nipn_verify_url = {json.dumps(url)}\nreceiver_email = \"{RECEIVER}\"\n", encoding="utf-8")
    return path


def test_gunicorn_takes_the_message_and_the_command_line_verifies_lists_and_retries(
        settings, store, fake, order, ordermail, tmp_path):
    """The web app alone (no daemon): the stored message is the queue for `jobs run paypal-ipn`."""
    config = write_config(settings, tmp_path / "paypal.toml", fake.url)
    port = free_port()
    body = ipn_body()
    with gunicorn("statuspage.wsgi:app", port, tmp_path / "gunicorn.log", {"ORDERMAIL_CONFIG": str(config)}):
        wait_for_port(port)
        answer = http(port, "POST", "/hooks/paypal-ipn", body, FORM)
        assert (answer.status, answer.body) == (200, b"")
        assert http(port, "POST", "/hooks/paypal-ipn", b"not an ipn", FORM).status == 400
    assert fake.received == []

    ran = ordermail("jobs", "run", "paypal-ipn", config=config)
    assert ran.returncode == 0 and "1 PayPal message(s) settled" in ran.stdout, ran.stderr
    assert Order.get().status_words()["paid"] is True
    assert fake.received[0].body == b"cmd=_notify-validate&" + body

    listed = ordermail("payments", "ipn", "list", "--format", "json", config=config)
    message, = json.loads(listed.stdout)["messages"]
    assert (message["state"], message["verdict"], message["outcome"], message["order"]) == (
        "done", "VERIFIED", "paid", "1042")
    assert (message["txn_id"], message["amount"], message["currency"]) == ("61E67681CH3238416", "24.90", "EUR")
    table = ordermail("payments", "ipn", "list", config=config).stdout
    assert "61E67681CH3238416" in table and "paid" in table
    shown = ordermail("payments", "ipn", "show", str(message["id"]), config=config)
    assert "first_name = Erika" in shown.stdout and "verified: paid" in shown.stdout

    again = ordermail("payments", "ipn", "retry", str(message["id"]), config=config)
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "not taken again" in again.stderr
    missing = ordermail("payments", "ipn", "show", "999", config=config)
    assert missing.returncode == 1 and "no PayPal message 999" in missing.stderr


def run_cli(store, settings, *argv) -> int:
    args = cli.build_parser().parse_args(list(argv))
    return cli.HANDLERS[(args.command, getattr(args, f"{args.command}_command", None))](args, settings, store)


def test_the_owners_terminal_gets_no_control_characters_from_a_posted_message(app, pp_settings, store, fake,
                                                                            capsys):
    fake.script = ["INVALID"]
    post_ipn(app, ipn_body("UTF-8", invoice="\x1b[2J1042", first_name="\x1b]0;owned\x07Erika\x9b[0m"))
    verify(pp_settings, store)
    for argv in (("list",), ("show", str(the_ipn().id))):
        assert run_cli(store, pp_settings, "payments", "ipn", *argv) == 0
        out = capsys.readouterr().out
        assert not any(c in out for c in "\x1b\x07\x9b") and "\\x1b" in out
    assert "\\x9b" in out and "Erika" in out


def test_the_german_shop_reads_the_list_and_a_stored_reason_in_german(app, pp_settings, store, fake, order, capsys):
    fake.script = ["INVALID"]
    post_ipn(app, ipn_body())
    verify(pp_settings, store)
    assert the_ipn().reason.startswith("PayPal says INVALID")           # stored (and in JSON) in English
    assert run_cli(store, pp_settings, "payments", "ipn", "list") == 0
    listed = capsys.readouterr().out
    assert "EMPFANGEN" in listed and "PayPal sagt INVALID: diese Nachricht kam nicht von PayPal" in listed
    assert run_cli(store, pp_settings, "payments", "ipn", "show", str(the_ipn().id)) == 0
    shown = capsys.readouterr().out
    assert "Grund:      PayPal sagt INVALID" in shown and "Wie gesendet:" in shown and "Reason:" not in shown
    assert run_cli(store, pp_settings, "payments", "ipn", "list", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["messages"][0]["reason"].startswith("PayPal says INVALID")


def test_a_message_stored_while_paypal_is_down_survives_a_restart_and_pays_once(
        database_url, settings, store, order, tmp_path):
    url = closed_port_url()
    port = int(url.split(":")[2].split("/")[0])
    daemon = Daemon(tmp_path, database_url, web=True,
                    extra=f"[paypal]\nipn_verify_url = \"{url}\"\nreceiver_email = \"{RECEIVER}\"\n"
                          "retry_base_seconds = 1\n")
    body = ipn_body()
    daemon.start()
    try:
        answer = http(daemon.web_port, "POST", "/hooks/paypal-ipn", body, FORM)
        assert (answer.status, answer.body) == (200, b"")
        wait_until(lambda: the_ipn().attempts >= 2)          # tried, refused, tried again
    finally:
        assert daemon.stop() == 0
    row = the_ipn()
    assert row.state == "pending" and "cannot reach" in row.last_error
    assert Order.get().status_words()["paid"] is False

    with FakePayPal(["VERIFIED"], port=port) as fake:
        daemon.start()
        try:
            wait_until(lambda: Order.get().status_words()["paid"], 30)
            wait_until(lambda: the_ipn().state == "done")
        finally:
            assert daemon.stop() == 0
    assert {p.body for p in fake.received} == {b"cmd=_notify-validate&" + body}
    assert [e.kind for e in events()] == ["created", "paid"]
    assert len(customer_mails("paid")) == 1
    assert (the_ipn().outcome, the_ipn().attempts >= 3) == ("paid", True)
    assert "Traceback" not in daemon.log_text()
