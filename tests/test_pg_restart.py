"""`ordermail serve` outliving its PostgreSQL: restarts and a crash mid-burst, an outage, cut connections.

The real daemon (tests/daemonproc.py) on a private cluster that the test
takes away for real (tests/private_pg.py; never the shared server), while
customers' replies arrive over SMTP from several clients at once, each
client retrying a "try again later" as a mail server would. Whatever
happens to the database, afterwards:

- every SMTP session got its answer, 250 or 4xx, within SESSION_SECONDS
  (none waited without one), and never a 5xx;
- every reply acknowledged with 250 lands on its order within a minute of
  the database being back, exactly once (a retry of a commit whose answer
  was lost is a duplicate; claims broken off do not wait for their lease);
- replies to orders nobody looked up before are taken at the first try
  within FRESH_SECONDS of the database being back (every door thread's
  connection was replaced);
- the daemon logged no traceback: a store that fails is one line.

OUTAGE_SECONDS (environment ORDERMAIL_TEST_OUTAGE_SECONDS, default 60) is
how long the database stays down in the outage test. A minute, as the
issue saw it, lets what is timed at a minute run inside the outage: the
RCPT check's memory of good addresses runs out (so RCPT itself fails and
must recover, not only DATA), and the scheduler's outbox job fails once.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import smtplib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.config import settings_from_dict
from daemon.store.models import Event, InboundMessage, utcnow
from daemon.store.database import open_store
from daemonproc import Daemon, wait_until
from mailbuilder import mail
from private_pg import private_pg, private_pg_cluster  # noqa: F401  (fixtures)
from test_connection_loss import cut_the_next_insert

SESSION_SECONDS = 30       # the longest any session may wait for an answer (the daemon's own bound is 60)
LANDING_SECONDS = 60
FRESH_SECONDS = 10
OUTAGE_SECONDS = float(os.environ.get("ORDERMAIL_TEST_OUTAGE_SECONDS", "60"))
BUSY_ORDERS, FRESH_ORDERS = 20, 10
SENDERS = 6
WAITING_MAX = 40           # replies waiting for a retry before the clients stop writing new ones


@dataclass
class Reply:
    address: str
    message_id: str
    body: str
    answers: list = field(default_factory=list)    # (stage, code, seconds) per session
    due: float = 0.0                               # not retried before (monotonic)

    @property
    def taken(self) -> bool:
        return any(code == 250 for _, code, _ in self.answers)


def send(port: int, reply: Reply) -> tuple[str, int, float]:
    """One SMTP session: the step it ended at (ehlo, mail, rcpt, data), the
    code (0: no answer — dropped, or no answer within SESSION_SECONDS), its seconds."""
    started = time.monotonic()
    stage, code = "connect", 0
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=SESSION_SECONDS) as client:
            steps = (("ehlo", lambda: client.ehlo("client.example.org")),
                     ("mail", lambda: client.mail("erika@example.org")),
                     ("rcpt", lambda: client.rcpt(reply.address)),
                     ("data", lambda: client.data(mail(to=reply.address, body=reply.body,
                                                       message_id=reply.message_id))))
            for stage, step in steps:
                code = 0
                code = step()[0]
                if code != 250:
                    break
    except smtplib.SMTPResponseException as refused:      # DATA refused before 354
        code = refused.smtp_code
    except (smtplib.SMTPServerDisconnected, OSError):     # timeouts are OSErrors too
        pass
    answer = (stage, code, time.monotonic() - started)
    reply.answers.append(answer)
    return answer


class Burst:
    """SENDERS clients sending replies to `addresses` one after another, a
    4xx retried half a second later, until `finish` and all are taken."""

    def __init__(self, port: int, addresses: list[str]):
        self.port, self.addresses = port, addresses
        self.replies: list[Reply] = []
        self._serial = itertools.count()
        self._lock = threading.Lock()
        self._retries: list[Reply] = []
        self._new = True
        self._threads = [threading.Thread(target=self._sender, daemon=True) for _ in range(SENDERS)]

    def start(self) -> "Burst":
        for thread in self._threads:
            thread.start()
        return self

    def acknowledged(self) -> int:
        return sum(r.taken for r in self.replies)

    def finish(self, seconds: float) -> None:
        """No new replies; wait until every reply so far is taken."""
        self._new = False
        for thread in self._threads:
            thread.join(seconds)
        assert not any(t.is_alive() for t in self._threads), "replies still not taken"

    def _next(self) -> Reply | None:
        """A retry that is due; else a new reply (while few wait); else a pause (due -1); None: done."""
        with self._lock:
            now = time.monotonic()
            for reply in self._retries:
                if reply.due <= now:
                    self._retries.remove(reply)
                    return reply
            if not self._new or len(self._retries) >= WAITING_MAX:
                return Reply("", "", "", due=-1) if self._retries else None
            n = next(self._serial)
            reply = Reply(self.addresses[n % len(self.addresses)], f"<burst-{n}@example.org>", f"Antwort {n}")
            self.replies.append(reply)
            return reply

    def _sender(self) -> None:
        while True:
            reply = self._next()
            if reply is None:
                return
            if reply.due == -1:
                time.sleep(0.1)
                continue
            _stage, code, _seconds = send(self.port, reply)
            if code != 250:
                reply.due = time.monotonic() + 0.5
                with self._lock:
                    self._retries.append(reply)
            time.sleep(0.05)      # about 100 sessions a second in all: a burst, on a shared machine


@pytest.fixture
def shop(private_pg, tmp_path):  # noqa: F811
    """Orders on the private cluster and the daemon serving them (web and /healthz too)."""
    settings = settings_from_dict({
        "shop": {"name": "Teeladen", "address": "orders@shop.example",
                 "base_url": "https://shop.example/status", "locale": "de"},
        "owner": {"addresses": ["owner@shop.example"], "secret": "s3cret-command-key-0123"},
        "database": {"url": private_pg.url}, "outbound": {"maildir": str(tmp_path / "outbox")}})
    store = open_store(private_pg.url)
    addresses = []
    for n in range(BUSY_ORDERS + FRESH_ORDERS):
        order = orders.create_order(store, settings, sample_order(
            str(5000 + n), customer={"name": f"Erika {n}", "email": "erika@example.org"}), quiet=True)
        addresses.append(token_address(settings, order, tokens.CUSTOMER_REPLY, utcnow().date()))
    daemon = Daemon(tmp_path, private_pg.url, web=True).start()
    try:
        yield Shop(private_pg, store, daemon, addresses[:BUSY_ORDERS], addresses[BUSY_ORDERS:])
    finally:
        daemon.stop()
        store.close()


@dataclass
class Shop:
    pg: object
    store: object
    daemon: Daemon
    busy: list[str]           # reply addresses the burst uses (looked up before the trouble)
    fresh: list[str]          # reply addresses nobody used before the database is back

    def replies_logged(self) -> Counter:
        """How often each Message-ID landed on an order as a customer reply."""
        return Counter(e.message_id for e in Event.select(Event.message_id).where(Event.kind == "customer_reply"))

    def healthz(self) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.daemon.web_port, timeout=SESSION_SECONDS)
        try:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            return answer.status, json.loads(answer.read())
        finally:
            conn.close()


def burst_through(shop: Shop, trouble) -> list[Reply]:
    """Replies while `trouble()` happens to the database; then the fresh
    orders' replies; then every check of the module docstring. Returns the
    burst's replies."""
    burst = Burst(shop.daemon.smtp_port, shop.busy).start()
    wait_until(lambda: burst.acknowledged() >= 30, 60)
    time.sleep(2)               # mid-burst, seconds after the busy addresses were first looked up
    trouble()
    back = time.monotonic()
    fresh = [Reply(address, f"<fresh-{n}@example.org>", f"Neu {n}") for n, address in enumerate(shop.fresh)]
    threads = [threading.Thread(target=send, args=(shop.daemon.smtp_port, reply)) for reply in fresh]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SESSION_SECONDS + 5)
    assert [r.answers[0][:2] for r in fresh] == [("data", 250)] * len(fresh)    # at the first try
    assert time.monotonic() - back < FRESH_SECONDS
    time.sleep(2)               # the burst goes on a little after the database is back
    burst.finish(OUTAGE_SECONDS + 120)

    sessions = [answer for reply in burst.replies + fresh for answer in reply.answers]
    assert all(code and seconds < SESSION_SECONDS for _, code, seconds in sessions), \
        [s for s in sessions if not s[1] or s[2] >= SESSION_SECONDS]
    assert not [s for s in sessions if s[1] >= 500]
    assert all(code in (250, 421, 451) for _, code, _ in sessions), Counter(s[:2] for s in sessions)
    taken = {r.message_id for r in burst.replies + fresh if r.taken}
    assert len(taken) == len(burst.replies) + len(fresh)
    try:
        wait_until(lambda: taken <= set(shop.replies_logged()), LANDING_SECONDS - (time.monotonic() - back))
    except AssertionError:
        raise AssertionError(landing_report(shop, taken)) from None
    logged = shop.replies_logged()
    assert {mid: n for mid, n in logged.items() if n != 1} == {}                  # exactly once
    assert not InboundMessage.select().where(InboundMessage.state == "quarantined").exists()
    assert "Traceback" not in shop.daemon.log_text()
    return burst.replies


