"""MT940 statements (SWIFT), read with the `mt-940` package.

German banks write the :86: field structured: ?00 posting text, ?20-?29 the
remittance in 27-character pieces with SEPA keywords (EREF+ end-to-end id,
SVWZ+ the payer's text, KREF+, MREF+), ?32/?33 the payer. `mt-940` takes
those apart (processors.transaction_details_post_processor), joining the
pieces without a space, as the bank cut them anywhere. A bank also cuts
between two words, and "1042" at the end of one piece followed by "100 EUR"
would then read "1042100": so the pieces are searched a second time joined
with spaces, from the raw field this module keeps beside the parsed one.

Only a plain credit ("C") is a payment; a reversal ("RC", "RD") or a debit
is not. MT940 entries carry no reference of the bank's that is unique
everywhere, so their identity is what they say (`Identities.by_content`).
"""
from __future__ import annotations

import datetime as dt
import io
import re

import mt940

from daemon.errors import InputError
from daemon.payments.statements.entries import (Entry, Identities, Statement, clean_text, parse_currency,
                                       reference_or_empty)
from daemon.translations import Said

PIECE = re.compile(r"\?(2\d|6[0-3])([^?]*)")      # ?20-?29, ?60-?63: the remittance
RAW = "ordermail_raw_details"
OPTIONS = mt940.Options(strip_bom=True, unbounded_details=True, merge_keeps_values=True,
                        case_insensitive_marks=True, gvc_leading_text=True, applicant_iban=True)


def looks_like(text: str) -> bool:
    return bool(re.search(r"(?m)^:20:", text) and re.search(r"(?m)^:61:|^:60[FM]:", text))


def read(text: str, name: str) -> Statement:
    try:
        blocks = mt940.parse_statements(io.StringIO(text), processors=_PROCESSORS, options=OPTIONS)
    except Exception as exc:     # the package raises RuntimeError, ValueError, KeyError… on a broken field
        raise InputError(Said("%(name)s: not a readable MT940 statement (%(error)s)",
                              name=name, error=f"{type(exc).__name__}: {clean_text(str(exc), 120)}")) from None
    identities = Identities("mt940")
    entries = []
    for block in blocks:
        account = str(block.data.get("account_identification") or "")
        for position, transaction in enumerate(block, start=len(entries) + 1):
            entries.append(_entry(transaction.data, account, identities, Said("%(name)s: entry %(position)s", name=name, position=position)))
    return Statement("mt940", tuple(entries))


def _entry(data: dict, account: str, identities: Identities, where: str) -> Entry:
    amount = data.get("amount")
    if amount is None:
        raise InputError(Said("%(where)s: no amount", where=where))
    currency = parse_currency(getattr(amount, "currency", None) or data.get("currency"), Said("%(where)s, currency", where=where))
    raw = (data.get(RAW) or "").replace("\r", "")
    joined, spaced = _remittance(data.get("purpose"), raw)
    payer = clean_text(data.get("applicant_name") or "", 200)
    end_to_end = reference_or_empty(data.get("end_to_end_reference"))
    booked_on = data.get("entry_date") or data.get("date")
    bank_ref = reference_or_empty(data.get("bank_reference"))
    customer_ref = reference_or_empty(data.get("customer_reference"))
    status = str(data.get("status") or "").upper()
    key = identities.by_content(account, booked_on, amount.amount, currency, status, customer_ref, bank_ref,
                                clean_text(raw or joined, 2000))
    return Entry(key=key, credit=status == "C" and amount.amount > 0, booked=True,
                 amount=abs(amount.amount), currency=currency,
                 booked_on=booked_on if booked_on is None else _plain_date(booked_on),
                 reference=bank_ref or customer_ref or end_to_end, end_to_end_id=end_to_end,
                 payer=payer, remittance=clean_text(joined if data.get("purpose") else spaced),
                 search_texts=_search_texts((joined, spaced), end_to_end, customer_ref))


def _remittance(purpose: str | None, raw: str) -> tuple[str, str]:
    """The payer's text with the bank's line breaks taken out, and made spaces."""
    if purpose is None:      # an unstructured :86:: lines of free text
        return raw.replace("\n", ""), raw.replace("\n", " ")
    pieces = [text for _, text in PIECE.findall(raw.replace("\n", ""))]
    return purpose, " ".join(pieces) or purpose


def _search_texts(texts: tuple[str, str], *references: str) -> tuple[str, ...]:
    extra = " ".join(r for r in references if r)
    return tuple(sorted({clean_text(f"{text} {extra}") for text in texts} - {""}))


def _plain_date(value) -> dt.date:
    return dt.date(value.year, value.month, value.day)


def _keep_raw(transactions, tag, tag_dict, result):
    """A post-processor: the :86: field as written, before it is taken apart."""
    result[RAW] = tag_dict.get("transaction_details") or ""
    return result


_PROCESSORS = {"post_transaction_details": [_keep_raw, mt940.processors.transaction_details_post_processor]}
