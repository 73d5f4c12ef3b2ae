"""Several daemons on one database: the pieces each of them shares.

- migrations: processes opening a fresh database at once migrate it once;
  an ordermail older than the schema refuses to start, in one line;
- scheduled runs: each due time claimed by one daemon; a run whose daemon
  died, or whose store failed under it, is taken over; one that ended is not;
- the outbox: what a worker that died was sending goes out again at once;
- message counts: the doors of two daemons hold a sender to one limit;
- the RCPT check's memory: a reply taken for an order deleted meanwhile
  (by another process) is not lost, it goes to the owner as unmatched.

Each runs on SQLite and PostgreSQL. The three-daemon test with crashes is
tests/test_three_daemons.py.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
import subprocess
import sys
import textwrap
import time

import peewee as pw
import pytest

from conftest import ROOT, sample_order
from daemon import jobs
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.outbound import outbox
from daemon.store import job_runs as job_store
from daemon.mail.addresses import token_address
from daemon.store.claimants import claimant
from daemon.intake import shared_rates
from daemon.intake.connections import ExemptNetworks
from daemon.intake.rates import MessageRates
from daemon.store.models import Event, InboundMessage, OutboxMessage
from daemon.store.database import MIGRATIONS_DIR, open_store
from daemonproc import Daemon, wait_until
from mailbuilder import mail
from test_outbox import crash_between_send_and_mark, order_with_mail, over_smtp, sink_factory  # noqa: F401  (a fixture)

NOW = dt.datetime(2026, 11, 27, 5, 0)          # 06:00 in Berlin, the jobs' time


# ---- migrations ---------------------------------------------------------------------------

OPEN_AT_ONCE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from daemon.store.database import open_store
    start = {start!r}
    time.sleep(max(start - time.time(), 0))       # imports done: all open at the same moment
    store = open_store({url!r})
    print(",".join(store.schema_status()[1]) or "up to date")
""")


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(database_url):
    start = time.time() + 4
    script = OPEN_AT_ONCE.format(root=str(ROOT), start=start, url=database_url)
    racing = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(4)]
    results = [(p.wait(120), *p.communicate()) for p in racing]
    assert [(code, out.strip()) for code, out, _err in results] == [(0, "up to date")] * 4, \
        [err for _code, _out, err in results]
    store = open_store(database_url)
    try:
        applied = [name for (name,) in store.db.execute_sql("SELECT name FROM schema_migration ORDER BY name")]
        assert applied == sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))
    finally:
        store.close()


@pytest.mark.parametrize("argv", [("serve",), ("orders", "list"), ("check",)])
def test_an_ordermail_older_than_the_schema_refuses_in_one_line(store, ordermail, argv):
    store.db.execute_sql("INSERT INTO schema_migration (name, applied) VALUES ('0999_future', '2030-01-01 00:00:00')")
    result = ordermail(*argv)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "ordermail: the database's schema is newer than this ordermail: it has migration 0999_future, "
        f"this ordermail knows up to {max(p.stem for p in MIGRATIONS_DIR.glob('[0-9]*.py'))}; upgrade ordermail"]


def test_pipe_delivery_to_a_newer_schema_says_try_again_later(store, ordermail):
    store.db.execute_sql("INSERT INTO schema_migration (name, applied) VALUES ('0999_future', '2030-01-01 00:00:00')")
    result = ordermail("deliver", "--recipient", "orders@shop.example", stdin=mail(to="orders@shop.example"))
    assert result.returncode == 75 and "upgrade ordermail" in result.stderr


# ---- scheduled runs ----------------------------------------------------------------------------

