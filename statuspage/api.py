"""Machines: order intake, shop webhooks, health and metrics.

- `POST /api/orders` (the contract's order JSON): 201 with the order JSON and
  Location (its status page); 400 malformed JSON or order, naming the field;
  401 unsigned, badly signed or replayed; 404 while `[api] secret` is "";
  409 the number exists; 413 a body over API_MAX_BYTES.
- `POST /hooks/woocommerce`, `POST /hooks/shopify`: the shops' order webhooks
  with their own signature headers; 201 created; 200 for a duplicate
  delivery, another topic, or WooCommerce's unsigned ping; else as above.
  The paid topics (Shopify `orders/paid`, WooCommerce `order.updated` with
  status processing or completed) mark the order paid: 200 — or 201 when
  the order's creation has not arrived yet and it is created paid.
- `POST /hooks/paypal-ipn`: PayPal's IPN, stored and answered with an empty
  200 before it is verified (daemon/payments/paypal.py); 400 for a body that is no
  IPN, 413 over IPN_MAX_BYTES, 429 from a client over its hourly limit,
  503 while too many wait for verification (PayPal sends them again), 404
  while `[paypal] receiver_email` is "".
- `GET /healthz`: 200 {database, inbound: {new, quarantined}, outbox:
  {pending, failed}}; 503 {database: "unavailable"}. Inside `ordermail
  serve` also doors: {spool, recipients}, each "ok" or "unavailable" — what
  a DATA and an RCPT would meet now (daemon/intake/health.py); 503 when
  one of them is unavailable.
- `GET /metrics`: the Prometheus text format (401 without the bearer token
  when `[api] metrics_token` is set).

Errors are one line of JSON, {"error": "..."}, mapped from the typed outcomes
in one place (ANSWERS). How bodies are signed and replays refused:
signatures.py; the shops' payloads: webhooks.py; the figures: metrics.py.
"""
from __future__ import annotations

import functools
import hmac
import json
import logging
import re
from dataclasses import dataclass

import bottle
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.orders import service as orders
from daemon.payments import paypal
from daemon.errors import InputError, Refused
from daemon.orders.as_json import order_to_json
from daemon.store.database import DATABASE_ERRORS, first_line
from statuspage import metrics, signatures, webhooks
from statuspage.throttle import Throttle, client_address

log = logging.getLogger("ordermail.web")
API_MAX_BYTES = 1024 * 1024         # the largest order JSON (500 items) is far below
HOOK_MAX_BYTES = 4 * 1024 * 1024    # shops send much more than we use
WOOCOMMERCE_PING = re.compile(rb"webhook_id=\d+")
IPN_PER_CLIENT_PER_HOUR = 600       # PayPal posts from a few addresses; a flood from one waits (per process)


@dataclass(frozen=True)
class Shop:
    """One shop's webhook: where its secret lives, its headers, its topics, its mapping."""
    name: str
    secret_key: str
    signature_header: str
    topic_header: str
    create_topic: str
    paid_topic: str
    mapping: object
    says_paid: object       # the paid topic's document → whether it says the order is paid


WOOCOMMERCE = Shop("woocommerce", "woocommerce_secret", "X-WC-Webhook-Signature", "X-WC-Webhook-Topic",
                   "order.created", "order.updated", webhooks.woocommerce_order, webhooks.woocommerce_says_paid)
SHOPIFY = Shop("shopify", "shopify_secret", "X-Shopify-Hmac-Sha256", "X-Shopify-Topic",
               "orders/create", "orders/paid", webhooks.shopify_order, lambda document: True)


