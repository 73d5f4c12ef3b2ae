"""The machine routes: signed order intake, shop webhooks, health and metrics.

In-process WSGI calls on both databases, then the same app behind the real
servers it runs on: waitress in the daemon's thread and gunicorn with two
workers, on free loopback ports.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import io
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PG_URL, sample_order
from daemon.config import ApiSettings, WebSettings
from daemon.intake.health import DoorProbes
from daemon.intake.spool import Spool
from daemon.store.models import InboundMessage, Order, OutboxMessage, utcnow
from daemonproc import free_port, gunicorn, wait_for_port
from statuspage.app import SECURITY_HEADERS, make_app
from statuspage.server import WebServer

API_SECRET = "api-secret-0123456789"
WC_SECRET = "wc-secret-abc"
SHOPIFY_SECRET = "shpss_0123456789abcdef"


# ---- a small WSGI client ---------------------------------------------------------------

class Headers(dict):
    """Header names compare without case (bottle writes Www-Authenticate)."""

    def __init__(self, pairs):
        super().__init__((name.lower(), value) for name, value in pairs)

    def __getitem__(self, name):
        return super().__getitem__(name.lower())


@dataclass
class Answer:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def call(app, method: str, path: str, body: bytes = b"", headers: dict | None = None, stream=None) -> Answer:
    environ = {}
    setup_testing_defaults(environ)
    environ.update({"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": stream or io.BytesIO(body),
                    "CONTENT_LENGTH": str(len(body))})
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = int(status[:3]), Headers(response_headers)

    chunks = app(environ, start_response)
    try:
        data = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return Answer(seen["status"], seen["headers"], data)


def signed(body: bytes, secret: str = API_SECRET, timestamp: int | None = None) -> dict:
    message = body if timestamp is None else f"{timestamp}.".encode() + body
    headers = {"X-Ordermail-Signature": "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest(),
               "Content-Type": "application/json"}
    if timestamp is not None:
        headers["X-Ordermail-Timestamp"] = str(timestamp)
    return headers


def encoded(document) -> bytes:
    return json.dumps(document).encode()


def post_order(app, document, **signing) -> Answer:
    body = encoded(document)
    return call(app, "POST", "/api/orders", body, signed(body, **signing))


def order_count() -> int:
    return Order.select().count()


@pytest.fixture
def api_settings(settings):
    return dataclasses.replace(settings, api=ApiSettings(
        secret=API_SECRET, woocommerce_secret=WC_SECRET, shopify_secret=SHOPIFY_SECRET,
        payment_methods=("shopify_payments=paypal",)))


@pytest.fixture
def app(api_settings, store):
    return make_app(api_settings, store)


# ---- POST /api/orders --------------------------------------------------------------------

def test_a_signed_order_is_created_with_201_the_order_json_and_location(app):
    answer = post_order(app, sample_order())
    assert answer.status == 201, answer.body
    document = answer.json()
    assert document["number"] == "1042" and document["total"] == "24.90"
    assert document["status"] == {"paid": False, "shipped": False, "cancelled": False, "refunded": False}
    assert answer.headers["Location"] == document["status_url"]
    assert document["status_url"].startswith("https://shop.example/status/o/")
    assert [e["kind"] for e in document["events"]] == ["created"]
    assert answer.headers["Content-Type"].startswith("application/json")
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value


def test_an_unsigned_body_is_refused_with_401_and_nothing_stored(app):
    answer = call(app, "POST", "/api/orders", encoded(sample_order()))
    assert answer.status == 401 and "missing X-Ordermail-Signature" in answer.json()["error"]
    assert answer.headers["WWW-Authenticate"]
    assert order_count() == 0


@pytest.mark.parametrize("tamper", ["other key", "changed body", "not sha256", "garbage"])
def test_a_badly_signed_body_is_refused_with_401_and_nothing_stored(app, tamper):
    body = encoded(sample_order())
    headers = signed(body, secret="wrong-key" if tamper == "other key" else API_SECRET)
    if tamper == "changed body":
        body = body.replace(b"24.90", b"0.01")
    if tamper == "not sha256":
        headers["X-Ordermail-Signature"] = headers["X-Ordermail-Signature"].replace("sha256=", "sha1=")
    if tamper == "garbage":
        headers["X-Ordermail-Signature"] = "sha256=\u00e4\u00f6\u00fc"
    answer = call(app, "POST", "/api/orders", body, headers)
    assert answer.status == 401, answer.body
    assert len(answer.json()["error"].splitlines()) == 1
    assert order_count() == 0


def test_a_replayed_body_is_refused_with_401_and_nothing_stored(app):
    body = encoded(sample_order(None))      # no number: a replay would make a second order
    assert call(app, "POST", "/api/orders", body, signed(body)).status == 201
    replay = call(app, "POST", "/api/orders", body, signed(body))
    assert replay.status == 401 and "replayed" in replay.json()["error"]
    assert order_count() == 1


def test_a_timestamped_signature_is_taken_once_within_five_minutes(app):
    body, now = encoded(sample_order(None)), int(time.time())
    assert call(app, "POST", "/api/orders", body, signed(body, timestamp=now)).status == 201
    assert call(app, "POST", "/api/orders", body, signed(body, timestamp=now)).status == 401
    # the same body on purpose, later: a new timestamp is a new request
    assert call(app, "POST", "/api/orders", body, signed(body, timestamp=now + 1)).status == 201
    assert order_count() == 2


@pytest.mark.parametrize("age", [301, -301])
def test_a_timestamp_outside_the_window_is_refused(app, age):
    body = encoded(sample_order())
    answer = call(app, "POST", "/api/orders", body, signed(body, timestamp=int(time.time()) - age))
    assert answer.status == 401 and "300 s" in answer.json()["error"]
    assert order_count() == 0


def test_a_timestamp_header_must_be_covered_by_the_signature(app):
    body = encoded(sample_order())
    headers = {**signed(body), "X-Ordermail-Timestamp": str(int(time.time()))}
    assert call(app, "POST", "/api/orders", body, headers).status == 401
    assert order_count() == 0


def test_malformed_json_is_400_with_one_line(app):
    body = b'{"number": "1042",'
    answer = call(app, "POST", "/api/orders", body, signed(body))
    assert answer.status == 400
    assert answer.json()["error"].startswith("the body is not JSON:")
    assert "\n" not in answer.json()["error"]


@pytest.mark.parametrize("change, field", [
    ({"customer": {"name": "Erika"}}, "customer.email"),
    ({"items": [{"name": "Teekanne", "quantity": 0, "unit_price": "1.00"}]}, "items[0].quantity"),
    ({"total": "12.345"}, "total"),
    ({"payment_method": "cash"}, "payment_method"),
    ({"colour": "red"}, "'colour'"),
])
def test_an_invalid_order_is_400_naming_the_field_and_leaves_no_trace(app, change, field):
    answer = post_order(app, sample_order(**change))
    assert answer.status == 400 and field in answer.json()["error"], answer.body
    assert order_count() == 0
    fixed = post_order(app, sample_order())   # a failed request remembers nothing
    assert fixed.status == 201


def test_an_existing_number_is_409(app):
    assert post_order(app, sample_order()).status == 201
    other = sample_order(customer={"name": "Max Muster", "email": "max@example.org"})
    answer = post_order(app, other)
    assert answer.status == 409 and "1042 exists" in answer.json()["error"]
    assert order_count() == 1


def test_a_body_over_the_limit_is_413_before_it_is_read(app):
    class Unread(io.BytesIO):
        def read(self, *args):
            raise AssertionError("the body was read")
    announced = call(app, "POST", "/api/orders", headers={"Content-Length": str(2 * 1024 * 1024)}, stream=Unread())
    assert announced.status == 413 and "1048576 bytes" in announced.json()["error"]
    big = b'{"x": "' + b"a" * (1024 * 1024) + b'"}'
    assert call(app, "POST", "/api/orders", big, signed(big)).status == 413
    assert order_count() == 0


def test_the_api_is_404_while_its_secret_is_empty(settings, store):
    app = make_app(settings, store)   # [api] secret = "" (the default)
    assert post_order(app, sample_order(), secret="").status == 404
    assert call(app, "POST", "/hooks/woocommerce", b"{}").status == 404
    assert call(app, "POST", "/hooks/shopify", b"{}").status == 404
    assert order_count() == 0


# ---- WooCommerce -------------------------------------------------------------------------

def woocommerce_order(**changes) -> dict:
    """An order as WooCommerce's REST API v3 (and its webhook) describes it."""
    order = {
        "id": 727, "parent_id": 0, "number": "727", "order_key": "wc_order_58d2d042d1d", "created_via": "checkout",
        "status": "on-hold", "currency": "EUR", "date_created": "2024-03-14T10:00:00",
        "total": "54.70", "total_tax": "8.73", "prices_include_tax": True, "customer_id": 0,
        "billing": {"first_name": "Camille", "last_name": "Durand", "company": "", "address_1": "3 rue Lepic",
                    "city": "Paris", "postcode": "75018", "country": "FR", "email": "Camille@Example.fr",
                    "phone": ""},
        "shipping": {"first_name": "Camille", "last_name": "Durand", "country": "FR"},
        "payment_method": "bacs", "payment_method_title": "Direct bank transfer", "transaction_id": "",
        "date_paid": None, "date_paid_gmt": None,
        "meta_data": [{"id": 1, "key": "is_vat_exempt", "value": "no"}],
        "line_items": [
            {"id": 315, "name": "Teekanne, blau", "product_id": 93, "variation_id": 0, "quantity": 2,
             "tax_class": "", "subtotal": "33.47", "subtotal_tax": "6.36", "total": "33.47", "total_tax": "6.36",
             "sku": "TK-1", "price": 16.735},
            {"id": 316, "name": "Tee-Sieb", "product_id": 94, "quantity": 1, "subtotal": "12.50",
             "subtotal_tax": "2.37", "total": "12.50", "total_tax": "2.37", "sku": "", "price": 12.5},
        ],
        "shipping_lines": [{"method_title": "Flat rate", "total": "0.00"}],
    }
    order.update(changes)
    return order


