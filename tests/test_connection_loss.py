"""The store outliving its database server: restarts, crashes, cut connections.

Against a private PostgreSQL that each test stops, crashes and starts
(tests/private_pg.py), never the shared one. peewee keeps a connection per
thread; every thread must get a fresh one after the server dropped its own,
at its next use, without a failure where nothing was in flight — and a
transaction the server cut off must fail with what happened, leaving the
thread usable. SQLite has no server that could drop a connection: these
tests are PostgreSQL's alone (the doors' answers on SQLite are tested in
test_spool.py and test_intake_smtp.py).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import peewee as pw
import pytest

from conftest import sample_order
from daemon.handling import inbound
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.outbound import outbox
from daemon.mail.addresses import token_address
from daemon.config import settings_from_dict
from daemon.errors import StoreUnavailable
from daemon.intake.spool import Spool, store_message
from daemon.store.models import Counter, Event, InboundMessage, OutboxMessage, utcnow
from daemon.store.database import open_store
from mailbuilder import mail
from private_pg import private_pg, private_pg_cluster  # noqa: F401  (fixtures)
from test_outbox import Sink, over_smtp

CUTS = ("terminate", "fast", "immediate")


@pytest.fixture
def pg_store(private_pg):  # noqa: F811
    store = open_store(private_pg.url)
    yield store
    store.close()


def cut(private_pg, how: str) -> None:  # noqa: F811
    """Take every connection away: an admin's pg_terminate_backend, a fast
    restart (sessions ended, rolled back) or an immediate one (a crash)."""
    if how == "terminate":
        assert private_pg.terminate_backends() >= 1
    else:
        private_pg.restart(how)
    time.sleep(0.2)      # the goodbye has reached the clients' sockets


def backend_pid(store) -> int:
    return store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


def count(store, name: str) -> int:
    with store.atomic():
        Counter.insert(name=name, value=1).on_conflict(
            conflict_target=[Counter.name], update={Counter.value: Counter.value + 1}).execute()
    return Counter.get_by_id(name).value


@pytest.mark.parametrize("how", CUTS)
def test_every_thread_gets_a_fresh_connection_at_its_next_use(private_pg, pg_store, how):  # noqa: F811
    """Three threads, each with its connection; all cut; each one's next
    transaction and next lone statement work at the first try."""
    threads = 3
    pool = ThreadPoolExecutor(threads)
    barrier = threading.Barrier(threads)

    def in_every_thread(work):
        def run(n):
            barrier.wait(10)      # all at once: each call lands on a thread of its own
            return work(n)
        return list(pool.map(run, range(threads)))

    try:
        before = in_every_thread(lambda n: (count(pg_store, f"t{n}"), backend_pid(pg_store))[1])
        assert len(set(before)) == threads
        cut(private_pg, how)
        after = in_every_thread(lambda n: (count(pg_store, f"t{n}"), backend_pid(pg_store))[1])
        assert not set(after) & set(before)
        assert in_every_thread(lambda n: Counter.get_by_id(f"t{n}").value) == [2] * threads
    finally:
        pool.shutdown()


@pytest.mark.parametrize("how", CUTS)
def test_a_transaction_cut_off_fails_with_what_happened_and_leaves_the_thread_usable(
        private_pg, pg_store, how):  # noqa: F811
    count(pg_store, "kept")
    with pytest.raises(pw.OperationalError) as failure:     # not "connection already closed" from the rollback
        with pg_store.atomic():
            Counter.create(name="lost", value=1)
            cut(private_pg, how)
            Counter.create(name="lost too", value=1)
    assert "server closed the connection" in str(failure.value) or "terminating" in str(failure.value)
    assert count(pg_store, "kept") == 2
    assert not Counter.select().where(Counter.name.startswith("lost")).exists()


def test_a_lone_read_whose_connection_drops_under_it_is_asked_again(private_pg, pg_store):  # noqa: F811
    """The server ends the connection while the read runs (here the read
    itself asks it to, once): a read can be asked twice, so it is, on a
    fresh connection — the RCPT check's lookup does not fail for it."""
    private_pg.sql("CREATE SEQUENCE cut_read_once")
    private_pg.sql("""CREATE FUNCTION answer_after_a_cut() RETURNS int LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('cut_read_once') = 1 THEN
            PERFORM pg_terminate_backend(pg_backend_pid());
            PERFORM pg_sleep(5);
          END IF;
          RETURN 42;
        END $$""")
    first = backend_pid(pg_store)
    assert pg_store.db.execute_sql("SELECT answer_after_a_cut()").fetchone() == (42,)
    assert backend_pid(pg_store) != first


