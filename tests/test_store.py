"""The store: both backends, durable SQLite settings, schema upgrades."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from playhouse.migrations import Runner

from conftest import sample_order
from daemon.orders import service as orders
from daemon.errors import StoreTooNew
from daemon.store.models import Counter, InboundMessage, Order, load_raw
from daemon.store.database import MIGRATIONS_DIR, database_for_url, open_store

ROOT = Path(__file__).resolve().parents[1]


def test_sqlite_is_durable_and_concurrent(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/x.db")
    pragma = lambda name: store.db.execute_sql(f"PRAGMA {name}").fetchone()[0]
    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 2          # FULL
    assert pragma("busy_timeout") >= 5000
    assert pragma("foreign_keys") == 1
    store.close()


def test_only_replayable_work_commits_without_a_full_sync(tmp_path):
    """The worker processes' store skips the sync; everything else keeps it."""
    url = f"sqlite:///{tmp_path}/x.db"
    full, replayable = open_store(url), open_store(url, replayable=True)
    assert full.db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2
    assert replayable.db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1
    full.close()
    replayable.close()


def test_a_failing_nested_block_is_undone_alone_at_any_depth(store, settings):
    """Each nested atomic() is its own savepoint: a failure inside rolls back
    that block and what it nests, never the enclosing blocks or a sibling."""
    def rename(number, name):
        Order.update(customer_name=name).where(Order.number == number).execute()

    for number in ("1", "2", "3"):
        orders.create_order(store, settings, sample_order(number), quiet=True)
    with store.atomic():
        rename("1", "outer")
        with store.atomic():
            rename("2", "middle")
            with pytest.raises(RuntimeError), store.atomic():
                rename("3", "inner, undone")
                raise RuntimeError("inner block fails")
            with store.atomic():           # a sibling after the failure, at the same depth
                rename("3", "sibling")
        with pytest.raises(RuntimeError), store.atomic():
            rename("1", "undone too")
            with store.atomic():
                rename("2", "undone with its parent")
            raise RuntimeError("middle block fails")
    names = {o.number: o.customer_name for o in Order.select()}
    assert names == {"1": "outer", "2": "middle", "3": "sibling"}


def test_opening_twice_applies_nothing_twice(store, settings):
    applied, pending = store.schema_status()
    assert applied[0] == "0001_initial" and pending == []
    again = open_store(settings.database.url)
    assert again.schema_status() == (applied, [])


def test_an_old_database_is_upgraded_and_keeps_its_orders(settings):
    """A database left at the first schema by an older release opens and is migrated."""
    db = database_for_url(settings.database.url)
    db.connect()
    Runner(db, str(MIGRATIONS_DIR)).up(target="0001_initial")
    db.execute_sql("INSERT INTO orders (number, customer_name, customer_email, customer_key, surname_key,"
                   " total, currency, payment_method, locale, status, created_at, updated_at,"
                   " status_token, reply_secret) VALUES ('500', 'Old Customer', 'old@example.org',"
                   " 'old customer', 'customer', 9.5, 'EUR', 'bank_transfer', 'de', 0,"
                   " '2025-01-01 10:00:00', '2025-01-01 10:00:00', 'tok-old', 'sec-old')")
    db.close()
    store = open_store(settings.database.url)
    applied, pending = store.schema_status()
    assert len(applied) >= 2 and pending == []
    assert orders.find_order("500").customer_name == "Old Customer"
    store.close()


def test_a_database_from_a_newer_release_is_refused(store, settings):
    store.db.execute_sql("INSERT INTO schema_migration (name, applied) VALUES ('9999_future', '2030-01-01 00:00:00')")
    with pytest.raises(StoreTooNew, match="9999_future"):
        open_store(settings.database.url)


def test_both_backends_keep_money_exact(store, settings):
    orders.create_order(store, settings, sample_order(total="1234567.89", items=[
        {"name": "Gold", "quantity": 1, "unit_price": "1234567.89"}]))
    assert str(Order.get().total) == "1234567.89"


def test_mail_stored_before_0008_keeps_its_exact_bytes(settings):
    """Upgrading moves every received mail's bytes into inbound_raw, unchanged."""
    db = database_for_url(settings.database.url)
    db.connect()
    Runner(db, str(MIGRATIONS_DIR)).up(target="0007_bounce_flag")
    raw = b"From: a@example.org\r\nSubject: alt\r\n\r\n\xe4 byte \x00 and all\r\n"
    db.execute_sql(f"INSERT INTO inbound_message (received_at, channel, envelope_from, recipients, sha256,"
                   f" size, raw, state, reason, attempts, claimed_by) VALUES ('2026-01-01 10:00:00', 'smtp', '',"
                   f" '[]', 'x', {len(raw)}, {db.param}, 'done', '', 0, '')", (raw,))
    db.close()
    store = open_store(settings.database.url)
    [message] = InboundMessage.select()
    assert message.raw == raw and load_raw(message.id) == raw
    columns = [c.name for c in store.db.get_columns("inbound_message")]
    assert "raw" not in columns                         # the row no longer carries the bytes
    store.close()


