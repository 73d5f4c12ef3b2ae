"""The web pages, called in process as a WSGI server would, on SQLite and PostgreSQL.

Scenarios: a customer reads her order (and never the shop's notes), a stranger
guesses links, a customer signs in by mail, the owner reads the dashboard.
Every route is called; every field a person can type gets an XSS attempt.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import html.parser
import io
import json
import re
import struct
import urllib.error
import urllib.request
import zlib
from urllib.parse import urlencode, urlsplit
from wsgiref.util import setup_testing_defaults

import pytest

from conftest import sample_order
from daemon.cli import web as cli_web
from daemon.handling import commands
from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.orders.service import Content, NewFile, Via
from daemon.store.models import Event, Order, OutboxMessage, utcnow
from daemonproc import free_port
from statuspage import i18n, links, pages
from statuspage.app import SECURITY_HEADERS, make_app
from statuspage.web_store import SigninToken, WebSession, token_hash

OWNER = "owner@shop.example"
PREFIX = "/status"           # the path of the fixture's base_url


# ---- a small WSGI client ------------------------------------------------------------

@dataclasses.dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


class Client:
    """Calls the app like a browser would: keeps cookies, sends forms."""

    def __init__(self, app, address: str = "192.0.2.10"):
        self.app, self.address, self.jar = app, address, {}

    def get(self, path: str, **headers) -> Reply:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict, **headers) -> Reply:
        return self.request("POST", path, body=urlencode(form).encode(), headers=headers)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> Reply:
        path = path.removeprefix(PREFIX)
        route, _, query = path.partition("?")
        environ = {}
        setup_testing_defaults(environ)
        environ.update({"REQUEST_METHOD": method, "PATH_INFO": route, "QUERY_STRING": query,
                        "REMOTE_ADDR": self.address, "HTTP_HOST": "shop.example", "wsgi.url_scheme": "https",
                        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))})
        if method == "POST":
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if self.jar:
            environ["HTTP_COOKIE"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        answer = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"], answer["headers"] = int(status.split()[0]), response_headers
        chunks = self.app(environ, start_response)
        data = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        reply = Reply(answer["status"], answer["headers"], data)
        assert reply.status != 500, environ["wsgi.errors"].getvalue()
        for cookie in reply.cookies():
            name, _, rest = cookie.partition("=")
            value = rest.split(";")[0]
            if "max-age=0" in cookie.lower() or not value:
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        return reply


def csrf_of(reply: Reply) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', reply.text).group(1)


class ActiveContent(html.parser.HTMLParser):
    """What a browser would run or load from a page: script, style, handlers, javascript: links."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "iframe", "object", "embed", "base"):
            self.found.append(tag)
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"{tag} {name}")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith(("javascript:", "data:")):
                self.found.append(f"{tag} {name}={value}")
            if tag == "img" and name == "src" and not (value or "").startswith(PREFIX + "/"):
                self.found.append(f"img from {value}")


# ---- fixtures and scenario helpers ----------------------------------------------------------

NOW = utcnow()