def dead_claimant() -> str:
    """host:pid of a process of this host that has ended."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return f"{claimant().rpartition(':')[0]}:{ended.pid}"


def test_of_daemons_claiming_one_due_time_one_gets_it(store):
    job_store.bind(store)
    due = NOW
    won = [job_store.claim("auto-cancel", due, NOW, by=f"host{n}:1") for n in range(3)]
    assert won == [True, False, False]
    assert job_store.claim("auto-cancel", due + dt.timedelta(days=1), NOW + dt.timedelta(days=1), by="host2:1")


def test_a_run_whose_daemon_died_is_taken_over(store):
    job_store.bind(store)
    assert job_store.claim("payment-reminders", NOW, NOW, by=dead_claimant())
    # on the same host, at once — long before the lease ends
    assert job_store.claim("payment-reminders", NOW, NOW + dt.timedelta(seconds=5))
    assert not job_store.claim("payment-reminders", NOW, NOW + dt.timedelta(seconds=6), by="other-machine:1")


def test_a_daemon_elsewhere_is_trusted_until_its_lease_ends(store):
    job_store.bind(store)
    assert job_store.claim("retention", NOW, NOW, by="other-machine:4242")
    assert not job_store.claim("retention", NOW, NOW + dt.timedelta(minutes=59))
    assert job_store.claim("retention", NOW, NOW + job_store.RUN_LEASE + dt.timedelta(seconds=1))


def test_a_run_that_ended_is_not_run_again_by_anyone(store):
    job_store.bind(store)
    assert job_store.claim("owner-digest", NOW, NOW)
    job_store.finished("owner-digest", NOW)
    assert not job_store.claim("owner-digest", NOW, NOW + dt.timedelta(hours=5), by="other-machine:1")
    assert not job_store.claim("owner-digest", NOW, NOW + dt.timedelta(hours=5))


def berlin():
    from zoneinfo import ZoneInfo
    return ZoneInfo("Europe/Berlin")


def unpaid(store, settings, number: str, days: int):
    orders.create_order(store, settings, sample_order(number, customer={"name": "K", "email": f"k{number}@example.org"}),
                        quiet=True, now=NOW - dt.timedelta(days=days))


def test_a_run_the_store_broke_off_is_run_again_at_the_next_look(store, settings, monkeypatch):
    unpaid(store, settings, "1042", days=8)
    jobs.catch_up(settings, store, NOW - dt.timedelta(days=2), berlin())     # the jobs known since then
    real = jobs.payment_schedule.send_reminders

    def store_fails(*args):
        raise pw.OperationalError("server closed the connection unexpectedly")
    monkeypatch.setattr(jobs.payment_schedule, "send_reminders", store_fails)
    with pytest.raises(pw.OperationalError):
        jobs.run_due(settings, store, NOW, berlin())
    monkeypatch.setattr(jobs.payment_schedule, "send_reminders", real)
    assert jobs.run_due(settings, store, NOW + dt.timedelta(minutes=1), berlin())[0] == "payment-reminders"
    assert [e.kind for e in orders.order_events(orders.find_order("1042"))].count("payment_reminder") == 1
    assert jobs.run_due(settings, store, NOW + dt.timedelta(minutes=2), berlin()) == []


def test_a_job_that_fails_is_recorded_and_not_run_again_until_its_next_due_time(store, settings, monkeypatch):
    jobs.catch_up(settings, store, NOW - dt.timedelta(days=2), berlin())
    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("template missing")
    monkeypatch.setattr(jobs.payment_schedule, "send_reminders", broken)
    assert "payment-reminders" in jobs.run_due(settings, store, NOW, berlin())
    assert jobs.run_due(settings, store, NOW + dt.timedelta(minutes=1), berlin()) == []
    assert len(calls) == 1 and job_store.runs()["payment-reminders"].last_status == "error"
    jobs.run_due(settings, store, NOW + dt.timedelta(days=1), berlin())
    assert len(calls) == 2


# ---- the outbox ----------------------------------------------------------------------------------

def test_mails_a_dead_worker_was_sending_go_out_again_when_the_next_worker_starts(store, settings, sink_factory):  # noqa: F811
    sink = sink_factory()
    settings = over_smtp(settings, sink.port)
    row = order_with_mail(store, settings)
    crash_between_send_and_mark(settings)            # SIGKILLed after the server took it, before marking
    assert OutboxMessage.get_by_id(row.id).state == "sending"
    assert outbox.release_dead_claims(store) == 1    # what a worker starting on this host does first
    assert outbox.send_due(store, settings) == 1     # due now, not when the 15-minute lease ends
    assert sink.message_ids() == [row.message_id] * 2                   # once more, the same mail
    assert outbox.release_dead_claims(store) == 0


# ---- message counts ---------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def daemons_counting(store, n: int, clock, per_sender: int = 10) -> list[MessageRates]:
    shared_rates.bind(store)
    return [MessageRates(per_sender, 1000, ExemptNetworks(()), ("owner@shop.example",), clock=clock)
            for _ in range(n)]


async def share_all(store, counting: list[MessageRates]) -> None:
    for rates in counting:
        await rates.share(store)


def take(rates: MessageRates, times: int, sender="erika@example.org", client="192.0.2.7") -> None:
    for _ in range(times):
        assert rates.refusal(sender, client) is None
        rates.taken(sender, client)


def test_two_daemons_hold_a_sender_to_one_limit_and_a_restart_keeps_the_count(store):
    clock = Clock()
    first, second = daemons_counting(store, 2, clock)
    take(first, 4)
    take(second, 3)
    asyncio.run(share_all(store, [first, second, first]))
    for rates in (first, second):         # 7 of 10 taken in all: each knows it
        take(rates, 1)
    asyncio.run(share_all(store, [first, second]))
    refusal = "450 4.7.1 Too many messages from erika@example.org this hour, try again later"
    take(first, 1)                        # the tenth
    asyncio.run(share_all(store, [first, second]))
    assert first.refusal("erika@example.org", "192.0.2.8") == refusal
    assert second.refusal("erika@example.org", "192.0.2.8") == refusal
    assert second.refusal("max@example.org", "192.0.2.8") is None
    restarted, = daemons_counting(store, 1, clock)
    asyncio.run(restarted.share(store))
    assert restarted.refusal("erika@example.org", "192.0.2.8") == refusal
    clock.now += 3600                     # the hour has passed: the shared counts are forgotten too
    asyncio.run(share_all(store, [first, second]))
    take(second, 1)
    assert shared_rates.MessageRate.select().where(shared_rates.MessageRate.bucket <= int(clock.now // 300) - 12).count() == 0


def test_counts_taken_while_the_store_fails_are_shared_once_it_is_back(store, monkeypatch):
    clock = Clock()
    first, second = daemons_counting(store, 2, clock, per_sender=4)
    take(first, 4)
    real = shared_rates.exchange

    def store_fails(*args, **kwargs):
        raise pw.OperationalError("could not connect to server")
    monkeypatch.setattr(shared_rates, "exchange", store_fails)
    asyncio.run(first.share(store))
    monkeypatch.setattr(shared_rates, "exchange", real)
    asyncio.run(share_all(store, [first, second]))
    assert second.refusal("erika@example.org", "192.0.2.8") is not None


def test_the_doors_of_two_daemons_count_a_sender_together(store, settings, tmp_path):
    order = orders.create_order(store, settings, sample_order(), quiet=True)
    to = token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    daemons = [Daemon(tmp_path / name, settings.database.url, messages_per_sender_per_hour=4).start()
               for name in ("a", "b")]
    try:
        for n, daemon in enumerate(daemons * 2):          # two through each door
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
                client.sendmail("erika@example.org", [to], mail(to=to, body=f"Nummer {n}"))
        for daemon in daemons:
            def refused(port=daemon.smtp_port):
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.ehlo()
                    return client.mail("erika@example.org")[0] == 450
            wait_until(refused, 15)       # within an exchange or two (SHARE_SECONDS)
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0
    assert all("Traceback" not in d.log_text() for d in daemons)


# ---- the RCPT check's memory and a deleted order ---------------------------------------------------

def test_a_reply_taken_for_an_order_deleted_meanwhile_goes_to_the_owner(store, settings, tmp_path, ordermail):
    order = orders.create_order(store, settings, sample_order(), quiet=True)
    to = token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())
    daemon = Daemon(tmp_path, settings.database.url).start()
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            client.sendmail("erika@example.org", [to], mail(to=to, body="Erste Frage", message_id="<q1@example.org>"))
        wait_until(lambda: Event.select().where(Event.message_id == "<q1@example.org>").exists(), 30)
        # another process deletes the order; this daemon's RCPT check still remembers the address
        assert ordermail("command", "delete 1042 confirm").returncode == 0
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
            refused = client.sendmail("erika@example.org", [to],
                                      mail(to=to, body="Zweite Frage", message_id="<q2@example.org>"))
        assert refused == {}                                   # taken: 250
        second = wait_until(lambda: InboundMessage.get_or_none(
            (InboundMessage.message_id == "<q2@example.org>") & (InboundMessage.state == "done")), 30)
        assert second.reason == "unmatched: forwarded to the owner" and second.order_id is None
        forward, = OutboxMessage.select().where(OutboxMessage.inbound == second.id)
        assert (forward.kind, forward.recipient) == ("unmatched_forward", "owner@shop.example")
        assert b"Zweite Frage" in second.raw
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()
