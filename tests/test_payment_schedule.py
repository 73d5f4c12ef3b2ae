"""The schedule for unpaid orders and retention, run as the owner runs it:
`ordermail jobs run NAME --now ISO`, on both databases, mails read from the maildir.

Orders are placed through the domain service at fixed times (noon UTC, so
the calendar day is the same in any zone the machine may be in); the jobs
run through the real command with `--now`.
"""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from conftest import ROOT, sample_order
from daemon import jobs
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.store import job_runs as job_store
from daemon.mail.addresses import token_address
from daemon.orders.service import Content, Via
from daemon.store.models import Event, InboundMessage, InboundRaw, Order, OutboxMessage
from daemon.store.database import open_store
from mailbuilder import mail
from payment_shop import inline_images, load, outbox_mails, scan, text_of, write_config
from test_girocode import EPC_1042

T0 = dt.datetime(2026, 3, 2, 12, 0)       # a Monday, noon UTC


def at(days: float) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


@pytest.fixture
def shop(settings, tmp_path):
    return write_config(settings, tmp_path)


@pytest.fixture
def run(ordermail, shop):
    """`ordermail jobs run NAME --now WHEN --format json`: what the run did."""
    def run_job(name: str, when: dt.datetime) -> dict:
        result = ordermail("jobs", "run", name, "--now", when.isoformat() + "Z", "--format", "json", config=shop)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["done"]
    return run_job


@pytest.fixture
def place(store, shop):
    """Place an order at a time (days after T0), as the shop's webhook would."""
    settings = load(shop)

    def place_order(number: str, days: float = 0, **change) -> Order:
        data = sample_order(number, customer={"name": "Erika Mustermann", "email": f"c{number}@example.org"}, **change)
        return orders.create_order(store, settings, data, now=at(days))
    place_order.settings = settings
    return place_order


def events(number: str, kind: str) -> list[Event]:
    return list(Event.select().join(Order).where((Order.number == number) & (Event.kind == kind)))


def mails_about(settings, number: str) -> list:
    return [m for m in outbox_mails(settings) if m["X-Ordermail-Order"] == number]


# ---- payment-reminders -------------------------------------------------------------------

def test_an_unpaid_order_is_reminded_once_on_the_seventh_day(run, place, ordermail, shop):
    place("1042")
    assert run("payment-reminders", at(6)) == {}
    assert run("payment-reminders", at(7)) == {"reminded": ["1042"]}
    assert run("payment-reminders", at(7)) == {}          # the same run again
    assert run("payment-reminders", at(8)) == {}          # the next day
    shown = json.loads(ordermail("order", "show", "1042", "--format", "json", config=shop).stdout)
    reminder, = [e for e in shown["events"] if e["kind"] == "payment_reminder"]
    assert (reminder["visibility"], reminder["author"], reminder["notified"]) == ("public", "system", True)
    run("outbox-retry", at(7))
    mail_, = [m for m in mails_about(place.settings, "1042") if m["Subject"].startswith("Erinnerung")]
    assert mail_["Subject"] == "Erinnerung: Bestellung 1042 ist noch nicht bezahlt"
    text = text_of(mail_)
    # placed 2 March, cancelled after 21 days: the customer may pay until 22 March
    assert "Geht bis zum 22. März 2026 keine Zahlung ein, stornieren wir die Bestellung." in text
    assert "Verwendungszweck: 1042" in text
    png, = inline_images(mail_).values()
    assert scan(png) == [EPC_1042]


def test_who_is_reminded_and_who_is_not(run, place, store):
    settings = place.settings
    place("1042")                                   # bank transfer, unpaid: reminded after 7 days
    place("1043")
    orders.mark_paid(store, settings, "1043", via=Via(now=at(3)))
    place("1044")
    orders.mark_cancelled(store, settings, "1044", via=Via(now=at(3)))
    place("1045", payment_method="paypal")          # remind_after_days 0: never
    place("1046")
    Order.update(on_payment_schedule=False).where(Order.number == "1046").execute()   # from before the feature
    place("1047", payment_method="invoice")         # shipped on account, unpaid: reminded after 14 days
    orders.mark_shipped(store, settings, "1047", via=Via(now=at(1)))
    assert run("payment-reminders", at(13)) == {"reminded": ["1042"]}
    assert run("payment-reminders", at(14)) == {"reminded": ["1047"]}
    assert run("payment-reminders", at(400)) == {}
    run("outbox-retry", at(14))
    invoice = next(m for m in mails_about(settings, "1047") if m["Subject"].startswith("Erinnerung"))
    assert inline_images(invoice) == {} and "Bitte zahlen Sie 24,90\xa0€ innerhalb von 14 Tagen." in text_of(invoice)
    assert "stornieren" not in text_of(invoice)     # the invoice method never cancels


