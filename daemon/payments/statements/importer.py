"""One statement, one transaction: each new credit settled against the orders it names.

The file is read whole before anything is written (a file that does not
parse changes nothing). Then, in one transaction, credits imported before
(by `Entry.key`) are passed over, the orders named in the rest are found
with a few indexed queries, and each credit ends as one of:

- paid: the one order it names (or the several it names, paid together)
  has its amount and currency — marked paid by `orders.mark_paid_many`
  (`mark_paid` for many orders at once: the same rules, events and mails),
  author system, the bank's entry reference in the event's data, the
  customer told;
- already_paid: that order was paid before (by hand, or an earlier credit);
- amount_differs: one order of that currency is named, the amount is not
  its total — an internal event on the order, not paid;
- unmatched: no order named, only orders in another currency, or several
  orders none of which (nor all together) fit the amount.

The credits go in batches of SETTLE_BATCH, in the file's order: the orders
they name are looked up together, each credit is decided, then the notes go
to the orders and the payments are booked, each in one call of the domain
service's batch form, and the credits are remembered with multi-row
INSERTs — a few statements per hundred credits instead of several each,
and the candidates of one batch in memory, not the whole file's.

Debits, reversals and entries not yet booked are passed over. Every credit
is remembered in statement_entry with its outcome, so the same statement,
or the next export overlapping it, changes nothing again. Imports run one at
a time (SQLite's one writer; a transaction lock on PostgreSQL).
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field

from daemon.orders import service as orders
from daemon.store import compiled
from daemon.config import Settings
from daemon.orders.service import Content, Via
from daemon.payments.statements import matching
from daemon.payments.statements.entries import Entry, Statement
from daemon.payments.statements.reading import read_statement
from daemon.store.models import StatementEntry, utcnow
from daemon.store.database import Store
from daemon.translations import Said, joined, say

OUTCOMES = ("paid", "already_paid", "amount_differs", "unmatched")
IMPORT_LOCK = 0x6f72_6465_7273_7431      # pg_advisory_xact_lock: one statement import at a time
SETTLE_BATCH = 1000
# SQLite's page cache while an import runs (its default is 2 MB): the paid
# orders are spread over the whole table, and with a small cache the pages
# they change are written out to the WAL mid-transaction and read back.
IMPORT_CACHE_KIB = 64 * 1024


@dataclass(frozen=True, slots=True)
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
    with _no_cycle_collection():
        statement = read_statement(data, name, settings.statements)
        return _import(store, settings, statement, name, now or utcnow(), preview, undoable)


def _import(store: Store, settings: Settings, statement: Statement, name: str, now, preview: bool,
            undoable: bool) -> ImportResult:
    credits = [e for e in statement.entries if e.credit and e.booked]
    result = ImportResult(name, statement.format, len(statement.entries), len(credits),
                          len(statement.entries) - len(credits))
    with _roomy_cache(store), store.atomic() as transaction:
        if store.backend == "postgresql":
            store.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (IMPORT_LOCK,))
        fresh = _new_entries(credits)
        result.imported_before = len(credits) - len(fresh)
        settler = _Settler(store, settings, statement, now, result.changes if undoable else None)
        for start in range(0, len(fresh), SETTLE_BATCH):
            outcomes = settler.settle(fresh[start:start + SETTLE_BATCH])
            _remember(outcomes, statement.format, now)
            result.outcomes.extend(outcomes)
        if preview:
            transaction.rollback()
    return result


@contextmanager
def _no_cycle_collection():
    """Python's cycle collector paused while a statement is imported. The
    import makes about a million objects (elements, entries, rows) and
    keeps most until it ends, so the collector's full passes over the heap,
    several per import, find nothing and cost 5-10 % of its time; what does
    become garbage is freed by reference counting all the same. Collection
    resumes after (if it was on: two imports at once end with it on)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


