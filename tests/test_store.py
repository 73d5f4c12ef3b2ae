"""The store: both backends, durable SQLite settings, schema upgrades."""
from __future__ import annotations

import pytest
from playhouse.migrations import Runner

from conftest import sample_order
from daemon import orders
from daemon.errors import StoreTooNew
from daemon.store import MIGRATIONS_DIR, Order, database_for_url, open_store


def test_sqlite_is_durable_and_concurrent(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/x.db")
    pragma = lambda name: store.db.execute_sql(f"PRAGMA {name}").fetchone()[0]
    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 2          # FULL
    assert pragma("busy_timeout") >= 5000
    assert pragma("foreign_keys") == 1
    store.close()


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