def test_days_are_calendar_days_in_the_jobs_zone():
    from daemon.payments import schedule as payment_schedule
    from daemon.config import PaymentMethod
    from zoneinfo import ZoneInfo
    berlin = ZoneInfo("Europe/Berlin")
    method = PaymentMethod(remind_after_days=7, cancel_after_days=21)
    late = Order(created_at=dt.datetime(2026, 3, 1, 23, 30))     # 00:30 on 2 March in Berlin
    assert payment_schedule.remind_on(late, method, berlin) == dt.date(2026, 3, 9)
    assert payment_schedule.remind_on(late, method, ZoneInfo("UTC")) == dt.date(2026, 3, 8)
    assert payment_schedule.cancel_on(late, method, berlin) is None                    # not before a reminder
    assert payment_schedule.cancel_on(late, method, berlin, reminded_at=dt.datetime(2026, 3, 9, 5)) \
        == dt.date(2026, 3, 23)


# ---- auto-cancel -------------------------------------------------------------------------

def test_an_order_unpaid_after_21_days_is_cancelled_and_the_customer_told(run, place, ordermail, shop):
    place("1042")
    run("payment-reminders", at(7))
    assert run("auto-cancel", at(20)) == {}
    assert run("auto-cancel", at(21)) == {"cancelled": ["1042"]}
    assert run("auto-cancel", at(22)) == {}
    order = Order.get(Order.number == "1042")
    assert order.cancelled_at == at(21)
    cancelled, = events("1042", "cancelled")
    assert cancelled.author == "system" and cancelled.data["unpaid"] is True
    assert cancelled.body_text == "Bis zum 22. März 2026 ist keine Zahlung eingegangen."
    run("outbox-retry", at(21))
    told = next(m for m in mails_about(place.settings, "1042") if m["Subject"].endswith("wurde storniert"))
    text = text_of(told)
    assert "Grund: Bis zum 22. März 2026 ist keine Zahlung eingegangen." in text
    assert "Haben Sie inzwischen doch bezahlt? Dann antworten Sie bitte einfach auf diese E-Mail" in text
    assert inline_images(told) == {}
    listed = ordermail("orders", "list", "--filter", "cancelled", "--format", "json", config=shop)
    assert [o["number"] for o in json.loads(listed.stdout)["orders"]] == ["1042"]


def test_a_late_reminder_keeps_the_time_it_promises(run, place):
    place("1042")
    assert run("auto-cancel", at(30)) == {}             # never reminded (the daemon was down): not cancelled
    assert run("payment-reminders", at(30)) == {"reminded": ["1042"]}
    reminder, = events("1042", "payment_reminder")
    assert reminder.data == {"pay_by": "2026-04-14"}    # 1 April + (21 - 7) days, less one
    assert run("auto-cancel", at(43)) == {}
    assert run("auto-cancel", at(44)) == {"cancelled": ["1042"]}


def test_shipped_or_paid_orders_are_never_cancelled(run, place, store):
    settings = place.settings
    place("1042")
    orders.mark_shipped(store, settings, "1042", via=Via(now=at(2)))    # shipped before payment
    place("1043")
    run("payment-reminders", at(7))
    orders.mark_paid(store, settings, "1043", via=Via(now=at(20)))
    assert run("auto-cancel", at(60)) == {}
    assert Order.get(Order.number == "1042").cancelled_at is None
    assert Order.get(Order.number == "1043").cancelled_at is None


def test_a_payment_booked_a_moment_before_the_cancellation_wins(place, store):
    settings = place.settings
    place("1042")
    orders.mark_paid(store, settings, "1042", via=Via(author="system", now=at(21)))
    change = orders.cancel_unpaid(store, settings, "1042", reason="…", via=Via(author="system", now=at(21)))
    assert not change.done and "was paid" in change.summary
    assert events("1042", "cancelled") == [] and not Order.get(Order.number == "1042").cancelled_at