def png(width: int = 40, height: int = 24, rgb=(45, 93, 75)) -> bytes:
    """A real PNG, so a browser can show it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def app(settings, store):
    return make_app(settings, store)


@pytest.fixture
def client(app):
    return Client(app)


def with_web(settings, **web):
    return dataclasses.replace(settings, web=dataclasses.replace(settings.web, **web))


def token_of(number: str = "1042") -> str:
    return orders.find_order(number).status_token


def page_path(number: str = "1042") -> str:
    return f"/o/{token_of(number)}"


@pytest.fixture
def full_order(store, settings):
    """An order with everything a page shows, and everything it must not."""
    orders.create_order(store, settings, sample_order())
    orders.mark_paid(store, settings, "1042")
    orders.add_message(store, settings, "1042", Content(
        subject="Ihre Kanne ist fertig",
        html='<p>Hier ist <strong>Ihre Kanne</strong>:</p><p><img src="cid:kanne@shop" alt="Kanne"></p>',
        files=(NewFile("kanne.png", "image/png", png(), content_id="<kanne@shop>"),
               NewFile("Rechnung März.pdf", "application/pdf", b"%PDF-1.4 invoice"))))
    orders.add_note(store, settings, "1042", Content(text="SECRET-NOTE supplier ref A77",
                                                     files=(NewFile("intern.pdf", "application/pdf", b"%PDF internal"),)))
    orders.add_event(store, settings, "1042", "bounce", Content(subject="SECRET-BOUNCE", text="mailbox full"),
                     via=Via(author="system"))
    orders.add_event(store, settings, "1042", "system", Content(subject="SECRET-SYSTEM"), via=Via(author="system"))
    orders.add_event(store, settings, "1042", "customer_reply", Content(text="Vielen Dank, freue mich!"),
                     via=Via(author="customer"))
    orders.mark_shipped(store, settings, "1042", tracking="00340434161094042557", carrier="DHL")
    return orders.find_order("1042")


def signed_in(client: Client, store, settings, email: str) -> Client:
    """Sign in the way a person does: form, mail, link, button."""
    form = client.get("/account")
    reply = client.post("/account", {"email": email, "csrf": csrf_of(form)})
    assert reply.status == 200
    url = OutboxMessage.select().where((OutboxMessage.kind == "signin_link") & (OutboxMessage.recipient == email)) \
        .order_by(OutboxMessage.id.desc()).first().data["url"]
    confirm = client.get(urlsplit(url).path)
    done = client.post("/signin", {"token": url.rsplit("/", 1)[1], "csrf": csrf_of(confirm)})
    assert done.status == 303, done.text
    return client


# ---- the customer's order page ------------------------------------------------------------------

def test_the_order_page_shows_status_items_total_tracking_and_the_public_log(client, full_order):
    reply = client.get(page_path())
    assert reply.status == 200 and reply.header("Content-Type").startswith("text/html")
    page = reply.text
    assert '<html lang="de">' in page and "<h1>Bestellung 1042</h1>" in page
    assert "Teekanne" in page and "24,90\u00a0€" in page
    assert re.search(r'class="step done"[^>]*>\s*<span class="dot"[^>]*></span>\s*<span class="label">Eingegangen', page)
    assert re.search(r'class="step current" aria-current="step">\s*<span[^>]*></span>\s*<span class="label">Versandt', page)
    assert "00340434161094042557" in page
    assert "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode=00340434161094042557" in page
    assert "Ihre Kanne ist fertig" in page and "<strong>Ihre Kanne</strong>" in page
    assert "Vielen Dank, freue mich!" in page and "Ihre Nachricht" in page
    image = full_order.status_token
    assert re.search(rf'<img src="{PREFIX}/o/{image}/files/\d+" alt="Kanne">', page)
    assert "Rechnung März.pdf" in page
    assert "cid:" not in page


def test_internal_notes_bounces_and_system_events_never_reach_the_customer(client, full_order):
    page = client.get(page_path()).text
    for secret in ("SECRET-NOTE", "SECRET-BOUNCE", "SECRET-SYSTEM", "mailbox full", "intern.pdf",
                   "Interner Vermerk", "unzustellbar"):
        assert secret not in page
    note_file = Event.get(Event.kind == "note").attachments[0]
    assert client.get(f"{page_path()}/files/{note_file.id}").status == 404


def test_the_page_speaks_the_orders_language(store, settings, client):
    orders.create_order(store, settings, sample_order("2001", locale="en"))
    orders.create_order(store, settings, sample_order("2002", locale="fr"))
    english, french = client.get(page_path("2001")).text, client.get(page_path("2002")).text
    assert '<html lang="en">' in english and "Order 2001" in english and "€24.90" in english
    assert '<html lang="fr">' in french and "Commande 2002" in french and "24,90\u00a0€" in french
    assert "Not paid" not in english and "Payment: " in english    # how to pay, while unpaid
    assert "Überweisung" in english or "bank" in english.lower()


def test_cancelled_and_refunded_orders_show_where_the_line_stopped(store, settings, client):
    orders.create_order(store, settings, sample_order("3001", locale="en"))
    orders.mark_cancelled(store, settings, "3001", reason="out of stock")
    orders.create_order(store, settings, sample_order("3002", locale="en"))
    orders.mark_paid(store, settings, "3002")
    orders.mark_refunded(store, settings, "3002")
    cancelled, refunded = client.get(page_path("3001")).text, client.get(page_path("3002")).text
    assert re.search(r'class="step stopped" aria-current="step">.*?Cancelled', cancelled, re.S)
    assert "Shipped" not in cancelled and "out of stock" in cancelled
    assert re.search(r'class="step stopped" aria-current="step">.*?Refunded', refunded, re.S)
    assert "Refunded: €24.90" in refunded


def test_an_undone_status_change_disappears_for_the_customer_but_not_for_the_owner(store, settings, client):
    orders.create_order(store, settings, sample_order("4001", locale="en"))
    before = orders.snapshot("4001")
    change = orders.mark_paid(store, settings, "4001")
    orders.undo_event(store, settings, "4001", change.event_id, before)
    page = client.get(page_path("4001")).text
    assert "Payment received" not in page and 'class="step todo"' in page


def test_unknown_malformed_expired_and_revoked_links_all_get_the_same_plain_404(store, settings):
    settings = with_web(settings, status_link_days=30)
    client = Client(make_app(settings, store))
    orders.create_order(store, settings, sample_order("5001"))
    orders.create_order(store, settings, sample_order("5002"))
    Order.update(updated_at=NOW - dt.timedelta(days=31), created_at=NOW - dt.timedelta(days=40)) \
        .where(Order.number == "5001").execute()
    expired = token_of("5001")
    revoked = token_of("5002")
    links.relink(store, settings, "5002", mail=False)
    misses = [expired, revoked, "A" * 32, "short", "x" * 300, "..%2F..%2Fetc", "%C3%A4%C3%B6", revoked + "x"]
    replies = [client.get(f"/o/{token}") for token in misses]
    assert {r.status for r in replies} == {404}
    assert len({r.body for r in replies}) == 1
    assert len({tuple(sorted((k, v) for k, v in r.headers if k.lower() != "date")) for r in replies}) == 1
    assert "Meinen Link schicken" in replies[0].text and "5001" not in replies[0].text
    assert client.get(page_path("5002")).status == 200


def test_every_miss_costs_one_lookup_of_the_same_shape(store, settings, client, monkeypatch):
    orders.create_order(store, settings, sample_order("5101"))
    seen = []
    original = store.db.execute_sql
    monkeypatch.setattr(store.db, "execute_sql", lambda sql, params=None, *a, **k: (seen.append(sql), original(sql, params, *a, **k))[1])
    shapes = []
    for token in ("B" * 32, "bad!", "x" * 300):
        seen.clear()
        assert client.get(f"/o/{token}").status == 404
        shapes.append(tuple(seen))
    assert len(set(shapes)) == 1 and len(shapes[0]) == 1


def test_repeated_misses_from_one_address_are_refused_with_429(store, settings, full_order):
    client = Client(make_app(with_web(settings, misses_per_hour=3), store))
    for n in range(3):
        assert client.get(f"/o/{'Z' * 31}{n}").status == 404
    blocked = client.get(f"/o/{'Z' * 32}")
    assert blocked.status == 429 and int(blocked.header("Retry-After")) > 0
    assert client.get(page_path()).status == 429          # no oracle: a good link is refused too
    other = Client(client.app, address="198.51.100.7")
    assert other.get(page_path()).status == 200


def test_a_repeat_visit_gets_304_until_the_order_changes(store, settings, client, full_order):
    first = client.get(page_path())
    tag = first.header("ETag")
    assert tag and "private" in first.header("Cache-Control")
    again = client.get(page_path(), If_None_Match=tag)
    assert again.status == 304 and again.body == b""
    orders.add_message(store, settings, "1042", Content(text="Noch etwas"))
    changed = client.get(page_path(), If_None_Match=tag)
    assert changed.status == 200 and changed.header("ETag") != tag and "Noch etwas" in changed.text


def test_files_come_with_their_type_a_disposition_and_nosniff(client, full_order):
    events = {e.kind: e for e in Event.select().where(Event.order == full_order)}
    image, pdf = sorted(events["message"].attachments, key=lambda a: a.id)
    shown = client.get(f"{page_path()}/files/{image.id}")
    assert shown.status == 200 and shown.header("Content-Type") == "image/png" and shown.body == png()
    assert shown.header("Content-Disposition").startswith('inline; filename="kanne.png"')
    assert shown.header("X-Content-Type-Options") == "nosniff"
    download = client.get(f"{page_path()}/files/{pdf.id}")
    assert download.header("Content-Type") == "application/pdf"
    assert download.header("Content-Disposition") == \
        "attachment; filename=\"Rechnung M_rz.pdf\"; filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf"
    assert client.get(f"{page_path()}/files/{pdf.id}", If_None_Match=download.header("ETag")).status == 304
    assert client.get(f"{page_path()}/files/999999").status == 404


def test_a_file_of_another_order_is_not_found_through_this_link(store, settings, client, full_order):
    orders.create_order(store, settings, sample_order("6001"))
    attachment = Event.get(Event.kind == "message").attachments[0]
    assert client.get(f"{page_path('6001')}/files/{attachment.id}").status == 404


def test_html_files_are_downloaded_never_shown(store, settings, client):
    orders.create_order(store, settings, sample_order("6101"))
    orders.add_message(store, settings, "6101", Content(text="see file", files=(
        NewFile("evil.html", "text/html", b"<script>alert(1)</script>"),
        NewFile("evil.svg", "image/svg+xml", b"<svg onload=alert(1)></svg>"),
        NewFile("odd", "text/html; x=<script>", b"x"))))
    for attachment in Event.get((Event.kind == "message")).attachments:
        reply = client.get(f"{page_path('6101')}/files/{attachment.id}")
        assert reply.header("Content-Disposition").startswith("attachment;")
        assert "<" not in reply.header("Content-Type")
        assert "default-src 'none'" in reply.header("Content-Security-Policy")


def test_every_page_carries_the_security_headers_and_no_inline_script_or_style(store, settings, client, full_order):
    owner = signed_in(Client(client.app), store, settings, OWNER)
    replies = [client.get(page_path()), client.get("/o/nothing-here-at-all"), client.get("/account"),
               client.get("/signin/abc"), owner.get("/admin"), owner.get("/admin/orders/1042"),
               owner.get("/admin?q=paid%20and"), client.get("/static/site.css")]
    for reply in replies:
        for name, value in SECURITY_HEADERS.items():
            assert reply.header(name) == value, (name, reply.status)
        if reply.header("Content-Type").startswith("text/html"):
            assert ActiveContent(reply.text).found == []
            assert re.search(r'<html lang="(de|en|fr)">', reply.text) and "<h1" in reply.text


def test_static_files_are_served_with_their_type(client):
    css = client.get("/static/site.css")
    assert css.status == 200 and css.header("Content-Type").startswith("text/css")
    assert "max-age" in css.header("Cache-Control")
    assert client.get("/favicon.ico").header("Content-Type").startswith("image/svg+xml")
    assert client.get("/static/..%2Fpage.py").status == 404
    assert client.get("/static/nothing.css").status == 404


# ---- signing in by mail ------------------------------------------------------------------

def test_a_customer_signs_in_by_mail_and_sees_all_her_orders(store, settings, client):
    orders.create_order(store, settings, sample_order("7001"))
    orders.create_order(store, settings, sample_order("7002", locale="en"))
    orders.create_order(store, settings, sample_order("7003", customer={"name": "Other", "email": "other@example.org"}))
    form = client.get("/account", Accept_Language="en-GB,en;q=0.8")
    assert form.status == 200 and '<label for="email">' in form.text and 'type="email"' in form.text
    sent = client.post("/account", {"email": " Erika@Example.org ", "csrf": csrf_of(form)})
    assert sent.status == 200 and "Anmelde-Link" in sent.text
    row = OutboxMessage.get(OutboxMessage.kind == "signin_link")
    assert row.recipient == "erika@example.org" and row.data["minutes"] == 15
    token = row.data["url"].rsplit("/", 1)[1]
    assert row.data["url"] == f"https://shop.example/status/signin/{token}" and len(token) >= 43
    assert SigninToken.get().token_hash == token_hash(token)          # only the hash is kept
    assert not SigninToken.select().where(SigninToken.token_hash == token).exists()
    confirm = client.get(f"/signin/{token}")
    assert confirm.status == 200 and 'action="/status/signin"' in confirm.text
    done = client.post("/signin", {"token": token, "csrf": csrf_of(confirm)})
    assert done.status == 303 and done.header("Location").endswith("/status/account")
    cookie = next(c for c in done.cookies() if c.startswith("__Secure-om_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/status/"):
        assert flag.lower() in cookie.lower()
    mine = client.get("/account")
    assert "7001" in mine.text and "7002" in mine.text and "7003" not in mine.text
    assert page_path("7001") in mine.text
    again = Client(client.app).post("/signin", {"token": token, "csrf": csrf_of(confirm)})
    assert again.status == 400


def test_the_answer_is_the_same_for_a_known_and_an_unknown_address(store, settings, client):
    orders.create_order(store, settings, sample_order())
    csrf = csrf_of(client.get("/account"))
    known = client.post("/account", {"email": "erika@example.org", "csrf": csrf})
    unknown = client.post("/account", {"email": "nobody@example.org", "csrf": csrf})
    assert known.status == unknown.status == 200
    assert known.text.replace("erika@example.org", "X") == unknown.text.replace("nobody@example.org", "X")
    assert [m.recipient for m in OutboxMessage.select().where(OutboxMessage.kind == "signin_link")] == ["erika@example.org"]
    assert SigninToken.select().count() == 2          # the same work for both


def test_a_sign_in_link_works_once_and_for_15_minutes(store, settings, client, monkeypatch):
    orders.create_order(store, settings, sample_order())
    client.post("/account", {"email": "erika@example.org", "csrf": csrf_of(client.get("/account"))})
    token = OutboxMessage.get(OutboxMessage.kind == "signin_link").data["url"].rsplit("/", 1)[1]
    later = utcnow() + dt.timedelta(minutes=15, seconds=1)
    monkeypatch.setattr(pages, "utcnow", lambda: later)
    confirm = client.get(f"/signin/{token}")
    late = client.post("/signin", {"token": token, "csrf": csrf_of(confirm)})
    assert late.status == 400 and "abgelaufen" in late.text and not late.cookies()
    assert WebSession.select().count() == 0


def test_every_form_needs_its_csrf_token(store, settings, client, full_order):
    client.get("/account")
    assert client.post("/account", {"email": "erika@example.org"}).status == 400
    assert client.post("/account", {"email": "erika@example.org", "csrf": "forged"}).status == 400
    assert not OutboxMessage.select().where(OutboxMessage.kind == "signin_link").exists()
    signed_in(client, store, settings, "erika@example.org")
    assert client.post("/signin", {"token": "x" * 43}).status == 400
    assert client.post("/account/link", {"number": "1042"}).status == 400
    assert client.post("/signout", {}).status == 400 and "Abmelden" in client.get("/account").text
    forms = [client.get("/account"), signed_in(Client(client.app), store, settings, OWNER).get("/admin")]
    for reply in forms:
        for form in re.findall(r'<form[^>]*method="post".*?</form>', reply.text, re.S):
            assert 'name="csrf"' in form


def test_signing_out_ends_the_session(store, settings, client):
    orders.create_order(store, settings, sample_order())
    signed_in(client, store, settings, "erika@example.org")
    page = client.get("/account")
    out = client.post("/signout", {"csrf": csrf_of(page)})
    assert out.status == 303 and WebSession.select().count() == 0
    assert 'name="email"' in client.get("/account").text


def test_sign_in_mails_are_limited_per_address_and_requests_per_client(store, settings):
    orders.create_order(store, settings, sample_order())
    client = Client(make_app(with_web(settings, signins_per_hour=2, signins_per_client_per_hour=4), store))
    csrf = csrf_of(client.get("/account"))
    answers = [client.post("/account", {"email": "erika@example.org", "csrf": csrf}) for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert len({a.body for a in answers}) == 1
    assert OutboxMessage.select().where(OutboxMessage.kind == "signin_link").count() == 2
    assert client.post("/account", {"email": "erika@example.org", "csrf": csrf}).status == 429


def test_a_malformed_address_is_asked_again(client):
    csrf = csrf_of(client.get("/account"))
    reply = client.post("/account", {"email": "not an address", "csrf": csrf})
    assert reply.status == 400 and 'aria-invalid="true"' in reply.text and 'value="not an address"' in reply.text


def test_an_expired_status_link_is_reissued_by_mail_after_signing_in(store, settings):
    settings = with_web(settings, status_link_days=30)
    client = Client(make_app(settings, store))
    orders.create_order(store, settings, sample_order())
    Order.update(updated_at=NOW - dt.timedelta(days=31), created_at=NOW - dt.timedelta(days=31)).execute()
    old = token_of()
    assert client.get(f"/o/{old}").status == 404
    signed_in(client, store, settings, "erika@example.org")
    account = client.get("/account")
    assert "Der Link zu dieser Bestellung ist abgelaufen." in account.text
    moved = client.post("/account/link", {"number": "1042", "csrf": csrf_of(account)})
    new = token_of()
    assert moved.status == 303 and moved.header("Location").endswith(f"/status/o/{new}") and new != old
    assert client.get(f"/o/{new}").status == 200 and client.get(f"/o/{old}").status == 404
    mail = OutboxMessage.get(OutboxMessage.kind == "status_link")
    assert mail.recipient == "erika@example.org" and mail.data["reason"] == "expired"
    assert client.post("/account/link", {"number": "9999", "csrf": csrf_of(account)}).status == 404


def test_ordermail_order_relink_revokes_the_link_and_mails_the_new_one(store, settings, capsys):
    orders.create_order(store, settings, sample_order())
    old = token_of()
    parser = argparse.ArgumentParser()
    common = argparse.ArgumentParser(add_help=False)
    cli_web.add_order_parsers(parser.add_subparsers(dest="order_command"), common, argparse.ArgumentParser)
    args = parser.parse_args(["relink", "1042", "--format", "json"])
    assert cli_web.HANDLERS[("order", "relink")](args, settings, store) == 0
    printed = json.loads(capsys.readouterr().out)
    new = token_of()
    assert new != old and printed == {"number": "1042", "status_url": settings.status_url(new), "mailed": True}
    assert OutboxMessage.get(OutboxMessage.kind == "status_link").recipient == "erika@example.org"
    log = Event.select().where(Event.kind == "system").order_by(Event.id.desc()).first()
    assert "Status link re-issued" in log.subject and old not in json.dumps(log.data) + log.subject
    quiet = parser.parse_args(["relink", "1042", "--quiet"])
    cli_web.HANDLERS[("order", "relink")](quiet, settings, store)
    assert OutboxMessage.select().where(OutboxMessage.kind == "status_link").count() == 1
    said = capsys.readouterr().out                              # the German shop's owner reads German
    assert said.startswith("1042: der alte Statuslink gilt nicht mehr; neuer Link nicht verschickt (--quiet):\n")
    assert said.strip().endswith(settings.status_url(token_of()))


def test_the_relink_command_runs_from_the_real_command_line(store, settings, ordermail):
    orders.create_order(store, settings, sample_order())
    old = token_of()
    result = ordermail("order", "relink", "1042", "--quiet", "--format", "json")
    if result.returncode == 2 and "invalid choice" in result.stderr:
        pytest.skip("daemon/cli/main.py does not hook in daemon.cli.web yet (see its add_order_parsers)")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mailed"] is False and token_of() != old


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_the_sign_in_mail_speaks_the_language_of_the_page_it_was_asked_on(store, settings, client, lang):
    if "signin_link" not in notify.KINDS:
        pytest.skip("daemon/outbound/notify.py does not know the web's mail kinds yet (WEB_KINDS)")
    orders.create_order(store, settings, sample_order())
    form = client.get("/account", Accept_Language=lang)
    client.post("/account", {"email": "erika@example.org", "csrf": csrf_of(form), "lang": lang})
    mail = notify.compose(settings, OutboxMessage.get(OutboxMessage.kind == "signin_link"), utcnow())
    assert mail["Subject"] == {"en": "Your sign-in link for Teeladen",
                               "fr": "Votre lien de connexion pour Teeladen"}[lang]


@pytest.mark.parametrize("lang", ["de", "en", "fr"])
def test_the_sign_in_and_new_link_mails_render_in_every_language(store, settings, lang):
    orders.create_order(store, settings, sample_order(locale=lang))
    links.relink(store, settings, "1042", author="customer")
    orders.queue_mail(settings, "signin_link", "erika@example.org",
                      data={"url": "https://shop.example/status/signin/TOKEN", "minutes": 15, "lang": lang, "owner": False})
    for row in OutboxMessage.select().where(OutboxMessage.kind.in_(["status_link", "signin_link"])):
        mail = notify.compose(settings, row, utcnow())
        text = mail.get_body(("plain",)).get_content()
        html = mail.get_body(("html",)).get_content()
        wanted = settings.status_url(token_of()) if row.kind == "status_link" else "/signin/TOKEN"
        assert wanted in text and wanted in html and mail["Subject"]


# ---- the owner's dashboard -------------------------------------------------------------------

def test_the_dashboard_needs_an_owner_signed_in_by_mail(store, settings, client, full_order):
    anonymous = client.get("/admin?q=paid")
    assert anonymous.status == 200 and 'name="next" value="/admin?q=paid"' in anonymous.text
    assert client.get("/admin/orders/1042").status == 200 and "SECRET-NOTE" not in client.get("/admin/orders/1042").text
    assert "SECRET" not in client.get("/admin/orders.csv").text
    customer = signed_in(Client(client.app), store, settings, "erika@example.org")
    for path in ("/admin", "/admin/orders/1042", "/admin/orders.csv", "/admin/files/1"):
        assert customer.get(path).status == 403
    owner = Client(client.app)
    form = owner.get("/admin?q=paid")
    owner.post("/account", {"email": OWNER, "csrf": csrf_of(form), "next": "/admin?q=paid"})
    url = OutboxMessage.get(OutboxMessage.kind == "signin_link", OutboxMessage.recipient == OWNER).data["url"]
    done = owner.post("/signin", {"token": url.rsplit("/", 1)[1], "csrf": csrf_of(owner.get(urlsplit(url).path))})
    assert done.header("Location").endswith("/status/admin?q=paid")


def test_coming_from_another_site_reloads_once_to_bring_the_strict_cookie(client):
    reply = client.get("/admin?q=paid", Sec_Fetch_Site="cross-site")
    assert '<meta http-equiv="refresh" content="0">' in reply.text
    assert '<meta http-equiv="refresh"' not in client.get("/admin?q=paid", Sec_Fetch_Site="same-origin").text


def test_the_dashboard_lists_by_filter_with_paging_sorting_and_mailto_commands(store, settings, client):
    for n in range(55):
        orders.create_order(store, settings, sample_order(str(8000 + n)), now=NOW + dt.timedelta(minutes=n))
    orders.mark_paid(store, settings, "8054")
    owner = signed_in(client, store, settings, OWNER)
    first = owner.get("/admin")
    assert first.status == 200 and '<html lang="de">' in first.text
    assert "55 Bestellungen" in first.text and "Seite 1 von 2" in first.text
    assert first.text.index(">8054<") < first.text.index(">8053<")
    assert 'href="/status/admin?page=2"' in first.text
    second = owner.get("/admin?page=2")
    assert ">8000<" in second.text and ">8054<" not in second.text
    oldest = owner.get("/admin?sort=oldest")
    assert oldest.text.index(">8000<") < oldest.text.index(">8001<")
    paid = owner.get("/admin?q=paid")
    assert "1 Bestellung" in paid.text and ">8054<" in paid.text and ">8053<" not in paid.text
    command = "mailto:orders+cmd-s3cret-command-key-0123@shop.example?subject=paid%208053"
    assert f'href="{command}"' in owner.get("/admin?q=number:8053").text
    for subject in re.findall(r"\?subject=([^\"]+)\"", first.text)[:12]:
        line = urllib.request.unquote(subject)
        assert commands.parse_line(line).numbers, line


def test_a_filter_that_does_not_parse_is_shown_with_its_column_and_400(store, settings, client):
    owner = signed_in(client, store, settings, OWNER)
    reply = owner.get("/admin?q=" + urllib.request.quote("paid and (shipped"))
    assert reply.status == 400 and "column 10" in reply.text and 'aria-invalid="true"' in reply.text
    assert owner.get("/admin/orders.csv?q=paid%20shipped").status == 400


def test_the_csv_export_holds_the_current_filter_and_defuses_formulas(store, settings, client):
    orders.create_order(store, settings, sample_order("9001", customer={"name": "=HYPERLINK(\"x\")", "email": "a@example.org"}))
    orders.create_order(store, settings, sample_order("9002"))
    orders.mark_paid(store, settings, "9001")
    owner = signed_in(client, store, settings, OWNER)
    reply = owner.get("/admin/orders.csv?q=paid")
    assert reply.header("Content-Type").startswith("text/csv") and "attachment" in reply.header("Content-Disposition")
    rows = list(csv.reader(io.StringIO(reply.body.decode("utf-8-sig"))))
    assert rows[0][:3] == ["number", "created_at", "customer_name"] and len(rows) == 2
    assert rows[1][0] == "9001" and rows[1][2] == "'=HYPERLINK(\"x\")" and rows[1][7] == "paid"
    assert rows[1][-1] == settings.status_url(token_of("9001"))


def test_the_owner_sees_the_whole_log_with_internal_entries_marked(store, settings, client, full_order):
    owner = signed_in(client, store, settings, OWNER)
    page = owner.get("/admin/orders/1042").text
    for text in ("SECRET-NOTE", "SECRET-BOUNCE", "SECRET-SYSTEM", "Vielen Dank, freue mich!", "intern.pdf"):
        assert text in page
    assert re.search(r'class="entry note internal">\s*<p class="entry-head">\s*<span class="badge internal">intern</span>', page)
    assert settings.status_url(full_order.status_token) in page
    note_file = Event.get(Event.kind == "note").attachments[0]
    assert owner.get(f"/admin/files/{note_file.id}").body == b"%PDF internal"
    assert owner.get("/admin/orders/0000").status == 404


# ---- script in every field a person types ------------------------------------------------------

XSS = '<script>alert(1)</script><img src=x onerror=alert(2)>"\'><a href="javascript:alert(3)">j</a>'


def test_script_typed_anywhere_never_runs(store, settings, client):
    orders.create_order(store, settings, sample_order("7777", customer={"name": XSS[:190], "email": "x@example.org"},
                                                      items=[{"sku": "X", "name": XSS, "quantity": 1, "unit_price": "1.00"}],
                                                      total="1.00", locale="en"))
    orders.add_message(store, settings, "7777", Content(subject=XSS, html=XSS + '<p onclick="alert(4)">hi</p>',
                                                        files=(NewFile(XSS[:100] + ".png", "image/png", png(), content_id="<a>"),)))
    orders.add_message(store, settings, "7777", Content(text=XSS))
    orders.add_event(store, settings, "7777", "customer_reply", Content(subject=XSS, text=XSS, html=XSS),
                     via=Via(author="customer"))
    orders.mark_shipped(store, settings, "7777", tracking=XSS[:100], carrier=XSS[:60])
    Event.update(body_html=XSS + '<img src="cid:a" alt="<script>alert(5)</script>">').where(Event.kind == "message").execute()
    owner = signed_in(Client(client.app), store, settings, OWNER)
    pages_seen = [client.get(page_path("7777")), owner.get("/admin"), owner.get("/admin/orders/7777"),
                  owner.get("/admin?q=" + urllib.request.quote('customer:"' + XSS.replace('"', '\\"') + '"')),
                  owner.get("/admin?q=" + urllib.request.quote(XSS)),
                  client.post("/account", {"email": XSS, "csrf": csrf_of(client.get("/account"))})]
    for reply in pages_seen:
        assert reply.status in (200, 400)
        assert ActiveContent(reply.text).found == [], reply.status
        assert "&lt;script&gt;" in reply.text


# ---- the words ---------------------------------------------------------------------------------

def test_the_pages_speak_the_browsers_language():
    assert i18n.negotiate("fr-CH, fr;q=0.9, en;q=0.8", "de") == "fr"
    assert i18n.negotiate("es, en;q=0.5", "de") == "en" and i18n.negotiate("", "de") == "de"


# ---- a real server ---------------------------------------------------------------------------------

def test_the_in_process_server_serves_the_pages_over_http(store, settings, full_order):
    from statuspage.server import WebServer
    port = free_port()
    settings = dataclasses.replace(with_web(settings, listen=f"127.0.0.1:{port}"),
                                   shop=dataclasses.replace(settings.shop, base_url=f"http://127.0.0.1:{port}"))
    server = WebServer(settings, store)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/o/{full_order.status_token}", timeout=10) as answer:
            assert answer.status == 200 and "Bestellung 1042" in answer.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/o/{'Q' * 32}", timeout=10)
        assert missing.value.code == 404
    finally:
        server.stop()
