"""Scheduled jobs: the owner's digest, catching up a missed run once, and `ordermail outbox|jobs`.

Jobs are plain functions of (settings, store, now); the tests call them with
explicit times, and read the digest the way the owner gets it: rendered and
parsed strictly.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import email
import email.policy
import json
import threading
import time
from zoneinfo import ZoneInfo

import pytest

from conftest import sample_order
from daemon import jobs
from daemon.cli import mail as cli_mail
from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.store import job_runs as job_store
from daemon.errors import InputError, OrdermailError, Refused
from daemon.orders.service import Content, Via
from daemon.store.models import OutboxMessage

NOW = dt.datetime(2026, 11, 27, 6, 0)      # 07:00 in Berlin
BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")


def days_ago(n: float) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


def make(store, settings, number, *, created, name="Erika Mustermann"):
    orders.create_order(store, settings, sample_order(number, customer={"name": name, "email": f"c{number}@example.org"}),
                        now=created)


def digests() -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == "owner_digest").order_by(OutboxMessage.id))


def read(settings, row) -> tuple[email.message.EmailMessage, str]:
    parsed = email.message_from_bytes(notify.render(settings, row, NOW).raw, policy=email.policy.strict)
    return parsed, parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")


@pytest.fixture
def shop(store, settings):
    """Five orders: one to be paid, one to ship, one cancelled, one with an unanswered reply, one answered."""
    make(store, settings, "1001", created=days_ago(5))
    make(store, settings, "1002", created=days_ago(3), name="Max Muster")
    orders.mark_paid(store, settings, "1002", via=Via(now=days_ago(2)))
    make(store, settings, "1003", created=days_ago(9))
    orders.mark_cancelled(store, settings, "1003", via=Via(now=days_ago(8)))
    for number in ("1004", "1005"):
        make(store, settings, number, created=days_ago(10))
        orders.mark_paid(store, settings, number, via=Via(now=days_ago(9)))
        orders.mark_shipped(store, settings, number, via=Via(now=days_ago(8)))
        orders.add_event(store, settings, number, "customer_reply", Content(text="Wo bleibt mein Paket?"),
                         via=Via(author="customer", message_id=f"<q{number}@example.org>", now=days_ago(1)))
    orders.add_message(store, settings, "1005", Content(text="Es ist unterwegs."), via=Via(now=days_ago(0.5)))
    orders.add_note(store, settings, "1004", Content(text="Spediteur anrufen"), via=Via(now=days_ago(0.5)))
    return settings


# ---- the digest ------------------------------------------------------------------------

def test_the_digest_lists_what_needs_doing_with_links_to_the_dashboard(shop, store):
    result = jobs.run_job(shop, store, "owner-digest", NOW)
    assert result == "digest queued for 1 owner address(es): 1 unpaid, 1 to_ship, 1 unanswered"
    row, = digests()
    assert row.recipient == "owner@shop.example"
    parsed, text = read(shop, row)
    assert parsed["Subject"] == "Zu tun bei Teeladen: 3 Bestellungen (27. November 2026)"
    assert "Nicht bezahlt und nicht storniert (1)\n  1001  Erika Mustermann  24,90\u00a0€  seit 5 Tagen offen" in text
    assert "Bezahlt, noch nicht versandt (1)\n  1002  Max Muster  24,90\u00a0€  bezahlt am 25. November 2026" in text
    assert "Kundenantworten ohne Antwort (1)\n  1004  Erika Mustermann  24,90\u00a0€  Antwort vom 26. November 2026" in text
    assert "https://shop.example/status/admin?q=not%20paid%20and%20not%20cancelled" in text
    assert "https://shop.example/status/admin?q=paid%20and%20not%20shipped%20and%20not%20cancelled" in text
    assert "https://shop.example/status/admin?q=number%3A1004" in text
    assert "1003" not in text and "1005" not in text


def test_an_internal_note_is_no_answer_but_a_mailed_message_is(shop, store):
    assert [order_id for order_id, _ in jobs.unanswered_replies()] == [orders.find_order("1004").id]
    orders.add_message(store, shop, "1004", Content(text="Morgen."), via=Via(now=NOW))
    assert jobs.unanswered_replies() == []


def test_a_quiet_change_does_not_count_as_an_answer(shop, store):
    orders.mark_refunded(store, shop, "1004", via=Via(quiet=True, now=NOW))
    assert len(jobs.unanswered_replies()) == 1


def test_nothing_to_do_sends_no_digest(store, settings):
    make(store, settings, "1001", created=days_ago(3))
    orders.mark_cancelled(store, settings, "1001", via=Via(now=days_ago(2)))
    assert jobs.owner_digest(settings, store, NOW) == "nothing to do; no digest sent"
    assert digests() == []


def test_a_long_section_shows_the_first_rows_and_counts_the_rest(store, settings, monkeypatch):
    monkeypatch.setattr(jobs, "SECTION_ROWS", 2)
    for n in range(5):
        make(store, settings, str(1001 + n), created=days_ago(n + 1))
    jobs.owner_digest(settings, store, NOW)
    _, text = read(settings, digests()[0])
    assert "Nicht bezahlt und nicht storniert (5)" in text and "… und 3 weitere" in text
    assert text.count("seit ") == 2


def test_the_digest_is_in_the_shops_language(store, settings):
    settings = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, locale="en"))
    make(store, settings, "1001", created=days_ago(1))
    jobs.owner_digest(settings, store, NOW)
    parsed, text = read(settings, digests()[0])
    assert parsed["Subject"] == "To do at Teeladen: one order (November 27, 2026)"
    assert "Not paid and not cancelled (1)" in text and "open for one day" in text and "€24.90" in text


def test_no_owner_address_no_digest(store, settings):
    settings = dataclasses.replace(settings, owner=dataclasses.replace(settings.owner, addresses=()))
    make(store, settings, "1001", created=days_ago(1))
    assert jobs.owner_digest(settings, store, NOW).startswith("no [owner] addresses")


# ---- when the daily job is due, and catching up ---------------------------------------------

@pytest.mark.parametrize("now, due", [
    (dt.datetime(2026, 11, 27, 5, 30), dt.datetime(2026, 11, 26, 6, 0)),   # 06:30 Berlin: yesterday's 07:00
    (dt.datetime(2026, 11, 27, 6, 0), dt.datetime(2026, 11, 27, 6, 0)),    # exactly 07:00
    (dt.datetime(2026, 7, 1, 5, 30), dt.datetime(2026, 7, 1, 5, 0)),       # summer time: 07:00 is 05:00 UTC
])
def test_the_last_due_time_follows_the_local_clock(settings, now, due):
    assert jobs.previous_due(jobs.find_job("owner-digest"), settings, now, BERLIN) == due


def test_a_digest_switched_off_is_never_due(settings):
    settings = dataclasses.replace(settings, owner=dataclasses.replace(settings.owner, digest_time=""))
    assert jobs.previous_due(jobs.find_job("owner-digest"), settings, NOW, BERLIN) is None


def test_a_run_missed_while_down_is_caught_up_once(store, settings):
    make(store, settings, "1001", created=days_ago(20))
    start = dt.datetime(2026, 11, 20, 5, 0)
    assert jobs.catch_up(settings, store, start, BERLIN) == []         # first start: nothing was missed
    jobs.run_job(settings, store, "owner-digest", dt.datetime(2026, 11, 20, 6, 0))
    # down from the 20th until the 27th, 09:00 Berlin: seven digests missed, one is sent —
    # after the daily jobs it reports (they never ran here), in the order of the table
    back = dt.datetime(2026, 11, 27, 8, 0)
    assert jobs.catch_up(settings, store, back, BERLIN) == ["payment-reminders", "auto-cancel", "retention",
                                                            "owner-digest"]
    assert jobs.catch_up(settings, store, back + dt.timedelta(minutes=5), BERLIN) == []
    assert len(digests()) == 2
    assert job_store.runs()["owner-digest"].last_run_at == back


def test_no_catch_up_before_todays_time_when_yesterdays_ran(store, settings):
    make(store, settings, "1001", created=days_ago(20))
    job_store.bind(store)
    job_store.ensure(["owner-digest"], dt.datetime(2026, 11, 1))
    jobs.run_job(settings, store, "owner-digest", dt.datetime(2026, 11, 26, 6, 0))
    assert jobs.catch_up(settings, store, dt.datetime(2026, 11, 27, 5, 0), BERLIN) == []


def test_a_failing_job_is_recorded_with_its_error(store, settings, monkeypatch):
    def broken(settings, store, now):
        raise RuntimeError("disk full")
    monkeypatch.setattr(jobs, "JOBS", (jobs.Job("owner-digest", broken, daily_at=lambda s: "07:00", catch_up=True),))
    with pytest.raises(RuntimeError):
        jobs.run_job(settings, store, "owner-digest", NOW)
    row, = jobs.job_rows(settings, store, UTC)
    assert (row["last_status"], row["last_result"]) == ("error", "RuntimeError: disk full")


def test_an_unknown_job_is_a_usage_error(store, settings):
    with pytest.raises(InputError, match="no job 'digest' \\(jobs: outbox-retry, payment-reminders, auto-cancel, retention, owner-digest, paypal-ipn\\)"):
        jobs.run_job(settings, store, "digest", NOW)


def test_outbox_retry_sends_what_is_due(store, settings):
    orders.create_order(store, settings, sample_order(), now=NOW)
    assert jobs.run_job(settings, store, "outbox-retry", NOW) == "1 mail(s) sent"
    assert OutboxMessage.get().state == "sent"


def test_the_scheduler_starts_catches_up_and_stops(store, settings):
    scheduler = jobs.Scheduler(settings, store, tz=UTC)
    scheduler.start()
    try:
        assert {j.id for j in scheduler._scheduler.get_jobs()} == {"outbox-retry", "paypal-ipn", "daily"}
        deadline = time.monotonic() + 10
        job_store.bind(store)
        while len(job_store.runs()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert not scheduler._scheduler.running


def test_a_scheduler_stopped_right_after_its_start_leaves_no_traceback(store, settings, monkeypatch):
    """A daemon stopped within a second of its start (a test, systemd's stop after a failed
    start) raced APScheduler's removal of the catch-up job: JobLookupError in its thread."""
    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_type.__name__))
    for _ in range(20):          # before the fix, 9 in 10 of these failed
        scheduler = jobs.Scheduler(settings, store, tz=UTC)
        scheduler.start()
        scheduler.stop()
    assert failures == []