def deliver_woocommerce(app, document, topic="order.created", secret=WC_SECRET) -> Answer:
    body = encoded(document)
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return call(app, "POST", "/hooks/woocommerce", body, {
        "X-WC-Webhook-Source": "https://shop.example/", "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": topic.split(".")[0], "X-WC-Webhook-Event": topic.split(".")[1],
        "X-WC-Webhook-Signature": signature, "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": "d5f2c0", "Content-Type": "application/json"})


def test_a_woocommerce_order_is_mapped_onto_the_order_json(app):
    answer = deliver_woocommerce(app, woocommerce_order())
    assert answer.status == 201, answer.body
    document = answer.json()
    assert document["number"] == "727"
    assert document["customer"] == {"name": "Camille Durand", "email": "camille@example.fr"}
    assert document["items"] == [
        {"sku": "TK-1", "name": "Teekanne, blau", "quantity": 2, "unit_price": "19.92"},
        {"sku": "", "name": "Tee-Sieb", "quantity": 1, "unit_price": "14.87"}]
    assert (document["total"], document["currency"]) == ("54.70", "EUR")
    assert document["payment_method"] == "bank_transfer"   # bacs, built in
    assert document["locale"] == "fr"                      # from the billing country
    assert document["status"]["paid"] is False


def test_a_repeated_woocommerce_delivery_answers_200_and_does_nothing(app):
    assert deliver_woocommerce(app, woocommerce_order()).status == 201
    again = deliver_woocommerce(app, woocommerce_order())
    assert again.status == 200 and again.json() == {"duplicate": True, "number": "727"}
    assert order_count() == 1