def landing_report(shop: Shop, taken: set[str]) -> str:
    """What a reader of a failed run needs: where the replies that did not land are, and what the daemon said."""
    missing = taken - set(shop.replies_logged())
    states = Counter((m.state, m.claimed_by or "-") for m in InboundMessage.select()
                     .where(InboundMessage.message_id.in_(sorted(missing))))
    said = [line for line in shop.daemon.log_text().splitlines() if " WARNING " in line or " ERROR " in line]
    return (f"{len(missing)} acknowledged replies not on their orders within {LANDING_SECONDS}s; "
            f"their inbound rows by (state, claimed by): {dict(states)}; the daemon's warnings and errors, "
            f"last 40:\n" + "\n".join(said[-40:]))


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_restart_mid_burst_loses_nothing_and_the_doors_work_at_once_after(shop, mode):
    burst_through(shop, lambda: shop.pg.restart(mode))


def test_an_outage_mid_burst_is_try_again_later_then_everything_lands(shop):
    def outage():
        shop.pg.stop("fast")
        time.sleep(OUTAGE_SECONDS)
        shop.pg.start()
    replies = burst_through(shop, outage)
    refused_at = Counter(stage for r in replies for stage, code, _ in r.answers if code == 451)
    assert refused_at["data"]                   # addresses the RCPT check remembered: refused at DATA
    if OUTAGE_SECONDS >= 60:                    # its memory ran out meanwhile: refused at RCPT too
        assert refused_at["rcpt"]


