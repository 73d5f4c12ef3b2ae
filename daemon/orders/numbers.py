"""Order numbers are one regardless of case: `demo-1` and `DEMO-1` name the same order.

The owner types numbers in commands, customers in subjects, shops send them
by the API — each in its own case. So every lookup folds case (an index on
lower(number) serves it on both databases) and a new number that differs
from an existing one only by case is refused, by the domain service and, where
the index is unique, by the database too.

A database from before this rule may hold such a pair. Then the index is an
ordinary one and the pair is reported (`ordermail check`, the daemon's
start) rather than the upgrade failing: each of the two is still found by its
exact spelling, any other spelling is refused as ambiguous, and once the
owner has deleted one of them the next start makes the index unique.
"""
from __future__ import annotations

import peewee as pw

from daemon.errors import OrderNotFound, Refused
from daemon.store.models import Order

UNIQUE_INDEX = "orders_number_folded_unique"
PLAIN_INDEX = "orders_number_folded"   # while numbers that differ only by case exist
SHOWN_CLASHES = 10


def matching(number: str):
    """The condition `number` names an order by, whatever its case."""
    return pw.fn.LOWER(Order.number) == folded(number)


def folded(number: str) -> str:
    """`number` as lower(number) gives it for a stored one.

    Only ASCII folds: numbers are ASCII (order_json.NUMBER_RE), and SQLite's
    lower() folds nothing else, so Python's wider folding ("K", the Kelvin
    sign, is "k") must not find an order SQLite would not.
    """
    return number.lower() if number.isascii() else "\x00"      # \x00: no number holds it


def pick(number: str, found: list[Order]) -> Order:
    """The one order of `found` (rows matching `number`) it names; the exact spelling wins a clash."""
    if len(found) == 1:
        return found[0]
    exact = [order for order in found if order.number == number]
    if exact:
        return exact[0]
    if not found:
        raise OrderNotFound(number)
    spelled = " and ".join(sorted(order.number for order in found))
    raise Refused(f"order numbers {spelled} differ only by case; write the number exactly as it is")


def taken_as(number: str) -> str | None:
    """The existing number that `number` would clash with, or None."""
    row = Order.select(Order.number).where(matching(number)).first()
    return row.number if row else None


def clashes(db: pw.Database) -> list[list[str]]:
    """Groups of numbers that differ only by case (at most SHOWN_CLASHES + 1 groups)."""
    rows = db.execute_sql("SELECT lower(number) FROM orders GROUP BY lower(number) HAVING count(*) > 1 "
                          f"ORDER BY 1 LIMIT {SHOWN_CLASHES + 1}").fetchall()
    groups = []
    for (folded,) in rows:
        numbers = db.execute_sql("SELECT number FROM orders WHERE lower(number) = %s ORDER BY number"
                                 .replace("%s", db.param), (folded,)).fetchall()
        groups.append([number for (number,) in numbers])
    return groups


def settle_index(db: pw.Database) -> list[list[str]]:
    """Make lower(number) unique where no clash is left; else keep an ordinary index.
    Returns the clashes found (none once the index is unique)."""
    if any(index.name == UNIQUE_INDEX for index in db.get_indexes("orders")):
        return []
    found = clashes(db)
    if not found:
        try:
            with db.atomic():       # a savepoint: a clash made meanwhile must not end the caller's transaction
                db.execute_sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {UNIQUE_INDEX} ON orders (lower(number))")
        except pw.IntegrityError:
            found = clashes(db)
        else:
            db.execute_sql(f"DROP INDEX IF EXISTS {PLAIN_INDEX}")
            return []
    db.execute_sql(f"CREATE INDEX IF NOT EXISTS {PLAIN_INDEX} ON orders (lower(number))")
    return found


def clash_warning(found: list[list[str]]) -> str:
    """One line naming the clashes, for `ordermail check` and the daemon's log."""
    shown = "; ".join(" and ".join(group) for group in found[:SHOWN_CLASHES])
    more = " and more" if len(found) > SHOWN_CLASHES else ""
    return (f"order numbers that differ only by case: {shown}{more}. Commands find each by its exact "
            "spelling only; delete one of each pair ('delete NUMBER confirm') and restart, and numbers "
            "are unique regardless of case again")