def test_while_the_server_is_down_each_use_fails_at_once_and_the_first_after_it_works(
        private_pg, pg_store):  # noqa: F811
    count(pg_store, "n")
    private_pg.stop("fast")
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(pw.OperationalError):
            count(pg_store, "n")
        assert time.monotonic() - started < 5
    private_pg.start()
    assert count(pg_store, "n") == 2


def test_the_spool_answers_every_sender_when_its_connection_is_cut_after_begin(private_pg, pg_store):  # noqa: F811
    """The issue's reproduction: the writer's connection ends inside its
    transaction (the server cuts it while the INSERT runs) and two messages
    are put. Each sender hears back at once — taken, or "try again later" —
    the writer lives on, and what it said it took is there."""
    cut_the_next_insert(private_pg)
    spool = Spool(pg_store)

    async def put_two():
        puts = [spool.put(f"Subject: {n}\r\n\r\nx\r\n".encode(), channel="smtp", envelope_from="a@example.org",
                          recipients=["orders@shop.example"]) for n in range(2)]
        return await asyncio.wait_for(asyncio.gather(*puts, return_exceptions=True), 15)

    try:
        answers = asyncio.run(put_two())
        assert all(isinstance(a, (int, StoreUnavailable)) for a in answers), answers
        assert any(isinstance(a, StoreUnavailable) for a in answers)          # the cut one
        again = asyncio.run(put_two())
        assert all(isinstance(a, int) for a in again), again
        taken = [a for a in answers + again if isinstance(a, int)]
        assert sorted(m.id for m in InboundMessage.select()) == sorted(taken)
        assert spool.probe(5) is None
    finally:
        spool.close()


def cut_the_next_insert(private_pg) -> None:  # noqa: F811
    """A trigger that ends its own connection (pg_terminate_backend) in the
    next INSERT into inbound_message: after BEGIN, inside the transaction."""
    private_pg.sql("CREATE SEQUENCE cut_once")
    private_pg.sql("""CREATE FUNCTION cut_connection() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF nextval('cut_once') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
          RETURN NEW;
        END $$""")
    private_pg.sql("CREATE TRIGGER cut BEFORE INSERT ON inbound_message "
                   "FOR EACH ROW EXECUTE FUNCTION cut_connection()")


def test_a_hung_server_is_try_again_later_within_the_bound_and_the_commit_still_counts(
        private_pg, pg_store):  # noqa: F811
    """A server that takes the connection and never answers (stopped, not
    closed): the sender hears "try again later" within `answer_within`, not
    never; once the server goes on, the writer does too."""
    spool = Spool(pg_store, answer_within=2)
    message = b"Subject: x\r\n\r\nx\r\n"

    async def put():
        return await spool.put(message, channel="smtp", envelope_from="a@example.org",
                               recipients=["orders@shop.example"])
    try:
        asyncio.run(put())
        backends = [pid for pid, _state, _query in private_pg.backends()]
        for pid in backends:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no commit within 2 s"):
                asyncio.run(put())
            assert time.monotonic() - started < 4
            assert spool.probe(1) is not None          # /healthz would say so meanwhile
        finally:
            for pid in backends:
                os.kill(pid, signal.SIGCONT)
        assert isinstance(asyncio.run(put()), int)
        assert InboundMessage.select().count() == 3    # the late commit counts; its sender's copy is a duplicate
    finally:
        spool.close()


