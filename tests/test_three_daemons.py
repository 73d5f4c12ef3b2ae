"""Several `ordermail serve` on one PostgreSQL, through crashes: CONTRACT.md's "Several daemons".

`test_three_daemons_through_a_crash_and_a_database_restart`: three daemons
(tests/daemonproc.py) on one database of a private cluster (tests/private_pg.py,
restarted by the test; never the shared server), each sending through the
smarthost — an aiosmtpd sink on loopback, whose Message-IDs are counted. REPLIES
customer replies go to their three SMTP ports from several clients at once;
a client retries a "try again later", or a door that does not answer, 0.5 s
later at the next daemon, as a mail server does with several MX hosts.
Meanwhile one daemon is SIGKILLed together with its worker process and
started again, and PostgreSQL is restarted (crashed: `-m immediate`). The
daily jobs' time passed while the shop was down, so the three catch it up
together when they start, and the owner's digest comes due during the test.
Afterwards:

- every reply acknowledged with 250 is on its order exactly once, and
  nothing is quarantined;
- every notification (a forward to the owner per reply, the payment
  reminders and cancellations, two digests) reached the sink, each
  Message-ID once — except those the killed daemon was sending when it
  died: the sink may have taken them before they were marked sent, and they
  go out once more (the outbox is at-least-once, with the same Message-ID),
  never a third time;
- each daily job ran once per due time: its effects once (a reminder per
  order, one cancellation, one deletion), one `job NAME:` line across the
  three daemons' logs, its claim ended; the digest twice, once per due time.

`test_a_smarthost_outage_with_two_daemons_sending`: the smarthost is away
for several retry periods, then answers 451 to the first ten mails; two
daemons send 30 notifications meanwhile: each reaches it once.

REPLIES (environment ORDERMAIL_TEST_REPLIES, default 3000) sets the size of
the burst; a few hundred make a quick run while working on this.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
from collections import Counter, deque
from pathlib import Path

import pytest

from conftest import sample_order
from daemon import jobs
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.store import job_runs as job_store
from daemon.mail.addresses import token_address
from daemon.store.claimants import this_host
from daemon.config import settings_from_dict
from daemon.orders.service import Content, Via
from daemon.store.models import CANCELLED, Event, InboundMessage, Order, OutboxMessage, utcnow
from daemon.store.database import open_store
from daemonproc import Daemon, free_port, wait_for_port, wait_until
from private_pg import private_pg, private_pg_cluster  # noqa: F401  (fixtures)
from test_outbox import Sink
from test_pg_restart import Reply, send

REPLIES = int(os.environ.get("ORDERMAIL_TEST_REPLIES", "3000"))
CLIENTS = 6
REPLY_ORDERS = 60
TO_REMIND, TO_CANCEL, TO_DELETE = 20, 10, 10
LANDING_SECONDS = 600      # after the burst, for every reply to be handled and every mail sent
DAILY_JOBS = ("payment-reminders", "auto-cancel", "retention", "owner-digest")


def started_sink(port: int | None = None, refuse: int = 0) -> Sink:
    """The smarthost: aiosmtpd on loopback keeping what it takes (tests/test_outbox.py),
    answering 451 to the first `refuse` mails."""
    return Sink(port, data=["451 4.3.0 Try again later"] * refuse, ready_timeout=60).start()


@pytest.fixture
def sink():
    taking = started_sink()
    yield taking
    taking.stop()


def smarthost(port: int, **more) -> str:
    lines = {"mode": '"smtp"', "smtp_host": '"127.0.0.1"', "smtp_port": str(port), "retry_base_seconds": "1",
             "smtp_connections": "2", "owner_per_hour": "100000", **more}
    return "".join(f"{key} = {value}\n" for key, value in lines.items())


def shop_settings(url: str, tmp_path: Path, **shop):
    return settings_from_dict({
        "shop": {"name": "Teeladen", "address": "orders@shop.example", "base_url": "https://shop.example/status",
                 "locale": "de", **shop},
        "owner": {"addresses": ["owner@shop.example"], "secret": "s3cret-command-key-0123"},
        "database": {"url": url}, "outbound": {"maildir": str(tmp_path / "outbox")}})


def local_hhmm(moment: dt.datetime) -> str:
    return moment.astimezone(jobs.local_zone()).strftime("%H:%M")


def start_together(daemons: list[Daemon]) -> None:
    for daemon in daemons:
        daemon.start(wait=False)
    for daemon in daemons:
        wait_for_port(daemon.smtp_port, 90)


# ---- the orders the daily jobs find -----------------------------------------------------------

def orders_for_the_daily_jobs(store, settings, now: dt.datetime) -> dict[str, list[str]]:
    """Unpaid orders the reminder is due for, reminded ones the cancellation is
    due for, and cancelled ones quiet long enough to be deleted (by number)."""
    made: dict[str, list[str]] = {"remind": [], "cancel": [], "delete": []}

    def place(kind: str, n: int, days_ago: float) -> str:
        number = f"{kind[0].upper()}-{n}"
        orders.create_order(store, settings, sample_order(number, customer={
            "name": f"Kunde {number}", "email": f"{number.lower()}@example.org"}),
            quiet=True, now=now - dt.timedelta(days=days_ago))
        made[kind].append(number)
        return number

    for n in range(TO_REMIND):
        place("remind", n, 8)                       # bank transfer: reminded after 7 days
    for n in range(TO_CANCEL):
        number = place("cancel", n, 25)             # ... cancelled after 21, a reminder 15 days ago
        Order.update(payment_reminded_at=now - dt.timedelta(days=15)).where(Order.number == number).execute()
    for n in range(TO_DELETE):
        number = place("delete", n, 60)
        orders.mark_cancelled(store, settings, number, reason="Kundenwunsch",
                              via=Via(quiet=True, now=now - dt.timedelta(days=40)))
    return made


# ---- the burst ------------------------------------------------------------------------------

class Burst:
    """CLIENTS clients sending `replies`, each first to its own door (n % doors);
    a reply not taken is tried again 0.5 s later at the next door."""

    def __init__(self, ports: list[int], replies: list[Reply]):
        self.ports = ports
        self.waiting = deque((n, reply) for n, reply in enumerate(replies))
        self.retries: list[tuple[float, int, Reply]] = []
        self.replies = replies
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def start(self) -> "Burst":
        for thread in self._threads:
            thread.start()
        return self

    def acknowledged(self) -> int:
        return sum(reply.taken for reply in self.replies)

    def join(self, seconds: float) -> None:
        for thread in self._threads:
            thread.join(seconds)
        assert not any(t.is_alive() for t in self._threads), f"{len(self.replies) - self.acknowledged()} not taken"

    def _next(self) -> tuple[int, Reply] | None | bool:
        with self._lock:
            now = time.monotonic()
            for entry in self.retries:
                if entry[0] <= now:
                    self.retries.remove(entry)
                    return entry[1], entry[2]
            if self.waiting:
                return self.waiting.popleft()
            return bool(self.retries) or None        # True: wait for a retry

    def _client(self) -> None:
        while (work := self._next()) is not None:
            if work is True:
                time.sleep(0.1)
                continue
            door, reply = work
            if send(self.ports[door % len(self.ports)], reply)[1] != 250:
                with self._lock:
                    self.retries.append((time.monotonic() + 0.5, door + 1, reply))


# ---- three daemons ------------------------------------------------------------------------------

def test_three_daemons_through_a_crash_and_a_database_restart(private_pg, tmp_path, sink):  # noqa: F811
    started = dt.datetime.now(dt.timezone.utc)
    jobs_due = (started - dt.timedelta(minutes=5)).replace(second=0, microsecond=0)   # passed while the shop was down
    digest_at = (started + dt.timedelta(seconds=60)).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    jobs_time, digest_time = local_hhmm(jobs_due), local_hhmm(digest_at)
    settings = shop_settings(private_pg.url, tmp_path, delete_cancelled_after_days=30)
    store = open_store(private_pg.url)
    now = utcnow()
    job_store.bind(store)
    job_store.ensure([job.name for job in jobs.JOBS], now - dt.timedelta(days=2))    # the shop ran before
    daily = orders_for_the_daily_jobs(store, settings, now)
    addresses = []
    for n in range(REPLY_ORDERS):
        order = orders.create_order(store, settings, sample_order(
            str(7000 + n), customer={"name": f"Erika {n}", "email": "erika@example.org"}), quiet=True)
        addresses.append(token_address(settings, order, tokens.CUSTOMER_REPLY, now.date()))

    daemons = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        daemons.append(Daemon(tmp_path / name, private_pg.url,
                              shop_extra=f'jobs_time = "{jobs_time}"\ndelete_cancelled_after_days = 30\n',
                              owner_extra=f'digest_time = "{digest_time}"\n', inbound_extra="workers = 1\n",
                              outbound_extra=smarthost(sink.port)))
    start_together(daemons)
    try:
        # the three catch up the daily jobs at once; the burst begins once those runs ended
        # (a run taken over from a daemon that died is shown by tests/test_several_daemons.py)
        wait_until(lambda: all(job_store.runs()[name].last_due_at is not None
                               and job_store.runs()[name].claimed_until is None for name in DAILY_JOBS), 120)
        replies = [Reply(addresses[n % REPLY_ORDERS], f"<burst-{n}@example.org>", f"Antwort {n}")
                   for n in range(REPLIES)]
        burst = Burst([d.smtp_port for d in daemons], replies).start()

        wait_until(lambda: burst.acknowledged() >= REPLIES // 5, 300)
        crashed = daemons[1]
        claimants = {f"{this_host()}{pid}" for pid in crashed.crash()}
        in_flight = {row.message_id for row in OutboxMessage.select(OutboxMessage.message_id).where(
            (OutboxMessage.state == "sending") & OutboxMessage.claimed_by.in_(claimants))}
        time.sleep(2)
        crashed.start(wait=False)
        wait_for_port(crashed.smtp_port, 90)

        wait_until(lambda: burst.acknowledged() >= REPLIES * 3 // 5, 300)
        private_pg.restart("immediate")
        store.db.close()            # the test's own connection went with the server

        burst.join(600)
        taken = {reply.message_id for reply in replies if reply.taken}
        assert len(taken) == REPLIES

        wait_until(lambda: dt.datetime.now(dt.timezone.utc) > digest_at + dt.timedelta(seconds=5),
                   (digest_at - dt.datetime.now(dt.timezone.utc)).total_seconds() + 10)
        wait_until(lambda: not InboundMessage.select().where(InboundMessage.state.in_(("new", "processing"))).exists()
                   and OutboxMessage.select().where(OutboxMessage.kind == "owner_digest").count() == 2
                   and not OutboxMessage.select().where(OutboxMessage.state != "sent").exists(), LANDING_SECONDS)

        # every acknowledged reply on its order exactly once
        logged = Counter(e.message_id for e in Event.select(Event.message_id).where(Event.kind == "customer_reply"))
        assert set(logged) == taken and set(logged.values()) == {1}
        assert InboundMessage.select().where(InboundMessage.state == "quarantined").count() == 0

        # every notification sent, each Message-ID once (but the ones the crash broke off: at most twice)
        queued = {row.message_id for row in OutboxMessage.select(OutboxMessage.message_id)}
        sent = Counter(sink.message_ids())
        assert set(sent) == queued
        twice = {mid for mid, n in sent.items() if n > 1}
        assert twice <= in_flight and max(sent.values()) <= 2, (len(twice), len(in_flight))
        forwards = OutboxMessage.select().where(OutboxMessage.kind == "reply_forward").count()
        assert forwards == REPLIES

        # each daily job once per due time
        runs = job_store.runs()
        for name in DAILY_JOBS:
            assert runs[name].claimed_until is None and runs[name].last_status == "ok", name
        ran = Counter(match for daemon in daemons
                      for match in re.findall(r"job ([a-z-]+): ", daemon.log_text()) if match in DAILY_JOBS)
        assert ran == {"payment-reminders": 1, "auto-cancel": 1, "retention": 1, "owner-digest": 2}
        assert Counter(log.name for log in job_store.JobLog.select()) == {
            "payment-reminders": 1, "auto-cancel": 1, "retention": 1}
        reminded = Counter(e.order.number for e in Event.select(Event, Order).join(Order)
                           .where(Event.kind == "payment_reminder"))
        assert reminded == {number: 1 for number in daily["remind"]}
        cancelled = Counter(e.order.number for e in Event.select(Event, Order).join(Order)
                            .where(Event.kind == "cancelled"))
        assert cancelled == {number: 1 for number in daily["cancel"]}
        assert all(Order.get(Order.number == n).status & CANCELLED for n in daily["cancel"])
        assert not Order.select().where(Order.number.in_(daily["delete"])).exists()
        assert runs["payment-reminders"].last_due_at == jobs_due.replace(tzinfo=None)
        assert runs["owner-digest"].last_due_at == digest_at.replace(tzinfo=None)
    finally:
        codes = [daemon.stop() for daemon in daemons]
        store.close()
    assert codes == [0, 0, 0]
    for daemon in daemons:
        assert "Traceback" not in daemon.log_text(), daemon.log


# ---- the smarthost away, two daemons sending ----------------------------------------------------------

def test_a_smarthost_outage_with_two_daemons_sending(private_pg, tmp_path):  # noqa: F811
    port = free_port()                      # nothing listens there yet
    settings = shop_settings(private_pg.url, tmp_path)
    store = open_store(private_pg.url)
    numbers = [str(8000 + n) for n in range(30)]
    for number in numbers:
        orders.create_order(store, settings, sample_order(number, customer={
            "name": f"Kunde {number}", "email": f"k{number}@example.org"}), quiet=True)
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        daemons.append(Daemon(tmp_path / name, private_pg.url, inbound_extra="workers = 1\n",
                              outbound_extra=smarthost(port)))
    start_together(daemons)
    sink = None
    try:
        for wave in range(3):                # queued over a few seconds: both daemons' workers find some
            for number in numbers[wave * 10:(wave + 1) * 10]:
                orders.add_message(store, settings, number, Content(text=f"Bestellung {number} ist unterwegs."))
            time.sleep(2)
        messages = OutboxMessage.select().where(OutboxMessage.kind == "message")
        queued = {row.message_id for row in messages}
        assert len(queued) == 30
        # away for several retry periods (1, 2, 4 s: three attempts each) ...
        wait_until(lambda: min(row.attempts for row in messages.clone()) >= 3, 90)
        # ... then back, answering 451 to the first ten
        sink = started_sink(port, refuse=10)
        wait_until(lambda: all(row.state == "sent" for row in messages.clone()), 180)
        assert sink.data_script == []                                   # the ten 451s were given
        assert Counter(sink.message_ids()) == Counter({message_id: 1 for message_id in queued})
        for daemon in daemons:               # both daemons were trying to send them
            assert re.search(r"outbox \d+: (cannot reach|451)", daemon.log_text()), daemon.log
    finally:
        codes = [daemon.stop() for daemon in daemons]
        store.close()
        if sink is not None:
            sink.stop()
    assert codes == [0, 0]
    for daemon in daemons:
        assert "Traceback" not in daemon.log_text(), daemon.log
