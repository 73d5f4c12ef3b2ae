"""The outbox against real SMTP servers on loopback: retries, give-up, no lost or doubled mail.

Each sink is an aiosmtpd server on a free port that answers from a script
(`451` a few times, then `250`; `550`; not listening at all for a while). Time
is driven with explicit `now` values, never with sleeps: a row queued at NOW
is retried at NOW+60 s, NOW+180 s, … and given up on after
`give_up_after_hours`. Every mail the sinks take is parsed strictly.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from conftest import ROOT, sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.outbound import outbox
from daemon.mail.addresses import check_recipient
from daemon.errors import Refused
from daemon.orders.service import Content, Via
from daemon.store.models import Event, OutboxMessage
from daemonproc import free_port

NOW = dt.datetime(2026, 11, 27, 10, 0)


def later(**delta) -> dt.datetime:
    return NOW + dt.timedelta(**delta)


# ---- a scripted SMTP sink --------------------------------------------------------------

class Sink:
    """aiosmtpd on 127.0.0.1: answers RCPT and DATA from scripts (then 250), keeps what it took."""

    def __init__(self, port: int | None = None, *, rcpt=(), data=(), **smtp_options):
        self.port = port or free_port()
        self.rcpt_script, self.data_script = list(rcpt), list(data)
        self.received: list[tuple[str, list[str], bytes, tuple]] = []
        self.tls_sessions = 0
        self._lock = threading.Lock()
        self._options = smtp_options
        self.controller = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._lock:
            if self.rcpt_script:
                return self.rcpt_script.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            if self.data_script:
                return self.data_script.pop(0)
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.peer))
            self.tls_sessions += server.transport.get_extra_info("ssl_object") is not None
        return "250 2.0.0 Message accepted"

    def start(self) -> "Sink":
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **self._options)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def mails(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(content, policy=email.policy.strict) for _, _, content, _ in self.received]

    def message_ids(self) -> list[str]:
        return [m["Message-ID"] for m in self.mails()]


@pytest.fixture
def sink_factory():
    started = []

    def make(*args, **kwargs) -> Sink:
        sink = Sink(*args, **kwargs).start()
        started.append(sink)
        return sink
    yield make
    for sink in started:
        sink.stop()


def over_smtp(settings, port: int, **options):
    return dataclasses.replace(settings, outbound=dataclasses.replace(
        settings.outbound, mode="smtp", smtp_host="127.0.0.1", smtp_port=port, **options))


def with_outbound(settings, **options):
    return dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, **options))


def order_with_mail(store, settings, number="1042", **changes):
    """An order whose confirmation (one outbox row) was queued at NOW."""
    orders.create_order(store, settings, sample_order(number, **changes), now=NOW)
    return OutboxMessage.select().order_by(OutboxMessage.id.desc()).first()


def fresh(row: OutboxMessage) -> OutboxMessage:
    return OutboxMessage.get_by_id(row.id)


def system_events(number="1042") -> list[Event]:
    return [e for e in orders.order_events(orders.find_order(number)) if e.kind == "system"]


def alerts() -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == "owner_alert").order_by(OutboxMessage.id))


# ---- delivery --------------------------------------------------------------------------

def test_a_mail_goes_to_the_smarthost_with_the_orders_bounce_address_as_envelope_sender(store, settings, sink_factory):
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 1
    (mail_from, rcpt_tos, _, _), = sink.received
    assert rcpt_tos == ["erika@example.org"]
    bounce = check_recipient(mail_from, settings, NOW.date())
    assert (bounce.order_id, bounce.purpose) == (orders.find_order("1042").id, tokens.BOUNCE)
    parsed, = sink.mails()
    assert parsed["Message-ID"] == row.message_id and parsed.get_body(("plain",)) is not None
    row = fresh(row)
    assert (row.state, row.attempts, row.sent_at, row.last_error) == ("sent", 1, NOW, "")
    assert outbox.send_due(store, settings, later(hours=1)) == 0 and len(sink.received) == 1


def test_maildir_mode_delivers_through_tmp_into_new(store, settings):
    row = order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 1
    root = Path(settings.outbound.maildir)
    assert list((root / "tmp").iterdir()) == []
    file, = (root / "new").iterdir()
    parsed = email.message_from_bytes(file.read_bytes(), policy=email.policy.strict)
    assert parsed["Message-ID"] == row.message_id and parsed["Delivered-To"] == "erika@example.org"
    assert b"\r\n" not in file.read_bytes()
    assert check_recipient(parsed["Return-Path"].strip("<>"), settings, NOW.date()).purpose == tokens.BOUNCE


# ---- temporary failures: retries with backoff ----------------------------------------------

def test_451_is_retried_with_doubling_backoff_until_the_server_takes_it(store, settings, sink_factory):
    sink = sink_factory(data=["451 4.3.0 Try again later"] * 3)
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    schedule = []
    for moment in (NOW, later(seconds=59), later(seconds=60), later(seconds=180), later(seconds=419),
                   later(seconds=420)):
        sent = outbox.send_due(store, settings, moment)
        row = fresh(row)
        schedule.append((sent, row.state, row.attempts, row.next_attempt_at - NOW if row.state == "pending" else None))
    s = dt.timedelta(seconds=1)
    assert schedule == [(0, "pending", 1, 60 * s), (0, "pending", 1, 60 * s), (0, "pending", 2, 180 * s),
                        (0, "pending", 3, 420 * s), (0, "pending", 3, 420 * s), (1, "sent", 4, None)]
    assert len(sink.received) == 1 and sink.message_ids() == [row.message_id]


def test_backoff_doubles_up_to_an_hour():
    from daemon.config import Settings
    settings = Settings()
    assert [outbox.backoff(settings, n) for n in range(1, 10)] == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_server_that_is_down_for_a_while_gets_the_mail_once_it_is_back(store, settings, sink_factory):
    port = free_port()                       # nothing listens here yet
    settings = over_smtp(settings, port)
    row = order_with_mail(store, settings)
    order_with_mail(store, settings, "1043")
    assert outbox.send_due(store, settings, NOW) == 0
    row = fresh(row)
    assert row.state == "pending" and row.attempts == 1 and "cannot reach 127.0.0.1" in row.last_error
    sink = sink_factory(port)                # the server comes back
    assert outbox.send_due(store, settings, later(minutes=1)) == 2
    assert sorted(sink.message_ids()) == sorted(r.message_id for r in OutboxMessage.select())
    assert fresh(row).state == "sent"


def test_after_give_up_hours_the_row_fails_the_order_logs_it_and_the_owner_is_alerted(store, settings):
    settings = over_smtp(settings, free_port(), give_up_after_hours=2)
    row = order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 0
    assert outbox.send_due(store, settings, later(hours=1)) == 0
    assert fresh(row).state == "pending" and not alerts()
    assert outbox.send_due(store, settings, later(hours=2)) == 0
    row = fresh(row)
    assert row.state == "failed" and row.attempts == 3 and row.last_error.startswith("gave up after 3 attempts")
    event, = system_events()
    assert event.author == "system" and event.visibility == "internal"
    assert event.subject == "Mail not delivered: created to erika@example.org"
    assert event.data["gave_up"] is True and event.data["message_id"] == row.message_id
    alert, = alerts()
    assert alert.recipient == "owner@shop.example" and alert.order_id == row.order_id
    assert alert.data["gave_up"] is True and alert.event_id == event.id


def test_an_alert_that_cannot_be_delivered_raises_no_further_alert(store, settings):
    settings = over_smtp(settings, free_port(), give_up_after_hours=1)
    order_with_mail(store, settings)
    outbox.send_due(store, settings, NOW)
    outbox.send_due(store, settings, later(hours=1))              # the customer mail fails, an alert is queued
    outbox.send_due(store, settings, later(hours=2, minutes=1))   # the alert fails in turn
    assert [a.state for a in alerts()] == ["failed"]
    assert len(system_events()) == 2                              # both logged on the order, nothing more


# ---- permanent failures -----------------------------------------------------------------

def test_550_is_final_logged_on_the_order_and_the_owner_is_alerted(store, settings, sink_factory):
    sink = sink_factory(rcpt=["550 5.1.1 <erika@example.org>: user unknown"])
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 1          # the owner's alert, in the same pass
    row = fresh(row)
    assert row.state == "failed" and row.attempts == 1 and row.last_error.startswith("550 5.1.1")
    event, = system_events()
    assert "user unknown" in event.body_text and event.data["gave_up"] is False
    alert, = alerts()
    assert alert.data["error"].startswith("550") and alert.state == "sent"
    told, = sink.mails()
    assert told["To"] == "owner@shop.example" and "erika@example.org" in told["Subject"]
    # the failed mail is not retried
    assert outbox.send_due(store, settings, later(hours=5)) == 0 and fresh(row).state == "failed"


def test_a_554_after_data_is_final_too(store, settings, sink_factory):
    sink = sink_factory(data=["554 5.6.0 Message rejected as spam"])
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    outbox.send_due(store, settings, NOW)
    assert fresh(row).state == "failed" and "554 5.6.0" in fresh(row).last_error


def test_a_failed_mail_can_be_sent_again_by_hand_with_a_fresh_deadline(store, settings, sink_factory):
    sink = sink_factory(rcpt=["550 5.1.1 mailbox full"])
    settings = over_smtp(settings, sink.port, give_up_after_hours=1)
    row = order_with_mail(store, settings)
    outbox.send_due(store, settings, NOW)
    assert fresh(row).state == "failed"
    outbox.retry(store, row.id, later(days=3))
    assert outbox.deadline(settings, fresh(row)) == later(days=3, hours=1)
    assert outbox.send_due(store, settings, later(days=3)) >= 1
    assert fresh(row).state == "sent" and row.message_id in sink.message_ids()
    with pytest.raises(Refused, match="was sent on"):
        outbox.retry(store, row.id)


# ---- rate limit, claims, crashes -------------------------------------------------------------

def test_more_mails_to_one_address_than_the_hourly_limit_wait_for_the_next_hour(store, settings):
    settings = with_outbound(settings, per_recipient_per_hour=3)
    orders.create_order(store, settings, sample_order(), now=NOW)
    for n in range(4):
        orders.add_message(store, settings, "1042", Content(text=f"Nachricht {n}"), via=Via(now=NOW))
    assert outbox.send_due(store, settings, NOW) == 3
    waiting = list(OutboxMessage.select().where(OutboxMessage.state == "pending"))
    assert len(waiting) == 2
    assert all(r.next_attempt_at == later(hours=1) and r.attempts == 0 and "rate limit" in r.last_error
               for r in waiting)
    assert outbox.send_due(store, settings, later(minutes=59)) == 0
    assert outbox.send_due(store, settings, later(hours=1)) == 2


def test_each_address_over_the_limit_waits_for_its_own_hour(store, settings):
    """Two busy addresses, full at different times: each one's waiting mails go when its hour ends."""
    settings = with_outbound(settings, per_recipient_per_hour=2)
    for number, email, start in (("1042", "a@example.org", NOW), ("1043", "b@example.org", later(minutes=10))):
        orders.create_order(store, settings, sample_order(number, customer={"name": "K", "email": email}),
                            now=start)
        orders.add_message(store, settings, number, Content(text="eins"), via=Via(now=start))
        assert outbox.send_due(store, settings, start) == 2
    for number in ("1042", "1043"):
        for n in range(3):
            orders.add_message(store, settings, number, Content(text=f"mehr {n}"), via=Via(now=later(minutes=20)))
    assert outbox.send_due(store, settings, later(minutes=20)) == 0
    waiting = {(r.recipient, r.next_attempt_at) for r in OutboxMessage.select().where(OutboxMessage.state == "pending")}
    assert waiting == {("a@example.org", later(hours=1)), ("b@example.org", later(hours=1, minutes=10))}
    assert outbox.send_due(store, settings, later(hours=1)) == 2
    assert outbox.send_due(store, settings, later(hours=1, minutes=10)) == 2