def test_a_woocommerce_number_of_another_customer_is_a_conflict(app):
    assert post_order(app, sample_order("727")).status == 201
    answer = deliver_woocommerce(app, woocommerce_order())
    assert answer.status == 409 and "another customer" in answer.json()["error"]
    assert order_count() == 1


def test_a_badly_signed_woocommerce_delivery_is_401_and_nothing_stored(app):
    assert deliver_woocommerce(app, woocommerce_order(), secret="guess").status == 401
    assert order_count() == 0


def test_the_woocommerce_ping_and_other_topics_are_answered_200_and_ignored(app):
    ping = call(app, "POST", "/hooks/woocommerce", b"webhook_id=12",
                {"Content-Type": "application/x-www-form-urlencoded"})
    assert ping.status == 200
    updated = deliver_woocommerce(app, woocommerce_order(), topic="order.updated")
    assert updated.status == 200 and "ignored" in updated.json()
    assert order_count() == 0


def test_the_order_language_of_a_woocommerce_plugin_wins_over_the_country(app):
    document = woocommerce_order(meta_data=[{"id": 9, "key": "wpml_language", "value": "en"}])
    assert deliver_woocommerce(app, document).json()["locale"] == "en"


def test_a_paid_woocommerce_order_is_marked_paid(app):
    answer = deliver_woocommerce(app, woocommerce_order(payment_method="paypal", date_paid="2024-03-14T10:01:00"))
    assert answer.json()["status"]["paid"] is True
    assert answer.json()["payment_method"] == "paypal"


