"""Which orders a remittance text names.

The payer types the order number as they please, and the bank mangles it:
"Bestellung 1042", "best.nr.1042", "A-1042", "a 1042", "A1042", "DEMO 1",
the number cut in two by a line break ("10" / "42"). So the text is taken
apart into pieces, each a run of letters or a run of digits, and the
candidates are the pieces and runs of up to four adjacent pieces glued
together — across nothing, one of "-_/.", or white space. A candidate is
compared with the order number the same way folded (upper case, no '-' or
'_'), on an index of that folding (migration 0016), so a statement of
thousands of entries costs one query per few hundred candidates.

A digit run is never split: "1042" is not found in "10420" or "21042".
Where both a longer number and a part of it are orders ("A-1042" and
"1042"), the longer one wins when it was written as one word; across white
space ("A 1042") both stay, and the amount decides (importer.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from daemon.store.models import Order
from daemon.store.database import Store

# The folding of migration 0016's index, word for word: SQLite uses an
# index on an expression only for the same expression.
NUMBER_KEY_SQL = "upper(replace(replace(number, '-', ''), '_', ''))"
PIECE = re.compile(r"[A-Z]+|[0-9]+")
# A date written with dots ("vom 19.11.2026") is never an order number (those
# hold no dots), but its year would be a candidate and meet order 2026.
DOTTED_DATE = re.compile(r"(?<![0-9.])[0-9]{1,2}\.[0-9]{1,2}\.(?:[0-9]{4}|[0-9]{2})(?![0-9])")
WORD_JOINERS = frozenset({"", "-", "_", "/", "."})
MAX_PIECES = 4
MAX_NUMBER = 32
BATCH = 512          # candidates per query (far below either database's limit on parameters)


class Candidate(NamedTuple):
    key: str            # folded like NUMBER_KEY_SQL
    start: int          # first piece
    end: int            # after the last piece
    spaces: int         # joins across white space: the weaker the more


@dataclass(frozen=True, slots=True)
class OrderRow:
    id: int
    number: str
    total: object       # Decimal
    currency: str
    paid_at: object     # datetime or None


def fold(number: str) -> str:
    """An order number as NUMBER_KEY_SQL folds it."""
    return number.replace("-", "").replace("_", "").upper()


def candidates(text: str) -> list[Candidate]:
    text = DOTTED_DATE.sub(" ", text.upper())
    pieces = [(m.group(), m.start(), m.end()) for m in PIECE.finditer(text)]
    # how each piece joins the next: 0 within a word, 1 across white space, None not at all
    joins = [_join(text[end:start]) for (_, _, end), (_, start, _) in zip(pieces, pieces[1:])]
    found = []
    for first in range(len(pieces)):
        key, spaces, digit = "", 0, False
        for last in range(first, min(first + MAX_PIECES, len(pieces))):
            if last > first:
                if joins[last - 1] is None:
                    break
                spaces += joins[last - 1]
            piece = pieces[last][0]
            key += piece
            if len(key) > MAX_NUMBER:
                break
            digit = digit or piece[0].isdigit()
            if digit:                       # an order number holds a digit (order_json)
                found.append(Candidate(key, first, last + 1, spaces))
    return found


def _join(gap: str) -> int | None:
    if gap in WORD_JOINERS:
        return 0
    return 1 if gap.isspace() else None


def named_orders(texts_candidates: list[list[Candidate]], by_key: dict[str, list[OrderRow]]) -> list[OrderRow]:
    """The orders named in an entry's texts, a shorter number inside a longer
    one written as one word left out; in the order they were written."""
    named: dict[int, OrderRow] = {}
    for found in texts_candidates:
        hits = [c for c in found if c.key in by_key]
        words = [c for c in hits if c.spaces == 0]
        for hit in hits:
            if not any(_inside(hit, word) for word in words):
                for row in by_key[hit.key]:
                    named.setdefault(row.id, row)
    return list(named.values())


def _inside(part: Candidate, whole: Candidate) -> bool:
    return (whole.start <= part.start and part.end <= whole.end
            and (whole.end - whole.start) > (part.end - part.start))


def find_orders(store: Store, keys: set[str]) -> dict[str, list[OrderRow]]:
    """The orders whose folded number is one of `keys`, by key; one indexed query per BATCH keys."""
    found: dict[str, list[OrderRow]] = {}
    ordered = sorted(keys)
    total, paid_at = Order.total.python_value, Order.paid_at.python_value
    for start in range(0, len(ordered), BATCH):
        chunk = ordered[start:start + BATCH]
        cursor = store.db.execute_sql(match_sql(store, len(chunk)), chunk)
        for id_, number, amount, currency, paid in cursor.fetchall():
            found.setdefault(fold(number), []).append(OrderRow(id_, number, total(amount), currency, paid_at(paid)))
    return found


def match_sql(store: Store, size: int) -> str:
    """The query for `size` folded numbers (shown with its plan by bench/statement.py)."""
    marks = ", ".join([store.db.param] * size)
    return f"SELECT id, number, total, currency, paid_at FROM orders WHERE {NUMBER_KEY_SQL} IN ({marks})"