def test_the_hourly_limit_counts_the_hour_not_every_mail_ever_sent(store, settings, caplog):
    """A year of mail to one address: the limit counts the last hour's, read by its index."""
    settings = with_outbound(settings, per_recipient_per_hour=3)
    orders.create_order(store, settings, sample_order(), now=NOW)
    order_id = orders.Order.get().id
    old = [dict(order=order_id, kind="message", recipient="erika@example.org", data="{}",
                message_id=f"<old-{n}@shop.example>", state="sent", sent_at=NOW - dt.timedelta(days=1 + n),
                next_attempt_at=NOW, created_at=NOW - dt.timedelta(days=1 + n)) for n in range(300)]
    OutboxMessage.insert_many(old).execute()
    for n in range(2):
        orders.add_message(store, settings, "1042", Content(text=f"heute {n}"), via=Via(now=NOW))
    caplog.set_level("DEBUG", logger="peewee")
    assert outbox.send_due(store, settings, NOW) == 3                   # all three of this hour's
    orders.add_message(store, settings, "1042", Content(text="eine zu viel"), via=Via(now=NOW))
    assert outbox.send_due(store, settings, later(minutes=1)) == 0
    if store.backend == "sqlite":
        counts = [r.msg for r in caplog.records if isinstance(r.msg, tuple) and "COUNT" in r.msg[0]]
        plans = [" ".join(str(row[3]) for row in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
                 for sql, params in counts]
        assert plans and all("sent_at>?" in plan or "state=?" in plan for plan in plans), plans


def test_the_owners_addresses_have_their_own_higher_hourly_limit(store, settings):
    """Every customer reply is forwarded to the owner: a busy hour must not hold those back
    as it holds back mail to one customer."""
    settings = with_outbound(settings, per_recipient_per_hour=2, owner_per_hour=5)
    orders.create_order(store, settings, sample_order(), now=NOW, quiet=True)
    order = orders.Order.get()
    with store.atomic():
        for n in range(7):
            orders.queue_mail(settings, "owner_alert", "Owner@Shop.example", order=order,
                              data={"text": f"Hinweis {n}"}, now=NOW)
        for n in range(3):
            orders.queue_mail(settings, "message", "erika@example.org", order=order, now=NOW)
    assert outbox.send_due(store, settings, NOW) == 5 + 2
    waiting = {(r.recipient, r.last_error) for r in OutboxMessage.select().where(OutboxMessage.state == "pending")}
    assert waiting == {("Owner@Shop.example", "rate limit: 5 mails to this address within an hour; waits"),
                       ("erika@example.org", "rate limit: 2 mails to this address within an hour; waits")}


def test_an_alert_goes_out_when_forwarded_replies_used_up_the_owners_hour(store, settings, sink_factory):
    """A burst of customer replies, each forwarded, fills `owner_per_hour`; then a
    notification fails with 550. The owner's alert must not wait behind the forwards,
    which still wait for their hour; and alerts have a budget as big, not none."""
    sink = sink_factory(rcpt=["550 5.1.1 <erika@example.org>: user unknown"])
    settings = with_outbound(over_smtp(settings, sink.port), owner_per_hour=3)
    orders.create_order(store, settings, sample_order(), now=NOW, quiet=True)
    order_id = orders.Order.get().id
    forwards = [dict(order=order_id, kind="reply_forward", recipient="owner@shop.example", data="{}",
                     message_id=f"<forward-{n}@shop.example>", state="sent" if n < 3 else "pending",
                     sent_at=later(minutes=-30) if n < 3 else None, next_attempt_at=NOW,
                     created_at=later(minutes=-30)) for n in range(5)]
    OutboxMessage.insert_many(forwards).execute()
    orders.add_message(store, settings, "1042", Content(text="Ihr Paket"), via=Via(now=NOW))
    assert outbox.send_due(store, settings, NOW) == 1              # not the forwards: the alert
    alert, = alerts()
    assert alert.state == "sent" and alert.data["error"].startswith("550")
    told, = sink.mails()
    assert told["To"] == "owner@shop.example" and told["Message-ID"] == alert.message_id
    waiting = OutboxMessage.select().where((OutboxMessage.kind == "reply_forward") & (OutboxMessage.state == "pending"))
    assert [r.next_attempt_at for r in waiting] == [later(minutes=30)] * 2    # their hour ends then
    with store.atomic():
        for n in range(4):
            orders.queue_mail(settings, "owner_alert", "owner@shop.example", order=orders.Order.get(),
                              data={"text": f"Hinweis {n}"}, now=NOW)
    assert outbox.send_due(store, settings, later(minutes=1)) == 2   # 3 alerts an hour, like everything else


def test_two_workers_at_once_never_send_the_same_row(store, settings, sink_factory):
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    for n in range(40):
        orders.create_order(store, settings, sample_order(str(2000 + n),
                                                          customer={"name": "K", "email": f"k{n}@example.org"}), now=NOW)
    counts = []

    def work():
        try:
            counts.append(outbox.send_due(store, settings, NOW))
        finally:
            store.db.close()
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counts) == 40
    ids = sink.message_ids()
    assert len(ids) == 40 and len(set(ids)) == 40
    assert OutboxMessage.select().where(OutboxMessage.state == "sent").count() == 40