def test_an_unmapped_payment_method_is_400_naming_it_and_a_catch_all_maps_it(app, api_settings, store):
    answer = deliver_woocommerce(app, woocommerce_order(payment_method="stripe"))
    assert answer.status == 400 and "'stripe'" in answer.json()["error"]
    assert "[api] payment_methods" in answer.json()["error"]
    mapped = make_app(dataclasses.replace(api_settings, api=dataclasses.replace(
        api_settings.api, payment_methods=("*=bank_transfer",))), store)
    assert deliver_woocommerce(mapped, woocommerce_order(payment_method="stripe")).status == 201


def test_a_woocommerce_order_without_email_is_400_naming_the_field(app):
    document = woocommerce_order()
    document["billing"] = {**document["billing"], "email": ""}
    answer = deliver_woocommerce(app, document)
    assert answer.status == 400 and "customer.email" in answer.json()["error"]


# ---- Shopify -----------------------------------------------------------------------------

def shopify_order(**changes) -> dict:
    """An orders/create webhook body as Shopify's Admin API order resource describes it."""
    order = {
        "id": 5940139491234, "admin_graphql_api_id": "gid://shopify/Order/5940139491234",
        "name": "#1019", "order_number": 1019, "number": 19, "email": "jon@example.com",
        "contact_email": "jon@example.com", "created_at": "2024-11-10T10:30:00-05:00",
        "currency": "GBP", "presentment_currency": "GBP", "total_price": "10.00", "subtotal_price": "10.00",
        "total_tax": "1.67", "taxes_included": True, "financial_status": "paid", "fulfillment_status": None,
        "gateway": "shopify_payments", "payment_gateway_names": ["shopify_payments"],
        "customer_locale": "en-GB", "test": False,
        "customer": {"id": 6147919642668, "email": "jon@example.com", "first_name": "Jon", "last_name": "Snow"},
        "billing_address": {"first_name": "Jon", "last_name": "Snow", "name": "Jon Snow", "country": "United Kingdom",
                            "country_code": "GB"},
        "line_items": [{"id": 466157049, "title": "Mug", "name": "Mug - Blue", "variant_title": "Blue",
                        "sku": "MUG-B", "quantity": 2, "price": "5.00", "total_discount": "0.00",
                        "properties": [], "taxable": True}],
    }
    order.update(changes)
    return order


def deliver_shopify(app, document, topic="orders/create", secret=SHOPIFY_SECRET) -> Answer:
    body = encoded(document)
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return call(app, "POST", "/hooks/shopify", body, {
        "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Shop-Domain": "example-store.myshopify.com", "X-Shopify-API-Version": "2024-10",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "Content-Type": "application/json"})


def test_a_shopify_order_is_mapped_paid_and_in_the_customers_language(app):
    answer = deliver_shopify(app, shopify_order())
    assert answer.status == 201, answer.body
    document = answer.json()
    assert document["number"] == "1019"
    assert document["customer"] == {"name": "Jon Snow", "email": "jon@example.com"}
    assert document["items"] == [{"sku": "MUG-B", "name": "Mug - Blue", "quantity": 2, "unit_price": "5.00"}]
    assert (document["total"], document["currency"]) == ("10.00", "GBP")
    assert document["payment_method"] == "paypal"       # [api] payment_methods: shopify_payments=paypal
    assert document["locale"] == "en"
    assert document["status"]["paid"] is True
    assert [e["kind"] for e in document["events"]] == ["created", "paid"]