def test_two_daemons_running_the_reminders_at_once_send_one_each(place, shop):
    for n in range(12):
        place(str(2000 + n))
    argv = [sys.executable, "-m", "daemon.cli.main", "jobs", "run", "payment-reminders", "--now",
            at(7).isoformat(), "--format", "json", "--config", str(shop)]
    runs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    done = []
    for proc in runs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        done += json.loads(out)["done"].get("reminded", [])
    assert sorted(done) == [str(2000 + n) for n in range(12)]
    assert OutboxMessage.select().where(OutboxMessage.kind == "payment_reminder").count() == 12
    assert Event.select().where(Event.kind == "payment_reminder").count() == 12


# ---- retention -----------------------------------------------------------------------------

def test_cancelled_orders_are_deleted_for_good_after_a_quiet_month(run, place, store, ordermail, shop):
    settings = place.settings
    place("1042")
    orders.mark_cancelled(store, settings, "1042", via=Via(now=at(1)))
    place("1043")                                   # cancelled, but paid: the money must go back first
    orders.mark_paid(store, settings, "1043", via=Via(now=at(1)))
    orders.mark_cancelled(store, settings, "1043", via=Via(now=at(1)))
    place("1044")                                   # cancelled, then the customer wrote
    orders.mark_cancelled(store, settings, "1044", via=Via(now=at(1)))
    orders.add_event(store, settings, "1044", "customer_reply", Content(text="Doch noch liefern?"),
                     via=Via(author="customer", message_id="<r1044@example.org>", now=at(20)))
    place("1045")                                   # not cancelled: never deleted
    run("outbox-retry", at(1))
    assert run("retention", at(30)) == {}
    assert run("retention", at(31.1)) == {"deleted": ["1042"], "kept": ["1043"]}
    assert ordermail("order", "show", "1042", config=shop).returncode == 1
    orders.mark_refunded(store, settings, "1043", via=Via(now=at(32)))
    assert run("retention", at(50.1)) == {"deleted": ["1044"]}
    assert run("retention", at(62.1)) == {"kept": ["1043"]}     # the refund's mail is still to be sent
    run("outbox-retry", at(62.1))
    assert run("retention", at(62.2)) == {"deleted": ["1043"]}
    assert [o.number for o in Order.select()] == ["1045"]


def test_retention_off_deletes_nothing(run, place, store, settings, tmp_path, ordermail):
    shop = write_config(settings, tmp_path, delete_cancelled_after_days=0)
    shop.write_text(shop.read_text().replace("delete_cancelled_after_days = 30\n", ""))   # the default: 0
    place("1042")
    orders.mark_cancelled(store, place.settings, "1042", via=Via(now=at(1)))
    result = ordermail("jobs", "run", "retention", "--now", at(4000).isoformat(), "--config", str(shop))
    assert result.returncode == 0 and result.stdout.strip() == "retention: nothing to do"
    assert Order.select().count() == 1


def test_old_raw_mail_is_pruned_but_its_events_stay(run, place, store, ordermail, shop):
    settings = place.settings
    order = place("1042")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    address = token_address(settings, order, tokens.CUSTOMER_REPLY, now.date())
    for body in ("Wann kommt die Teekanne?", "Noch eine Frage."):
        delivered = ordermail("deliver", "--recipient", address, stdin=mail(to=address, body=body, sender="Erika Mustermann <c1042@example.org>"),
                              config=shop)
        assert delivered.returncode == 0, delivered.stderr
    first, second = InboundMessage.select().order_by(InboundMessage.id)
    InboundMessage.update(state="quarantined", reason="test: kept for the owner").where(
        InboundMessage.id == second.id).execute()
    later = now + dt.timedelta(days=91)
    # the reply's forward to the owner is still to be sent (with the original attached): kept
    assert run("retention", later) == {}
    run("outbox-retry", now + dt.timedelta(minutes=1))
    assert run("retention", later) == {"raw_pruned": 1}
    assert run("retention", later) == {}
    assert InboundRaw.select().count() == 1          # the quarantined one keeps its raw message
    assert [e.body_text.strip() for e in events("1042", "customer_reply")] == ["Wann kommt die Teekanne?",
                                                                               "Noch eine Frage."]
    shown = ordermail("inbound", "show", str(first.id), config=shop)
    assert shown.returncode == 0 and "Raw:      pruned on" in shown.stdout and "Order:    1042" in shown.stdout
    shown = json.loads(ordermail("inbound", "show", str(first.id), "--format", "json", config=shop).stdout)
    assert shown["raw"] is None and shown["state"] == "done" and shown["raw_pruned_at"]
    retried = ordermail("inbound", "retry", str(first.id), config=shop)
    assert retried.returncode == 1 and "its raw mail was pruned" in retried.stderr