CRASHING_WORKER = textwrap.dedent("""
    import datetime as dt, sys, time
    sys.path.insert(0, {root!r})
    from daemon.outbound import outbox
    from daemon.config import settings_from_dict
    from daemon.store.database import open_store

    settings = settings_from_dict({settings!r})
    store = open_store(settings.database.url)

    def stuck(*args, **kwargs):        # sent, but not yet marked: wait for SIGKILL
        print("DELIVERED", flush=True)
        time.sleep(600)
    outbox.finish = stuck
    outbox.send_due(store, settings, dt.datetime.fromisoformat({now!r}))
""")


def crash_between_send_and_mark(settings) -> None:
    """Run a worker in its own process; SIGKILL it after it delivered and before it marked."""
    raw = {"shop": {"name": "Teeladen", "address": "orders@shop.example", "base_url": "https://shop.example/status"},
           "owner": {"addresses": ["owner@shop.example"], "secret": "s3cret-command-key-0123"},
           "database": {"url": settings.database.url},
           "outbound": {k: getattr(settings.outbound, k) for k in ("mode", "maildir", "smtp_host", "smtp_port")}}
    script = CRASHING_WORKER.format(root=str(ROOT), settings=raw, now=NOW.isoformat())
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "DELIVERED"
        worker.send_signal(signal.SIGKILL)
        assert worker.wait(30) == -signal.SIGKILL
    finally:
        if worker.poll() is None:
            worker.kill()


