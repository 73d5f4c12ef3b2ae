"""One statement, one transaction: each new credit settled against the orders it names.

The file is read whole before anything is written (a file that does not
parse changes nothing). Then, in one transaction, credits imported before
(by `Entry.key`) are passed over, the orders named in the rest are found
with a few indexed queries, and each credit ends as one of:

- paid: the one order it names (or the several it names, paid together)
  has its amount and currency — marked paid by `orders.mark_paid`, author
  system, the bank's entry reference in the event's data, the customer told;
- already_paid: that order was paid before (by hand, or an earlier credit);
- amount_differs: one order of that currency is named, the amount is not
  its total — an internal event on the order, not paid;
- unmatched: no order named, only orders in another currency, or several
  orders none of which (nor all together) fit the amount.

Debits, reversals and entries not yet booked are passed over. Every credit
is remembered in statement_entry with its outcome, so the same statement,
or the next export overlapping it, changes nothing again. Imports run one at
a time (SQLite's one writer; a transaction lock on PostgreSQL).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from daemon import compiled, orders
from daemon.config import Settings
from daemon.orders import Content, Via
from daemon.statements import matching
from daemon.statements.entries import Entry, Statement
from daemon.statements.reading import read_statement
from daemon.store import StatementEntry, Store, utcnow

OUTCOMES = ("paid", "already_paid", "amount_differs", "unmatched")
IMPORT_LOCK = 0x6f72_6465_7273_7431      # pg_advisory_xact_lock: one statement import at a time
KEY_BATCH = 500


@dataclass(frozen=True)
class Outcome:
    kind: str                     # one of OUTCOMES
    entry: Entry
    orders: tuple[matching.OrderRow, ...] = ()
    detail: str = ""

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(row.number for row in self.orders)

    def json(self) -> dict:
        return {"orders": list(self.numbers), **self.entry.json(), "detail": self.detail}


@dataclass
class ImportResult:
    name: str
    format: str
    entries: int = 0
    credits: int = 0
    passed_over: int = 0          # debits, reversals, not booked
    imported_before: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)   # with `undoable`: what `undo` of a receipt puts back

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]


def import_statement(store: Store, settings: Settings, data: bytes, name: str, *, now=None,
                     preview: bool = False, undoable: bool = False) -> ImportResult:
    """Read `data` (InputError if it is no statement we read), then settle its new credits.

    `preview`: all of it in a transaction that is rolled back. `undoable`:
    each order's state before it was marked paid is kept in `changes`
    (owner_mail's undo puts it back; the credit stays imported).
    """
    statement = read_statement(data, name, settings.statements)
    now = now or utcnow()
    credits = [e for e in statement.entries if e.credit and e.booked]
    result = ImportResult(name, statement.format, len(statement.entries), len(credits),
                          len(statement.entries) - len(credits))
    with store.atomic() as transaction:
        if store.backend == "postgresql":
            store.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (IMPORT_LOCK,))
        fresh = _new_entries(credits)
        result.imported_before = len(credits) - len(fresh)
        settle = _Settler(store, settings, statement, fresh, now, result.changes if undoable else None)
        result.outcomes = [settle(entry) for entry in fresh]
        _remember(result.outcomes, statement.format, now)
        if preview:
            transaction.rollback()
    return result


def _new_entries(credits: list[Entry]) -> list[Entry]:
    """The credits not imported before (nor twice in this file, as a .zip of overlapping days may hold)."""
    keys = list(dict.fromkeys(e.key for e in credits))
    known = set()
    for start in range(0, len(keys), KEY_BATCH):
        chunk = keys[start:start + KEY_BATCH]
        known.update(k for (k,) in StatementEntry.select(StatementEntry.entry_key)
                     .where(StatementEntry.entry_key.in_(chunk)).tuples())
    fresh = []
    for entry in credits:
        if entry.key not in known:
            known.add(entry.key)
            fresh.append(entry)
    return fresh


class _Settler:
    """Settles credits one by one, the orders they name looked up for all of them at once."""

    def __init__(self, store: Store, settings: Settings, statement: Statement, entries: list[Entry], now,
                 changes: list | None):
        self.store, self.settings, self.statement, self.now = store, settings, statement, now
        self.changes = changes
        self.candidates = {e.key: [matching.candidates(text) for text in e.search_texts] for e in entries}
        keys = {c.key for found in self.candidates.values() for texts in found for c in texts}
        self.by_key = matching.find_orders(store, keys)
        self.paid_now: set[int] = set()

    def __call__(self, entry: Entry) -> Outcome:
        named = matching.named_orders(self.candidates[entry.key], self.by_key)
        if not named:
            return Outcome("unmatched", entry, (), "no order number found")
        same_currency = [o for o in named if o.currency == entry.currency]
        if not same_currency:
            other = named[0]
            return Outcome("unmatched", entry, tuple(named),
                           f"foreign currency: {entry.currency}, order {other.number} is in {other.currency}")
        exact = [o for o in same_currency if o.total == entry.amount]
        if len(exact) == 1:
            return self._pay(entry, exact)
        if len(exact) > 1:
            return Outcome("unmatched", entry, tuple(exact), "names several orders of this amount")
        if len(same_currency) > 1 and sum(o.total for o in same_currency) == entry.amount:
            return self._pay(entry, same_currency)
        if len(same_currency) == 1:
            return self._amount_differs(entry, same_currency[0])
        return Outcome("unmatched", entry, tuple(same_currency), "names several orders, none of this amount")

    def _pay(self, entry: Entry, rows: list[matching.OrderRow]) -> Outcome:
        done, summaries = [], []
        for row in rows:
            before = orders.snapshot(row.number) if self.changes is not None else None
            change = orders.mark_paid(self.store, self.settings, row.number, via=self._via(),
                                      data=self._data(entry, len(rows)))
            if change.done and before is not None:
                self.changes.append({"number": row.number, "event_id": change.event_id, "before": before})
            done.append(change.done)
            summaries.append(change.summary)
            self.paid_now.add(row.id)
        kind = "paid" if any(done) else "already_paid"
        detail = "; ".join(summaries) if not all(done) or any("(" in s for s in summaries) else ""
        return Outcome(kind, entry, tuple(rows), detail)

    def _amount_differs(self, entry: Entry, row: matching.OrderRow) -> Outcome:
        if row.paid_at is not None or row.id in self.paid_now:
            return Outcome("already_paid", entry, (row,), f"this credit is {entry.amount} {entry.currency}, "
                                                          f"the order's total {row.total} {row.currency}")
        detail = f"the order's total is {row.total} {row.currency}"
        text = (f"A bank transfer of {entry.amount} {entry.currency} names this order, whose total is "
                f"{row.total} {row.currency}; it was not marked paid.\n"
                f"Payer: {entry.payer or '-'}\nText: {entry.remittance or '-'}\nReference: {entry.reference or '-'}")
        orders.add_event(self.store, self.settings, row.number, "system",
                         Content(subject="Bank transfer: the amount differs", text=text),
                         via=self._via(), data=self._data(entry, 1) | {"amount_differs": True})
        return Outcome("amount_differs", entry, (row,), detail)

    def _via(self) -> Via:
        return Via(author="system", now=self.now)

    def _data(self, entry: Entry, orders_paid: int) -> dict:
        data = {"bank_statement": self.statement.format, **entry.json()}
        return data | {"orders_paid_together": orders_paid} if orders_paid > 1 else data


def _remember(outcomes: list[Outcome], source: str, now) -> None:
    """A statement_entry row per credit; one INSERT built once (compiled), run per row."""
    for o in outcomes:
        compiled.insert(StatementEntry, entry_key=o.entry.key, imported_at=now, source=source[:20],
                        booked_on=o.entry.booked_on, amount=o.entry.amount, currency=o.entry.currency,
                        reference=o.entry.reference[:200], payer=o.entry.payer[:200],
                        remittance=o.entry.remittance[:500], outcome=o.kind, detail=o.detail[:300],
                        order=o.orders[0].id if o.orders else None)
