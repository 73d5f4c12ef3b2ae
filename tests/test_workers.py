"""The worker process beside the doors, and the inbound worker's groups.

`ordermail serve` handles stored mail in a child process of its own (so the
doors never wait for parsing and templating). It must come back when it
dies, leave with the daemon even when the daemon is killed, and a failing
message in a group must not take the others with it.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import smtplib
import time

import pytest

from conftest import sample_order
from daemon.handling import inbound
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.intake.smtp import RecipientCache
from daemon.intake.spool import store_message
from daemon.errors import UnknownRecipient
from daemon.outbound import outbox
from daemon.store.models import Event, InboundMessage, OutboxMessage
from daemonproc import Daemon, free_port, wait_until
from mailbuilder import mail
from test_outbox import order_with_mail, over_smtp, sink_factory  # noqa: F401  (a fixture)


@pytest.fixture
def reply_to(store, settings):
    order = orders.create_order(store, settings, sample_order())
    return token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())


def replies() -> list[str]:
    return [e.body_text for e in Event.select().where(Event.kind == "customer_reply").order_by(Event.id)]


def send(daemon, to: str, body: str) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
        client.sendmail("erika@example.org", [to], mail(to=to, body=body))


def test_a_worker_process_that_dies_is_started_again_and_mail_still_lands(store, settings, tmp_path, reply_to):
    daemon = Daemon(tmp_path, settings.database.url).start()
    try:
        workers = wait_until(lambda: len(daemon.worker_pids()) == 2 and daemon.worker_pids())
        for pid in workers:                                  # [inbound] workers = 2 by default
            os.kill(pid, signal.SIGKILL)
        send(daemon, reply_to, "Nach dem Absturz")          # stored at once, handled once it is back
        wait_until(lambda: replies() == ["Nach dem Absturz"], 30)
        wait_until(lambda: len(daemon.worker_pids()) == 2)
        assert not set(workers) & set(daemon.worker_pids())
    finally:
        assert daemon.stop() == 0
    assert "starting it again" in daemon.log_text()


def test_the_worker_process_leaves_with_a_killed_daemon(store, settings, tmp_path, reply_to):
    daemon = Daemon(tmp_path, settings.database.url).start()
    workers = wait_until(daemon.worker_pids)
    daemon.kill()                                         # SIGKILL: no chance to stop the children itself
    wait_until(lambda: all(not os.path.exists(f"/proc/{pid}") or _zombie(pid) for pid in workers), 30)


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_a_failing_message_is_quarantined_alone_and_rolls_back_alone(store, settings, reply_to, monkeypatch):
    real_route = inbound.route

    def route(ctx):
        outcome = real_route(ctx)                          # writes its event …
        if "kaputt" in ctx.mail.text:
            raise RuntimeError("handler exploded")        # … which must vanish with it
        return outcome
    monkeypatch.setattr(inbound, "route", route)
    with store.atomic():
        ids = [store_message(mail(to=reply_to, body=body), channel="pipe", envelope_from="erika@example.org",
                             recipients=[reply_to]) for body in ("Erste", "kaputt", "Dritte")]
    assert inbound.process_pending(store, settings) == 3
    states = {m.id: (m.state, m.reason) for m in InboundMessage.select()}
    assert [states[i][0] for i in ids] == ["done", "quarantined", "done"]
    assert states[ids[1]][1] == "RuntimeError: handler exploded"
    assert replies() == ["Erste", "Dritte"]


def test_messages_claimed_by_a_dead_process_are_handed_out_again(store, settings, reply_to):
    with store.atomic():
        message_id = store_message(mail(to=reply_to, body="Verwaist"), channel="smtp",
                                   envelope_from="erika@example.org", recipients=[reply_to])
    dead = _a_pid_that_is_not_running()
    InboundMessage.update(state="processing", claimed_by=f"{inbound.claimant().rpartition(':')[0]}:{dead}").execute()
    assert inbound.process_pending(store, settings) == 0      # claimed: not ours to take
    assert inbound.release_dead_claims(store) == 1
    assert inbound.process_pending(store, settings) == 1
    assert InboundMessage.get_by_id(message_id).state == "done" and replies() == ["Verwaist"]


def _a_pid_that_is_not_running() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_rcpt_checks_keep_good_addresses_for_a_minute_and_never_keep_refusals(store, settings, reply_to):
    import asyncio
    cache = RecipientCache(settings)

    async def check(address):
        return await cache.check(address)
    assert asyncio.run(check(reply_to)).kind == "token"
    orders.delete_order(store, "1042", confirm=True)
    # Within the minute the address is still taken (the worker checks again
    # and hands such a mail to the owner as unmatched): no query per RCPT.
    assert asyncio.run(check(reply_to)).kind == "token"
    forged = reply_to.replace("orders+", "orders+x")
    for _ in range(2):
        with pytest.raises(UnknownRecipient):
            asyncio.run(check(forged))
    with pytest.raises(UnknownRecipient):
        asyncio.run(RecipientCache(settings).check(reply_to))    # a fresh look finds it gone


def test_a_stop_that_signals_every_process_at_once_ends_cleanly(store, settings, tmp_path, reply_to):
    """systemd's stop sends SIGTERM to the daemon and its workers together: exit 0, nothing restarted."""
    daemon = Daemon(tmp_path, settings.database.url).start()
    send(daemon, reply_to, "Kurz vor dem Halt")
    workers = wait_until(lambda: len(daemon.worker_pids()) == 2 and daemon.worker_pids())
    for pid in [*workers, daemon.process.pid]:
        os.kill(pid, signal.SIGTERM)
    assert daemon.process.wait(60) == 0
    assert "starting it again" not in daemon.log_text() and "Traceback" not in daemon.log_text()
    wait_until(lambda: all(not os.path.exists(f"/proc/{pid}") or _zombie(pid) for pid in workers))
    assert InboundMessage.select().count() == 1          # taken before the stop; handled now or at the next start