def test_after_a_sigkill_between_send_and_mark_the_resend_carries_the_same_message_id(store, settings, sink_factory):
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    crash_between_send_and_mark(settings)
    assert sink.message_ids() == [row.message_id]
    assert fresh(row).state == "sending"
    # while the dead worker's lease runs, nobody sends the row again
    assert outbox.send_due(store, settings, later(minutes=10)) == 0 and len(sink.received) == 1
    # after it, the row is sent once more — the same mail, the same Message-ID — and marked
    assert outbox.send_due(store, settings, later(minutes=16)) == 1
    first, second = sink.mails()
    assert first["Message-ID"] == second["Message-ID"] == row.message_id
    assert first["Subject"] == second["Subject"]
    assert fresh(row).state == "sent" and fresh(row).attempts == 1
    assert outbox.send_due(store, settings, later(hours=5)) == 0 and len(sink.received) == 2


def test_in_maildir_mode_a_crash_between_send_and_mark_leaves_exactly_one_file(store, settings):
    row = order_with_mail(store, settings)
    crash_between_send_and_mark(settings)
    assert outbox.send_due(store, settings, later(minutes=16)) == 1
    files = list((Path(settings.outbound.maildir) / "new").iterdir())
    assert len(files) == 1 and row.message_id.encode() in files[0].read_bytes()
    assert fresh(row).state == "sent"