def test_every_connection_cut_mid_burst(shop):
    burst_through(shop, lambda: shop.pg.terminate_backends())


def test_the_spools_connection_cut_after_begin_and_two_messages_sent(shop):
    """The issue's reproduction: the spool's own connection ends inside its
    transaction, and two messages come in at once. Both senders hear back at
    once; from then on mail is taken as before."""
    cut_the_next_insert(shop.pg)
    first = [Reply(shop.busy[n], f"<cut-{n}@example.org>", f"Geschnitten {n}") for n in range(2)]
    threads = [threading.Thread(target=send, args=(shop.daemon.smtp_port, reply)) for reply in first]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(SESSION_SECONDS + 5)
    answers = [reply.answers[0] for reply in first]
    assert all(stage == "data" and code in (250, 451) and seconds < 5 for stage, code, seconds in answers), answers
    assert any(code == 451 for _, code, _ in answers)
    burst_through(shop, lambda: None)
    taken = {r.message_id for r in first if r.taken}
    wait_until(lambda: taken <= set(shop.replies_logged()), LANDING_SECONDS)


def test_healthz_is_503_while_the_database_is_down_and_200_once_it_is_back(shop):
    status, document = shop.healthz()
    assert (status, document["database"], document["doors"]) == (200, "ok", {"spool": "ok", "recipients": "ok"})
    shop.pg.stop("immediate")
    try:
        time.sleep(1.1)        # past the moment an answer is reused
        status, document = shop.healthz()
        assert status == 503 and document == {"database": "unavailable",
                                              "doors": {"spool": "unavailable", "recipients": "unavailable"}}
    finally:
        shop.pg.start()
    back = time.monotonic()
    status, document = wait_until(lambda: (answer := shop.healthz())[0] == 200 and answer, FRESH_SECONDS)
    assert document["doors"] == {"spool": "ok", "recipients": "ok"} and time.monotonic() - back < 3
    reply = Reply(shop.fresh[0], "<after-healthz@example.org>", "Wieder da")
    assert send(shop.daemon.smtp_port, reply)[:2] == ("data", 250)