def register(app, context) -> None:
    settings, store = context.settings, context.store
    registry = metrics.registry_for(store)

    @app.post("/api/orders", apply=[_answering])
    def api_orders():
        secret = settings.api.secret
        if not secret:
            return _error(404, "not found")
        body = _body(API_MAX_BYTES)
        key = signatures.check_ordermail(secret, body, signatures.RawHeaders(bottle.request.environ))
        data = _json(body)
        with store.atomic():   # the signature is remembered with the order, or not at all
            signatures.remember(store, key)
            order = orders.create_order(store, settings, data)
        log.info("api: order %s created", order.number)
        return _created(order, settings)

    def hook(shop: Shop):
        secret = getattr(settings.api, shop.secret_key)
        if not secret:
            return _error(404, "not found")
        body = _body(HOOK_MAX_BYTES)
        headers = signatures.RawHeaders(bottle.request.environ)
        if shop is WOOCOMMERCE and shop.signature_header not in headers and WOOCOMMERCE_PING.fullmatch(body):
            return _json_response(200, {"pong": True})   # sent unsigned when the webhook is saved
        signatures.check_base64(secret, body, headers.get(shop.signature_header, ""), shop.signature_header)
        topic = headers.get(shop.topic_header, "")
        if topic == shop.paid_topic:
            return paid_hook(shop, _json(body))
        if topic != shop.create_topic:   # a 2xx, or the shop counts failures and disables the hook
            return _json_response(200, {"ignored": f"topic {topic!r}"})
        taken = webhooks.take(store, settings, shop.mapping(_json(body), settings), source=shop.name)
        if not taken.created:
            log.info("%s: order %s delivered again; nothing done", shop.name, taken.order.number)
            return _json_response(200, {"duplicate": True, "number": taken.order.number})
        log.info("%s: order %s created", shop.name, taken.order.number)
        return _created(taken.order, settings)

    def paid_hook(shop: Shop, document):
        if not shop.says_paid(document):   # WooCommerce sends every change under this topic
            return _json_response(200, {"ignored": f"{shop.paid_topic} without a paid status"})
        paid = webhooks.take_paid(store, settings, shop.mapping(document, settings), source=shop.name)
        number = paid.order.number
        if paid.created:
            log.info("%s: order %s created paid (its paid topic came first)", shop.name, number)
            return _created(paid.order, settings)
        log.info("%s: order %s %s", shop.name, number, "marked paid" if paid.marked else "was paid already")
        return _json_response(200, {"number": number, "paid": True, **({} if paid.marked else {"duplicate": True})})

    app.post("/hooks/woocommerce", callback=lambda: hook(WOOCOMMERCE), apply=[_answering])
    app.post("/hooks/shopify", callback=lambda: hook(SHOPIFY), apply=[_answering])

    ipn_clients = Throttle(IPN_PER_CLIENT_PER_HOUR)

    @app.post("/hooks/paypal-ipn", apply=[_answering])
    def paypal_ipn():
        if not settings.paypal.receiver_email:
            return _error(404, "not found")
        client = client_address(settings, bottle.request.environ)
        if ipn_clients.blocked(client):
            return _error(429, "too many messages from your address; try again later",
                          {"Retry-After": str(ipn_clients.retry_after(client))})
        ipn_clients.hit(client)
        received = paypal.receive(store, settings, _body(paypal.IPN_MAX_BYTES))
        log.info("paypal: message %s %s", received.ipn_id, "posted again" if received.duplicate else "stored")
        # PayPal wants an empty 200 at once; the verifier takes it from the store
        return bottle.HTTPResponse(b"", 200, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"})

    @app.get("/healthz")
    def healthz():
        try:
            document = metrics.health(store)
        except DATABASE_ERRORS as exc:
            log.warning("healthz: database unavailable: %s", first_line(exc))
            document = {"database": "unavailable"}
        if context.doors is not None:
            document["doors"] = context.doors.check()
        healthy = document["database"] == "ok" and all(v == "ok" for v in document.get("doors", {}).values())
        return _json_response(200 if healthy else 503, document)

    @app.get("/metrics")
    def prometheus():
        token = settings.api.metrics_token
        given = signatures.RawHeaders(bottle.request.environ).get("Authorization")
        if token and not hmac.compare_digest(given.encode("latin-1", "replace"), f"Bearer {token}".encode()):
            return _error(401, "metrics need Authorization: Bearer <[api] metrics_token>",
                          {"WWW-Authenticate": 'Bearer realm="ordermail"'})
        return bottle.HTTPResponse(generate_latest(registry), 200,
                                   {"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def _created(order, settings):
    document = order_to_json(order, settings, orders.order_events(order))
    return _json_response(201, document, {"Location": document["status_url"]})


# ---- answers: the one mapping from outcome to status ----------------------------------

ANSWERS = (
    (signatures.BodyTooLarge, 413, {}),
    (paypal.QueueFull, 503, {"Retry-After": "300"}),
    (signatures.Unauthorized, 401, {"WWW-Authenticate": 'Signature realm="ordermail"'}),
    (InputError, 400, {}),
    (Refused, 409, {}),
    *((kind, 503, {"Retry-After": "60"}) for kind in DATABASE_ERRORS),
)
CAUGHT = tuple(kind for kind, _, _ in ANSWERS)


def _answering(callback):
    """A decorator turning the typed outcomes of an intake route into their status and a one-line error."""
    @functools.wraps(callback)
    def answer(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except CAUGHT as exc:
            status, headers = next((s, h) for kind, s, h in ANSWERS if isinstance(exc, kind))
            if isinstance(exc, DATABASE_ERRORS):
                log.warning("%s: database unavailable: %s", bottle.request.path, first_line(exc))
                return _error(503, "the database is unavailable; try again later", headers)
            return _error(status, first_line(exc), headers)
    return answer


def _body(limit: int) -> bytes:
    return signatures.read_body(bottle.request.environ, limit)


def _json(body: bytes):
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:   # UnicodeDecodeError is a ValueError
        raise InputError(f"the body is not JSON: {exc}") from None


def _json_response(status: int, document, headers=None) -> bottle.HTTPResponse:
    body = json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n"
    return bottle.HTTPResponse(body.encode("utf-8"), status,
                               {"Content-Type": "application/json; charset=utf-8",
                                "Cache-Control": "no-store", **(headers or {})})


def _error(status: int, message: str, headers=None) -> bottle.HTTPResponse:
    return _json_response(status, {"error": " ".join(message.split())}, headers)