# ---- connections: reuse, bounds, TLS, AUTH -----------------------------------------------

def test_connections_are_bounded_and_reused_across_batches(store, settings, sink_factory):
    sink = sink_factory()
    settings = over_smtp(settings, sink.port, smtp_connections=3)
    for n in range(30):                       # queued on the real clock: the worker reads it
        orders.create_order(store, settings, sample_order(str(3000 + n),
                                                          customer={"name": "K", "email": f"k{n}@example.org"}))
    worker = outbox.OutboxWorker(store, settings, idle_seconds=0.1)
    worker.start()
    try:
        wait_for(lambda: len(sink.received) == 30)
        orders.create_order(store, settings, sample_order("4000"))
        worker.wake()
        wait_for(lambda: len(sink.received) == 31)
    finally:
        worker.stop()
    peers = {peer for *_, peer in sink.received}
    assert len(peers) <= 3                    # at most 3 connections, the last mail on one of them


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_worker_sends_what_is_queued_and_stops_cleanly(store, settings, sink_factory):
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    worker = outbox.OutboxWorker(store, settings, idle_seconds=0.1)
    worker.start()
    orders.create_order(store, settings, sample_order())
    try:
        wait_for(lambda: len(sink.received) == 1)
    finally:
        started = time.monotonic()
        worker.stop()
    assert time.monotonic() - started < 5 and not worker._thread.is_alive()
    assert OutboxMessage.get().state == "sent"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return str(cert), context