# ---- starting while PostgreSQL does not answer yet ------------------------------------------

@contextlib.contextmanager
def database_not_answering(store):
    """Every new connection of `store` refused, as while a PostgreSQL server
    restarts ("the database system is not yet accepting connections")."""
    if store.backend != "postgresql":
        pytest.skip("SQLite opens a file: there is no server that could be starting up")
    port = store.db.connect_params.get("port")
    store.db.close()                                     # this thread connects anew, too
    store.db.connect_params["port"] = free_port()        # nothing listens there
    try:
        yield
    finally:
        store.db.connect_params["port"] = port


def test_an_inbound_worker_starting_while_the_database_restarts_waits_for_it(store, settings, reply_to):
    with store.atomic():
        message_id = store_message(mail(to=reply_to, body="Verwaist"), channel="smtp",
                                   envelope_from="erika@example.org", recipients=[reply_to])
    dead = _a_pid_that_is_not_running()
    InboundMessage.update(state="processing", claimed_by=f"{inbound.claimant().rpartition(':')[0]}:{dead}").execute()
    worker = inbound.InboundWorker(store, settings, idle_seconds=0.1)
    with database_not_answering(store):
        worker.start()                                   # a worker process crashed here before
        time.sleep(0.5)
        assert worker._thread.is_alive()
    try:       # the database answers again: the dead process's claim is taken back and handled
        wait_until(lambda: InboundMessage.get_by_id(message_id).state == "done", 15)
        assert replies() == ["Verwaist"]
    finally:
        worker.stop()


def test_an_outbox_worker_starting_while_the_database_restarts_sends_a_dead_workers_mail(
        store, settings, sink_factory):  # noqa: F811
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    dead = _a_pid_that_is_not_running()
    OutboxMessage.update(state="sending", claimed_by=f"{inbound.claimant().rpartition(':')[0]}:{dead}").execute()
    worker = outbox.OutboxWorker(store, settings, idle_seconds=0.1)
    with database_not_answering(store):
        worker.start()
        time.sleep(0.5)
        assert worker._thread.is_alive()
    try:
        wait_until(lambda: sink.message_ids() == [row.message_id], 15)
    finally:
        worker.stop()
    assert OutboxMessage.get_by_id(row.id).state == "sent"