# ---- the command line ---------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise InputError(message)


def cli(store, settings, *argv) -> int:
    parser = Parser(prog="ordermail")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    cli_mail.add_parsers(sub, Parser(add_help=False), Parser)
    args = parser.parse_args(argv)
    handler = cli_mail.HANDLERS[(args.command, getattr(args, f"{args.command}_command"))]
    return handler(args, settings, store)


def test_outbox_list_shows_state_attempts_and_errors(store, settings, capsys):
    orders.create_order(store, settings, sample_order(), now=NOW)
    row = OutboxMessage.get()
    OutboxMessage.update(state="failed", attempts=3, last_error="550 5.1.1 user unknown").execute()
    assert cli(store, settings, "outbox", "list", "--format", "json") == 0
    listed, = json.loads(capsys.readouterr().out)["messages"]
    assert listed == {"id": row.id, "kind": "created", "recipient": "erika@example.org", "state": "failed",
                      "order": "1042", "message_id": row.message_id, "attempts": 3,
                      "created_at": "2026-11-27T06:00:00Z", "next_attempt_at": None, "sent_at": None,
                      "last_error": "550 5.1.1 user unknown"}
    assert cli(store, settings, "outbox", "list", "--state", "failed") == 0
    table = capsys.readouterr().out
    assert "failed" in table and "550 5.1.1 user unknown" in table and "erika@example.org" in table
    assert cli(store, settings, "outbox", "list", "--state", "sent") == 0
    assert capsys.readouterr().out.strip() == "no messages"