def test_a_shopify_order_without_language_takes_the_country_then_the_shop(app):
    assert deliver_shopify(app, shopify_order(customer_locale=None, billing_address={
        "first_name": "Anna", "last_name": "Huber", "country_code": "AT"})).json()["locale"] == "de"
    assert deliver_shopify(app, shopify_order(name="#1020", customer_locale=None, billing_address={
        "first_name": "Ana", "last_name": "Silva", "country_code": "PT"})).json()["locale"] == "de"   # the shop's


def test_a_repeated_shopify_delivery_answers_200_and_does_nothing(app):
    assert deliver_shopify(app, shopify_order()).status == 201
    again = deliver_shopify(app, shopify_order())
    assert again.status == 200 and again.json()["duplicate"] is True
    assert order_count() == 1


def test_a_badly_signed_shopify_delivery_is_401_and_nothing_stored(app):
    assert deliver_shopify(app, shopify_order(), secret="not-the-app-secret").status == 401
    body = encoded(shopify_order())
    unsigned = call(app, "POST", "/hooks/shopify", body, {"X-Shopify-Topic": "orders/create"})
    assert unsigned.status == 401 and "X-Shopify-Hmac-Sha256" in unsigned.json()["error"]
    assert order_count() == 0


def test_other_shopify_topics_are_answered_200_and_ignored(app):
    assert deliver_shopify(app, shopify_order(), topic="orders/updated").status == 200
    assert order_count() == 0


@pytest.mark.parametrize("document", [
    {}, [], "order", None, {"line_items": None}, {"line_items": [None]}, {"line_items": [{"quantity": "2"}]},
    {"number": 1.5, "line_items": []}, {"billing": [], "customer": "x", "billing_address": 3, "line_items": [{}]},
    {"number": {"x": 1}, "total": [], "currency": 978, "payment_method": None, "line_items": [
        {"name": "x" * 1000, "quantity": 2.5, "subtotal": "x", "price": None}]},
])
def test_odd_shop_payloads_are_400_never_500(app, document):
    for deliver in (deliver_woocommerce, deliver_shopify):
        answer = deliver(app, document)
        assert answer.status == 400, (deliver.__name__, answer.body)
        assert len(answer.json()["error"].splitlines()) == 1
    assert order_count() == 0


# ---- GET /healthz ---------------------------------------------------------------------------

def queue_some_mail(store):
    """Two mails waiting, one quarantined, one done (each 2 s after receipt); outbox alike (30 s)."""
    now = utcnow()
    for state in ("new", "new", "quarantined", "done"):
        InboundMessage.create(channel="smtp", sha256="0" * 64, size=3, state=state,
                              received_at=now - dt.timedelta(seconds=2),
                              processed_at=None if state == "new" else now)
    for state in ("pending", "failed", "failed", "sent"):
        OutboxMessage.create(kind="created", recipient="erika@example.org", message_id=f"<{state}{time.time_ns()}@x>",
                             state=state, created_at=now - dt.timedelta(seconds=30),
                             sent_at=now if state == "sent" else None)


def test_healthz_reports_the_database_and_queue_depths(app, store):
    queue_some_mail(store)
    answer = call(app, "GET", "/healthz")
    assert answer.status == 200
    assert answer.json() == {"database": "ok", "inbound": {"new": 2, "quarantined": 1},
                             "outbox": {"pending": 1, "failed": 2}}
    assert answer.headers["Cache-Control"] == "no-store"


def on_the_server(sql: str, *params):
    conn = psycopg2.connect(PG_URL.split("?")[0])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql, params)
    conn.close()


