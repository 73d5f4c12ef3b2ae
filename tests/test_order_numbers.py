"""Order numbers are one regardless of case, on both databases — and a database
that already holds `demo-1` beside `DEMO-1` still starts, names the pair, and
heals once one of them is gone."""
from __future__ import annotations

import pytest
from playhouse.migrations import Runner

from conftest import sample_order
from daemon.handling import commands
from daemon.orders import filters, numbers as order_numbers, service as orders
from daemon.errors import Refused
from daemon.orders.service import Via
from daemon.store.models import MODELS, Order, utcnow
from daemon.store.database import MIGRATIONS_DIR, open_store
from daemonproc import Daemon


def number_of(text: str) -> str:
    return orders.find_order(text).number


def test_a_number_that_differs_only_by_case_is_refused(store, settings, ordermail):
    orders.create_order(store, settings, sample_order("demo-1"))
    with pytest.raises(Refused, match=r"order DEMO-1 exists already \(as demo-1\)"):
        orders.create_order(store, settings, sample_order("DEMO-1"))
    result = ordermail("order", "create", "--json", "-", stdin=_json(sample_order("Demo-1")))
    assert result.returncode == 1 and result.stderr.strip() == "ordermail: order Demo-1 exists already (as demo-1)"
    assert [o.number for o in Order.select()] == ["demo-1"]


def test_commands_the_cli_and_filters_find_a_number_in_any_case(store, settings, ordermail):
    orders.create_order(store, settings, sample_order("demo-1"))
    [outcome] = commands.run_text(store, settings, "paid DEMO-1", via=Via())
    assert outcome.ok and outcome.text.startswith("demo-1 marked paid")
    assert number_of("#Demo-1") == "demo-1"
    assert [o.number for o in filters.find_orders("number:DEMO-1 and paid")] == ["demo-1"]
    shown = ordermail("order", "show", "DEMO-1")
    assert shown.returncode == 0 and "demo-1" in shown.stdout


# ---- a database from before the rule ---------------------------------------------------------

def _json(data: dict) -> str:
    import json
    return json.dumps(data)


def _database_with_a_clash(url: str) -> None:
    """A database at the schema before migration 0012, holding demo-1 and DEMO-1."""
    old = open_store(url, migrate=False)
    try:
        runner = Runner(old.db, str(MIGRATIONS_DIR))
        before = [m.name for m in runner.status() if m.idx < 12][-1]
        runner.up(target=before)
        old.db.bind(MODELS)
        # Only the columns of that schema: the model knows later ones (migration 0018 and on).
        columns = {c.name for c in old.db.get_columns("orders")} - {"id"}
        for number, email in (("demo-1", "erika@example.org"), ("DEMO-1", "max@example.org"), ("2001", "a@b.example")):
            row = Order(number=number, customer_name="Kundin", customer_email=email, customer_key="kundin",
                        surname_key="kundin", total="5.00", currency="EUR", payment_method="bank_transfer",
                        locale="de", created_at=utcnow(), updated_at=utcnow())
            names = sorted(columns)   # plain SQL: peewee's insert would add every default it knows
            old.db.execute_sql(f"INSERT INTO orders ({', '.join(names)}) VALUES ({', '.join([old.db.param] * len(names))})",
                               [Order._meta.fields[c].db_value(getattr(row, c)) for c in names])
    finally:
        old.close()


def test_an_existing_clash_is_reported_not_fatal_and_heals_once_resolved(settings, tmp_path, ordermail):
    url = settings.database.url
    _database_with_a_clash(url)
    store = open_store(url)                      # the upgrade runs and does not fail
    try:
        checked = ordermail("check")
        assert checked.returncode == 0, checked.stderr
        assert "order numbers that differ only by case: DEMO-1 and demo-1" in checked.stderr
        assert number_of("DEMO-1") == "DEMO-1" and number_of("demo-1") == "demo-1"   # exact spelling
        with pytest.raises(Refused, match="order numbers DEMO-1 and demo-1 differ only by case"):
            orders.find_order("Demo-1")
        with pytest.raises(Refused, match=r"order Demo-1 exists already \(as (demo|DEMO)-1\)"):
            orders.create_order(store, settings, sample_order("Demo-1"))      # no new clash
        [outcome] = commands.run_text(store, settings, "paid Demo-1", via=Via())
        assert not outcome.ok and "differ only by case" in outcome.text

        daemon = Daemon(tmp_path, url).start()  # the daemon starts, and says so in its log
        try:
            pass
        finally:
            assert daemon.stop() == 0
        assert "order numbers that differ only by case: DEMO-1 and demo-1" in daemon.log_text()

        orders.delete_order(store, "DEMO-1", confirm=True)
        assert "differ only by case" not in ordermail("check").stderr     # the next start makes it unique
        assert order_numbers.UNIQUE_INDEX in {index.name for index in store.db.get_indexes("orders")}
        assert number_of("DEMO-1") == "demo-1"
    finally:
        store.close()
