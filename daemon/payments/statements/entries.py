"""The values every statement format is read into: a `Statement` of `Entry`s.

An entry's `key` is its identity at the bank, hashed: the bank's own
reference of the entry where the format has one (CAMT's AcctSvcrRef), else
what the entry says (account, day, amount, texts) and how many identical
entries came before it in the same file. Reading the same file again, or a
later export that overlaps it, gives the same keys.
"""
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from daemon.errors import InputError
from daemon.translations import Said

MAX_TEXT = 500                  # characters of a remittance text kept (and searched)
NO_REFERENCE = frozenset({"", "NOTPROVIDED", "NONREF", "NOTAVAILABLE", "NONE"})
CURRENCY_RE = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One booking of the statement, as the owner and the matcher need it."""
    key: str                      # SHA-256 hex of the entry's identity
    credit: bool                  # money in (a debit or a reversal is not a payment)
    booked: bool                  # booked, not pending or for information only
    amount: decimal.Decimal       # positive
    currency: str
    booked_on: dt.date | None
    reference: str                # the bank's reference of the entry, for the order's log
    end_to_end_id: str            # the payer's reference, where given
    payer: str
    remittance: str               # what the payer wrote, for the owner
    search_texts: tuple[str, ...]  # where order numbers are looked for (ways of joining the lines)

    def json(self) -> dict:
        return {"amount": str(self.amount), "currency": self.currency,
                "booked_on": self.booked_on.isoformat() if self.booked_on else None,
                "reference": self.reference, "end_to_end_id": self.end_to_end_id,
                "payer": self.payer, "remittance": self.remittance}


@dataclass(frozen=True)
class Statement:
    format: str                   # camt.053, mt940, csv, …
    entries: tuple[Entry, ...]

    def __add__(self, other: "Statement") -> "Statement":
        """Two files of one .zip: their entries, and their formats named once each."""
        formats = dict.fromkeys(f for s in (self, other) for f in s.format.split("+") if f)
        return Statement("+".join(formats), self.entries + other.entries)


class Identities:
    """Entry keys for one file: identical fallback identities are numbered."""

    def __init__(self, source: str):
        self.source = source
        self._seen: Counter = Counter()

    def by_reference(self, *parts) -> str:
        return _hash(self.source, "ref", *parts)

    def by_content(self, *parts) -> str:
        """For entries without a reference of the bank's: the nth identical one is n."""
        identity = tuple(str(p) for p in parts)
        occurrence = self._seen[identity]
        self._seen[identity] += 1
        return _hash(self.source, "content", *identity, occurrence)


def _hash(*parts) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def reference_or_empty(value: str | None) -> str:
    """A reference, or "" where the bank wrote a placeholder (NOTPROVIDED, NONREF)."""
    value = (value or "").strip()
    return "" if value.upper() in NO_REFERENCE else value[:200]


def clean_text(value: str | None, limit: int = MAX_TEXT) -> str:
    """One line of text, control characters and runs of spaces folded."""
    return " ".join((value or "").split())[:limit]


def parse_decimal(text: str, where: str) -> decimal.Decimal:
    try:
        amount = decimal.Decimal(text.strip())
    except (decimal.InvalidOperation, AttributeError):
        raise InputError(Said("%(where)s: %(text)s is not an amount", where=where, text=repr(text))) from None
    if not amount.is_finite() or abs(amount) >= 10**15:
        raise InputError(Said("%(where)s: %(text)s is not an amount", where=where, text=repr(text)))
    return amount


def parse_currency(text: str | None, where: str) -> str:
    code = (text or "").strip().upper()
    if not CURRENCY_RE.fullmatch(code):
        raise InputError(Said("%(where)s: %(text)s is not a currency code", where=where, text=repr(text)))
    return code