# ---- the loops that own a connection: the inbound worker and the outbox ---------------------

def shop_settings(private_pg, tmp_path):  # noqa: F811
    return settings_from_dict({
        "shop": {"name": "Teeladen", "address": "orders@shop.example",
                 "base_url": "https://shop.example/status", "locale": "de"},
        "owner": {"addresses": ["owner@shop.example"], "secret": "s3cret-command-key-0123"},
        "database": {"url": private_pg.url}, "outbound": {"maildir": str(tmp_path / "outbox")}})


def away_for_a_while(private_pg, seconds: float = 2.0) -> threading.Event:  # noqa: F811
    """Stop the server now (a fast shutdown) and start it again `seconds` later; set once it is back."""
    back = threading.Event()
    private_pg.stop("fast")

    def restart():
        private_pg.start()
        back.set()
    threading.Timer(seconds, restart).start()
    return back


def test_claims_the_store_broke_off_are_given_back_once_it_answers_not_after_the_lease(
        private_pg, pg_store, tmp_path, monkeypatch):  # noqa: F811
    """The database goes away while the worker handles a group: the round is
    undone, its claims cannot be given back at once (the store is still
    away), and the worker gives them back when it answers again — the
    replies land within seconds, not after the 10-minute claim lease."""
    settings = shop_settings(private_pg, tmp_path)
    order = orders.create_order(pg_store, settings, sample_order(), quiet=True)
    address = token_address(settings, order, tokens.CUSTOMER_REPLY, utcnow().date())
    with pg_store.atomic():
        for n in range(3):
            store_message(mail(to=address, body=f"Antwort {n}"), channel="smtp",
                          envelope_from="erika@example.org", recipients=[address])
    real_route, back = inbound.route, []

    def route(ctx):
        if not back:
            back.append(away_for_a_while(private_pg))    # in the middle of the round
        return real_route(ctx)
    monkeypatch.setattr(inbound, "route", route)
    worker = inbound.InboundWorker(pg_store, settings, idle_seconds=0.5)
    worker.start()
    try:
        def landed():
            try:
                return Event.select().where(Event.kind == "customer_reply").count() == 3
            except pw.OperationalError:      # this thread's store: the server is still away
                return False
        deadline = time.monotonic() + 30
        while not landed():
            assert time.monotonic() < deadline, "the replies wait for the claim lease"
            time.sleep(0.2)
    finally:
        worker.stop()
    assert back and back[0].is_set()
    assert sorted(m.state for m in InboundMessage.select()) == ["done"] * 3


class SinkThatTakesItsTime(Sink):
    """A smarthost during whose DATA the database goes away (once)."""

    def __init__(self, during_data, **kwargs):
        super().__init__(**kwargs)
        self.during_data = during_data

    async def handle_DATA(self, server, session, envelope):
        if self.during_data is not None:
            self.during_data, during = None, self.during_data
            await asyncio.to_thread(during)
        return await super().handle_DATA(server, session, envelope)


def test_a_mail_sent_while_the_store_goes_away_is_marked_once_it_is_back_and_sent_once(
        private_pg, pg_store, tmp_path):  # noqa: F811
    settings = shop_settings(private_pg, tmp_path)
    orders.create_order(pg_store, settings, sample_order())          # its confirmation waits in the outbox
    back = []
    sink = SinkThatTakesItsTime(lambda: back.append(away_for_a_while(private_pg))).start()
    try:
        settings = over_smtp(settings, sink.port)
        assert outbox.send_due(pg_store, settings) == 1              # marked once the store answered
        assert back[0].is_set()
        row, = OutboxMessage.select()
        assert row.state == "sent" and row.attempts == 1
        assert outbox.send_due(pg_store, settings, utcnow() + dt.timedelta(hours=1)) == 0
        assert len(sink.received) == 1
    finally:
        sink.stop()