def test_outbox_retry_puts_a_failed_mail_back_and_refuses_a_sent_one(store, settings, capsys):
    orders.create_order(store, settings, sample_order(), now=NOW)
    row = OutboxMessage.get()
    OutboxMessage.update(state="failed").execute()
    assert cli(store, settings, "outbox", "retry", str(row.id)) == 0
    assert "will be sent again now" in capsys.readouterr().out
    assert OutboxMessage.get().state == "pending"
    OutboxMessage.update(state="sent", sent_at=NOW).execute()
    with pytest.raises(Refused):
        cli(store, settings, "outbox", "retry", str(row.id))
    with pytest.raises(OrdermailError, match="no outbox message 999"):
        cli(store, settings, "outbox", "retry", "999")


def test_jobs_run_takes_now_in_iso_8601_with_or_without_a_zone(store, settings, capsys):
    make(store, settings, "1001", created=days_ago(2))
    assert cli(store, settings, "jobs", "run", "owner-digest", "--now", "2026-11-27T07:00+01:00",
               "--format", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["now"] == "2026-11-27T06:00:00Z" and out["result"].startswith("digest queued")
    assert cli(store, settings, "jobs", "list", "--format", "json") == 0
    listed = {j["name"]: j for j in json.loads(capsys.readouterr().out)["jobs"]}
    assert listed["owner-digest"]["last_run_at"] == "2026-11-27T06:00:00+00:00"
    assert listed["owner-digest"]["schedule"] == "daily at 07:00"
    assert listed["outbox-retry"]["last_run_at"] is None
    with pytest.raises(InputError, match="not an ISO-8601 time"):
        cli(store, settings, "jobs", "run", "owner-digest", "--now", "tomorrow")
    assert cli(store, settings, "jobs", "list") == 0
    assert "owner-digest" in capsys.readouterr().out