def break_database(store, database_url: str, tmp_path: Path):
    """Make the database fail for real; returns a function that mends it.

    On PostgreSQL the test's schema moves away (a dropped connection is no
    failure: the store replaces it, see the test after the next)."""
    if store.backend == "postgresql":
        schema = database_url.rsplit("search_path%3D", 1)[1]
        on_the_server(f"ALTER SCHEMA {schema} RENAME TO {schema}_away")
        return lambda: on_the_server(f"ALTER SCHEMA {schema}_away RENAME TO {schema}")
    path = Path(database_url.removeprefix("sqlite:///"))
    store.db.close()
    path.rename(tmp_path / "moved.db")
    path.mkdir()            # where the file was, a folder: SQLite cannot open it

    def mend():
        path.rmdir()
        (tmp_path / "moved.db").rename(path)
    return mend


def test_healthz_is_503_while_the_database_fails_and_recovers(app, store, database_url, tmp_path):
    assert call(app, "GET", "/healthz").status == 200
    mend = break_database(store, database_url, tmp_path)
    answer = call(app, "GET", "/healthz")
    assert answer.status == 503 and answer.json() == {"database": "unavailable"}
    mend()
    assert call(app, "GET", "/healthz").status == 200


def test_a_connection_the_database_server_dropped_is_replaced_before_the_next_request(app, store):
    if store.backend == "sqlite":
        pytest.skip("SQLite has no server to drop a connection")
    assert call(app, "GET", "/healthz").status == 200      # this thread's connection, now idle
    pid = store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    on_the_server("SELECT pg_terminate_backend(%s)", pid)
    time.sleep(0.2)                                          # the server has said goodbye
    assert call(app, "GET", "/healthz").status == 200
    assert post_order(app, sample_order()).status == 201
    assert store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] != pid


def test_inside_the_daemon_healthz_asks_the_doors_and_is_503_when_one_would_fail(api_settings, store):
    """The web's own query is not enough: the issue saw 200 while every DATA
    waited for a dead spool writer. Here the writer stops, then the event
    loop the RCPT lookups run on."""
    loop = asyncio.new_event_loop()
    running = threading.Thread(target=loop.run_forever, daemon=True)
    running.start()
    spool = Spool(store)
    app = make_app(api_settings, store, DoorProbes(spool, loop, store, seconds=1, reuse_seconds=0))
    try:
        answer = call(app, "GET", "/healthz")
        assert answer.status == 200 and answer.json()["doors"] == {"spool": "ok", "recipients": "ok"}
        spool.close()
        answer = call(app, "GET", "/healthz")
        assert answer.status == 503
        assert answer.json()["database"] == "ok"      # the web's own connection is fine meanwhile
        assert answer.json()["doors"] == {"spool": "unavailable", "recipients": "ok"}
        loop.call_soon_threadsafe(loop.stop)
        running.join(5)
        assert call(app, "GET", "/healthz").json()["doors"] == {"spool": "unavailable", "recipients": "unavailable"}
    finally:
        if running.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            running.join(5)
        loop.close()


def test_an_order_posted_while_the_database_fails_is_503_and_taken_once_it_is_back(app, store, database_url,
                                                                                  tmp_path):
    call(app, "GET", "/healthz")
    mend = break_database(store, database_url, tmp_path)
    answer = post_order(app, sample_order())
    assert answer.status == 503 and answer.headers["Retry-After"]
    assert "try again later" in answer.json()["error"]
    mend()
    assert post_order(app, sample_order()).status == 201   # not a replay: nothing was remembered
    assert order_count() == 1


# ---- GET /metrics ----------------------------------------------------------------------------

def scrape(app, headers=None) -> dict:
    answer = call(app, "GET", "/metrics", headers=headers)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.body.decode()) for s in family.samples}