def test_a_writer_in_another_process_is_waited_for_not_failed(tmp_path):
    """SQLite's one writer: a second process queues on the lock file and then commits."""
    url = f"sqlite:///{tmp_path}/x.db"
    store = open_store(url)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_WRITER, url], cwd=ROOT,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline() == b"holding\n"
    started = time.monotonic()
    with store.atomic(urgent=True):
        Counter.insert(name="mine", value=1).execute()
    waited = time.monotonic() - started
    assert holder.wait(10) == 0
    assert {c.name for c in Counter.select()} == {"theirs", "mine"}
    assert waited >= 0.5                                 # it queued behind the other transaction
    store.close()


HOLD_THE_WRITER = """
import sys, time
from daemon.store.models import Counter
from daemon.store.database import open_store
store = open_store(sys.argv[1])
with store.atomic():
    Counter.insert(name="theirs", value=1).execute()
    print("holding", flush=True)
    time.sleep(1.0)
"""


def test_a_writer_holding_the_lock_is_told_when_received_mail_waits(tmp_path):
    """A worker's long transaction ends early when the spool (urgent) queues behind it;
    a writer that is not urgent does not cut it short."""
    url = f"sqlite:///{tmp_path}/x.db"
    store = open_store(url)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_UNTIL_ASKED, url], cwd=ROOT,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline() == b"holding\n"
    with store.atomic():                                  # not urgent: waits its turn, unnoticed
        Counter.insert(name="background", value=1).execute()
    assert holder.stdout.readline() == b"not asked\n"
    assert holder.stdout.readline() == b"holding again\n"
    started = time.monotonic()
    with store.atomic(urgent=True):
        Counter.insert(name="mail", value=1).execute()
    waited = time.monotonic() - started
    assert holder.stdout.readline() == b"asked\n"
    assert holder.wait(10) == 0
    assert waited < 5                                     # the holder would have kept it for 10 s
    store.close()


HOLD_UNTIL_ASKED = """
import sys, time
from daemon.store.models import Counter
from daemon.store.database import open_store
store = open_store(sys.argv[1])

def hold(name, seconds, say):
    \"\"\"Hold the writer until an urgent writer waits, or `seconds`; say which.\"\"\"
    with store.atomic():
        Counter.insert(name=name, value=1).execute()
        print(say, flush=True)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not store.urgent_waiting():
            time.sleep(0.01)
        print("asked" if store.urgent_waiting() else "not asked", flush=True)

hold("first", 1.0, "holding")              # a non-urgent writer queues meanwhile
time.sleep(0.5)                            # the other writer's turn
hold("second", 10.0, "holding again")
"""


def test_a_thread_holding_the_writer_is_told_when_an_urgent_thread_waits(tmp_path):
    """The same within one process: the spool's thread queues at the gate, not the file."""
    store = open_store(f"sqlite:///{tmp_path}/x.db")
    told = threading.Event()
    with store.atomic():
        assert not store.urgent_waiting()
        urgent = threading.Thread(target=lambda: _insert_urgently(store))
        urgent.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not told.is_set():
            if store.urgent_waiting():
                told.set()
            time.sleep(0.01)
    urgent.join(10)
    assert told.is_set()
    assert not store.urgent_waiting()
    assert Counter.select().where(Counter.name == "urgent").exists()
    store.close()


def _insert_urgently(store):
    with store.atomic(urgent=True):
        Counter.insert(name="urgent", value=1).execute()
    store.db.close()



def test_no_text_column_takes_a_nul_character(store, settings):
    """PostgreSQL refuses text holding NUL; every text column drops them,
    whatever put them there."""
    from conftest import sample_order
    from daemon.orders import service as orders
    from daemon.orders.service import Content, Via
    orders.create_order(store, settings, sample_order())
    orders.add_event(store, settings, "1042", "note", Content(subject="Not\0iz", text="Lief\0erant A77"),
                     via=Via(author="owner", message_id="<n\0ote@shop.example>"))
    note = orders.order_events(orders.find_order("1042"))[-1]
    assert (note.subject, note.body_text, note.message_id) == ("Notiz", "Lieferant A77", "<note@shop.example>")