@contextmanager
def _roomy_cache(store: Store):
    """On SQLite, IMPORT_CACHE_KIB of page cache for the import, then the
    connection's own size again (SQLite frees the pages over it)."""
    if store.backend != "sqlite":
        yield
        return
    (before,) = store.db.execute_sql("PRAGMA cache_size").fetchone()
    store.db.execute_sql(f"PRAGMA cache_size = -{IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        store.db.execute_sql(f"PRAGMA cache_size = {int(before)}")


def _new_entries(credits: list[Entry]) -> list[Entry]:
    """The credits not imported before (nor twice in this file, as a .zip of overlapping days may hold)."""
    known = set()
    for chunk in compiled.padded(list(dict.fromkeys(e.key for e in credits))):
        known.update(key for (key,) in compiled.rows(
            StatementEntry, ("importer.known", len(chunk)), lambda: StatementEntry.select(StatementEntry.entry_key)
            .where(StatementEntry.entry_key.in_([""] * len(chunk))), *chunk))
    fresh = []
    for entry in credits:
        if entry.key not in known:
            known.add(entry.key)
            fresh.append(entry)
    return fresh


class _Settler:
    """Settles a statement's credits a batch at a time (`settle`): decides
    each, in the file's order, then books the batch (`_book`).

    A decision to pay or to note stands for what the domain service then
    does in its batch; an order a credit before paid (or is to pay) counts
    as paid."""

    def __init__(self, store: Store, settings: Settings, statement: Statement, now, changes: list | None):
        self.store, self.settings, self.statement, self.now = store, settings, statement, now
        self.changes = changes
        self.paying: set[int] = set()

    def settle(self, entries: list[Entry]) -> list[Outcome]:
        """The outcome of each credit; the orders they name looked up together."""
        candidates = [[matching.candidates(text) for text in e.search_texts] for e in entries]
        by_key = matching.find_orders(self.store, {c.key for found in candidates for texts in found for c in texts})
        return self._book([self._decide(entry, matching.named_orders(found, by_key))
                           for entry, found in zip(entries, candidates)])

    def _decide(self, entry: Entry, named: list[matching.OrderRow]) -> Outcome:
        if not named:
            return Outcome("unmatched", entry, (), Said("no order number found"))
        same_currency = [o for o in named if o.currency == entry.currency]
        if not same_currency:
            other = named[0]
            return Outcome("unmatched", entry, tuple(named),
                           Said("foreign currency: %(currency)s, order %(number)s is in %(other)s",
                                currency=entry.currency, number=other.number, other=other.currency))
        exact = [o for o in same_currency if o.total == entry.amount]
        if len(exact) == 1:
            return self._pay(entry, exact)
        if len(exact) > 1:
            return Outcome("unmatched", entry, tuple(exact), Said("names several orders of this amount"))
        if len(same_currency) > 1 and sum(o.total for o in same_currency) == entry.amount:
            return self._pay(entry, same_currency)
        if len(same_currency) == 1:
            return self._amount_differs(entry, same_currency[0])
        return Outcome("unmatched", entry, tuple(same_currency), Said("names several orders, none of this amount"))

    def _pay(self, entry: Entry, rows: list[matching.OrderRow]) -> Outcome:
        self.paying.update(row.id for row in rows)
        return Outcome("paid", entry, tuple(rows))            # booked by `_book`

    def _amount_differs(self, entry: Entry, row: matching.OrderRow) -> Outcome:
        if row.paid_at is not None or row.id in self.paying:
            return Outcome("already_paid", entry, (row,), Said(
                "this credit is %(amount)s %(currency)s, the order's total %(total)s %(other)s",
                amount=entry.amount, currency=entry.currency, total=row.total, other=row.currency))
        return Outcome("amount_differs", entry, (row,), Said("the order's total is %(total)s %(currency)s",
                                                             total=row.total, currency=row.currency))

    def _book(self, decided: list[Outcome]) -> list[Outcome]:
        """The notes, then the payments, each one batch of the domain service; the outcomes as booked.

        Notes first keeps each order's log in the file's order: a credit is
        noted only on an order no credit before it pays."""
        orders.add_events(self.store, self.settings, "system",
                          [self._note(o.entry, o.orders[0]) for o in decided if o.kind == "amount_differs"],
                          via=self._via())
        to_pay = [o for o in decided if o.kind == "paid"]
        booked = iter(orders.mark_paid_many(
            self.store, self.settings,
            [orders.PerOrder(row.number, self._data(o.entry, len(o.orders))) for o in to_pay for row in o.orders],
            via=self._via()))
        paid = {id(o): self._paid(o, [next(booked) for _ in o.orders]) for o in to_pay}
        return [paid.get(id(o), o) for o in decided]

    def _paid(self, outcome: Outcome, booked: list[orders.Change]) -> Outcome:
        if self.changes is not None:
            self.changes.extend({"number": c.number, "event_id": c.event_id, "before": c.before}
                                for c in booked if c.done)
        done, summaries = [c.done for c in booked], [c.summary for c in booked]
        kind = "paid" if any(done) else "already_paid"
        detail = joined(summaries, "; ") if not all(done) or any("(" in s for s in summaries) else ""
        return Outcome(kind, outcome.entry, outcome.orders, detail)

    def _note(self, entry: Entry, row: matching.OrderRow) -> orders.PerOrder:
        """An internal note for the owner, in the shop's language as it is written (the log keeps text, not msgids)."""
        text = Said("A bank transfer of %(amount)s %(currency)s names this order, whose total is "
                    "%(total)s %(other)s; it was not marked paid.\n"
                    "Payer: %(payer)s\nText: %(text)s\nReference: %(reference)s",
                    amount=entry.amount, currency=entry.currency, total=row.total, other=row.currency,
                    payer=entry.payer or "-", text=entry.remittance or "-", reference=entry.reference or "-")
        subject = Said("Bank transfer: the amount differs")
        return orders.PerOrder(row.number, self._data(entry, 1) | {"amount_differs": True},
                               Content(subject=self._said(subject), text=self._said(text)))

    def _said(self, text: Said) -> str:
        return say(text, self.settings.shop.locale, self.settings.outbound.templates_dir)

    def _via(self) -> Via:
        return Via(author="system", now=self.now)

    def _data(self, entry: Entry, orders_paid: int) -> dict:
        data = {"bank_statement": self.statement.format, **entry.json()}
        return data | {"orders_paid_together": orders_paid} if orders_paid > 1 else data


def _remember(outcomes: list[Outcome], source: str, now) -> None:
    """A statement_entry row per credit, a few dozen to an INSERT."""
    compiled.insert_many(StatementEntry, [
        {"entry_key": o.entry.key, "imported_at": now, "source": source[:20], "booked_on": o.entry.booked_on,
         "amount": o.entry.amount, "currency": o.entry.currency, "reference": o.entry.reference[:200],
         "payer": o.entry.payer[:200], "remittance": o.entry.remittance[:500], "outcome": o.kind,
         "detail": o.detail[:300], "order": o.orders[0].id if o.orders else None}
        for o in outcomes])