def test_metrics_count_mails_by_outcome_queues_and_latency(app, store):
    queue_some_mail(store)
    samples = scrape(app)
    assert samples[("ordermail_database_up", ())] == 1
    assert samples[("ordermail_inbound_queue", (("state", "new"),))] == 2
    assert samples[("ordermail_inbound_queue", (("state", "quarantined"),))] == 1
    assert samples[("ordermail_outbox_queue", (("state", "pending"),))] == 1
    assert samples[("ordermail_outbox_queue", (("state", "failed"),))] == 2
    assert samples[("ordermail_inbound_recent", (("state", "done"),))] == 1
    assert samples[("ordermail_inbound_recent", (("state", "duplicate"),))] == 0
    assert samples[("ordermail_outbox_recent", (("state", "sent"),))] == 1
    assert samples[("ordermail_outbox_recent", (("state", "failed"),))] == 2
    assert samples[("ordermail_queue_oldest_seconds", (("queue", "outbox"),))] >= 29
    # the quarantined and the done mail took 2 s each; the sent one 30 s
    assert samples[("ordermail_inbound_processing_seconds_bucket", (("le", "1.0"),))] == 0
    assert samples[("ordermail_inbound_processing_seconds_bucket", (("le", "2.5"),))] == 2
    assert samples[("ordermail_inbound_processing_seconds_gcount", ())] == 2
    assert 3.9 < samples[("ordermail_inbound_processing_seconds_gsum", ())] < 4.1
    assert samples[("ordermail_outbox_delivery_seconds_bucket", (("le", "15.0"),))] == 0
    assert samples[("ordermail_outbox_delivery_seconds_bucket", (("le", "60.0"),))] == 1


def test_metrics_use_a_registry_of_their_own(app):
    samples = scrape(app)
    assert not any(name.startswith(("python_", "process_")) for name, _ in samples)


def test_metrics_say_when_the_database_is_down(app, store, database_url, tmp_path):
    call(app, "GET", "/healthz")
    mend = break_database(store, database_url, tmp_path)
    assert scrape(app) == {("ordermail_database_up", ()): 0}
    mend()


def test_metrics_want_the_bearer_token_when_one_is_set(api_settings, store):
    app = make_app(dataclasses.replace(api_settings, api=dataclasses.replace(
        api_settings.api, metrics_token="scrape-me")), store)
    assert call(app, "GET", "/metrics").status == 401
    assert call(app, "GET", "/metrics", headers={"Authorization": "Bearer wrong"}).status == 401
    assert scrape(app, {"Authorization": "Bearer scrape-me"})[("ordermail_database_up", ())] == 1


# ---- real servers ------------------------------------------------------------------------------

def http(port: int, method: str, path: str, body: bytes | None = None, headers=None) -> Answer:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, Headers(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, Headers(error.headers.items()), error.read())


def exercise_server(port: int) -> None:
    """What a shop's script and a monitor do, over real HTTP."""
    body = encoded(sample_order(None))
    statuses = [http(port, "POST", "/api/orders", body, signed(body)).status for _ in range(4)]
    assert statuses == [201, 401, 401, 401]     # the replays may reach any worker
    assert http(port, "POST", "/api/orders", body, {"X-Ordermail-Signature": "sha256=00"}).status == 401
    health = http(port, "GET", "/healthz")
    assert health.status == 200 and health.json()["database"] == "ok"
    metrics = http(port, "GET", "/metrics")
    assert metrics.status == 200 and b"ordermail_database_up 1.0" in metrics.body


def test_the_in_process_waitress_server_answers(api_settings, store):
    server = WebServer(dataclasses.replace(api_settings, web=WebSettings(listen=f"127.0.0.1:{free_port()}")), store)
    server.start()
    try:
        port = int(server.listen.rpartition(":")[2])
        wait_for_port(port)
        exercise_server(port)
    finally:
        server.stop()
    assert order_count() == 1


def write_config(settings, path: Path) -> Path:
    path.write_text(
        "[shop]\nname = \"Teeladen\"\naddress = \"orders@shop.example\"\n"
        "base_url = \"https://shop.example/status\"\nlocale = \"de\"\n"
        f"[database]\nurl = {json.dumps(settings.database.url)}\n"
        f"[outbound]\nmaildir = {json.dumps(settings.outbound.maildir)}\n"
        f"[api]\nsecret = {json.dumps(API_SECRET)}\n", encoding="utf-8")
    return path


def test_gunicorn_with_two_workers_answers(api_settings, store, tmp_path):
    port = free_port()
    config = write_config(api_settings, tmp_path / "ordermail.toml")
    with gunicorn("statuspage.wsgi:app", port, tmp_path / "gunicorn.log", {"ORDERMAIL_CONFIG": str(config)}) as process:
        wait_for_port(port)
        exercise_server(port)
    assert process.returncode == 0, (tmp_path / "gunicorn.log").read_text()
    assert order_count() == 1