def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=(auth_data.login, auth_data.password) == (b"shop", b"s3cret"), handled=False)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_tls_and_auth_to_the_smarthost(store, settings, sink_factory, certificate, mode):
    cert, context = certificate
    # aiosmtpd cannot tell that an implicit-TLS session is encrypted: AUTH is allowed explicitly there
    tls = ({"tls_context": context, "require_starttls": True} if mode == "starttls"
           else {"ssl_context": context, "auth_require_tls": False})
    sink = sink_factory(authenticator=authenticator, auth_required=True, **tls)
    settings = over_smtp(settings, sink.port, smtp_tls=mode, smtp_user="shop", smtp_password="s3cret",
                         smtp_ca_file=cert)
    order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 1
    assert len(sink.received) == 1 and sink.tls_sessions == 1


def test_a_wrong_password_is_retried_not_final(store, settings, sink_factory, certificate):
    cert, context = certificate
    sink = sink_factory(authenticator=authenticator, auth_required=True, tls_context=context, require_starttls=True)
    settings = over_smtp(settings, sink.port, smtp_tls="starttls", smtp_user="shop", smtp_password="wrong",
                         smtp_ca_file=cert)
    row = order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 0
    row = fresh(row)
    assert row.state == "pending" and "535" in row.last_error


def test_an_untrusted_certificate_is_refused_and_retried(store, settings, sink_factory, certificate):
    _, context = certificate
    sink = sink_factory(tls_context=context, require_starttls=True)
    settings = over_smtp(settings, sink.port, smtp_tls="starttls")      # no CA file: the system's CAs
    row = order_with_mail(store, settings)
    assert outbox.send_due(store, settings, NOW) == 0
    assert fresh(row).state == "pending" and not sink.received


def test_an_8bit_forward_is_sent_with_body_8bitmime(store, settings, sink_factory):
    from test_notify import received
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    raw = ("From: x@example.net\nTo: orders@shop.example\nSubject: Grüße\nMessage-ID: <u@example.net>\n"
           "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße aus Köln\n").encode()
    with store.atomic():
        orders.queue_mail(settings, "unmatched_forward", "owner@shop.example", inbound=received(raw), now=NOW)
    assert outbox.send_due(store, settings, NOW) == 1
    forwarded, = sink.mails()
    original = next(p for p in forwarded.walk() if p.get_content_type() == "message/rfc822")
    assert original.get_content().get_content().strip() == "Grüße aus Köln"


# ---- settings --------------------------------------------------------------------------

@pytest.mark.parametrize("section, values, message", [
    ("outbound", {"smtp_tls": "ssl"}, '[outbound] smtp_tls must be "starttls", "tls" or "none", not \'ssl\''),
    ("outbound", {"smtp_host": "mail.example.net", "smtp_user": "shop", "smtp_password": "pw"},
     "[outbound] smtp_user is set but smtp_tls is \"none\": the password would cross the network in clear"),
    ("outbound", {"smtp_password": "pw"}, "[outbound] smtp_password is set but smtp_user is empty"),
    ("outbound", {"per_recipient_per_hour": 0}, "[outbound] per_recipient_per_hour must be at least 1, not 0"),
    ("outbound", {"templates_dir": "/nonexistent/templates"}, "[outbound] templates_dir '/nonexistent/templates' is not a folder"),
    ("outbound", {"smtp_connections": "4"}, "[outbound] smtp_connections must be a whole number"),
    ("owner", {"digest_time": "7 Uhr"}, '[owner] digest_time must be HH:MM like "07:00"'),
])
def test_bad_outbound_settings_stop_start_up_naming_the_key(section, values, message):
    from daemon.config import settings_from_dict
    from daemon.errors import ConfigError
    with pytest.raises(ConfigError) as raised:
        settings_from_dict({section: values})
    assert str(raised.value).startswith(message)