# ---- the digest, catching up, several daemons ------------------------------------------------

def test_the_digest_names_what_the_jobs_did_since_the_last_digest(run, place, store):
    settings = place.settings
    place("1042")
    place("1043", days=-30)
    orders.mark_cancelled(store, settings, "1043", via=Via(now=at(-29)))
    run("outbox-retry", at(-29))
    run("payment-reminders", at(7))
    run("retention", at(7))
    run("owner-digest", at(7.5))
    run("payment-reminders", at(8))
    run("owner-digest", at(8.5))
    run("outbox-retry", at(8.5))
    first, second = [m for m in outbox_mails(settings) if m["To"].addresses[0].addr_spec == "owner@shop.example"]
    text = text_of(first)
    assert "Seit dem letzten Überblick erledigt:\n  Zahlungserinnerung verschickt (1): 1042\n" \
           "  Storniert und endgültig gelöscht (1): 1043\n" in text
    assert "Nicht bezahlt und nicht storniert (1)" in text
    assert "Seit dem letzten Überblick" not in text_of(second)       # nothing done since the first


def test_a_run_missed_while_down_is_caught_up_once_and_claimed_once(place, store):
    from zoneinfo import ZoneInfo
    settings, utc = place.settings, ZoneInfo("UTC")
    place("1042")
    jobs.catch_up(settings, store, at(0.5), utc)            # first start: nothing was missed
    ran = jobs.catch_up(settings, store, at(8), utc)        # down a week: one run of each
    assert ran == ["payment-reminders", "auto-cancel", "retention", "owner-digest"]
    assert len(events("1042", "payment_reminder")) == 1
    assert jobs.catch_up(settings, store, at(8) + dt.timedelta(minutes=1), utc) == []
    # a second daemon that starts at the same moment finds the due time claimed
    due = jobs.previous_due(jobs.find_job("auto-cancel"), settings, at(9), utc)
    assert job_store.claim("auto-cancel", due, at(9)) is True
    assert job_store.claim("auto-cancel", due, at(9), by="elsewhere:1") is False
    assert job_store.claim("auto-cancel", due + dt.timedelta(days=1), at(10), by="elsewhere:1") is True


def test_jobs_list_shows_the_new_jobs_at_the_shops_time(ordermail, shop):
    listed = json.loads(ordermail("jobs", "list", "--format", "json", config=shop).stdout)["jobs"]
    schedules = {j["name"]: j["schedule"] for j in listed}
    assert schedules == {"outbox-retry": "every 60 s", "payment-reminders": "daily at 06:00",
                         "auto-cancel": "daily at 06:00", "retention": "daily at 06:00",
                         "owner-digest": "daily at 07:00",
                         "paypal-ipn": "every 60 s"}


def test_orders_from_before_the_upgrade_are_left_to_the_owner(database_url, settings, tmp_path, ordermail):
    """Migration 0018 takes no existing order onto the schedule: no years-old customer is mailed."""
    from playhouse.migrations import Runner
    from daemon.store.database import MIGRATIONS_DIR, database_for_url
    db = database_for_url(database_url)
    Runner(db, str(MIGRATIONS_DIR)).up("0010_inbound_content_key")   # the release before the schedule
    db.execute_sql("INSERT INTO orders (number, customer_name, customer_email, customer_key, surname_key, total, "
                   "currency, payment_method, locale, status, created_at, updated_at, status_token, reply_secret, "
                   "email_bounce) VALUES ('0900', 'Old Customer', 'old@example.org', 'old customer', 'customer', "
                   "24.90, 'EUR', 'bank_transfer', 'de', 0, '2024-01-05 10:00:00', '2024-01-05 10:00:00', "
                   "'tok-old', 'secret', '')")
    db.close()
    shop = write_config(settings, tmp_path)
    store = open_store(database_url)      # migrates to the newest
    try:
        orders.create_order(store, load(shop), sample_order("1042"), now=at(0))
        for job in ("payment-reminders", "auto-cancel"):
            result = ordermail("jobs", "run", job, "--now", at(30).isoformat(), "--config", str(shop))
            assert result.returncode == 0, result.stderr
        assert [o.number for o in Order.select().where(Order.on_payment_schedule == True)] == ["1042"]  # noqa: E712
        assert Order.get(Order.number == "0900").status == 0 and events("0900", "payment_reminder") == []
        assert Order.get(Order.number == "1042").cancelled_at is None    # reminded at day 30, cancel later
        assert len(events("1042", "payment_reminder")) == 1
    finally:
        store.close()
