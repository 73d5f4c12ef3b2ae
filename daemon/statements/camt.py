"""CAMT statements (ISO 20022 XML): camt.053, and camt.052/.054 built the same way.

Every version (camt.053.001.02 … .13) is read by element names, whatever
the namespace: the parts used here (Ntry with Amt, CdtDbtInd, Sts,
BookgDt, AcctSvcrRef, NtryDtls/TxDtls with Refs, RltdPties, RmtInf) kept
their names; where a later version nests a value deeper (Sts/Cd, Dbtr/Pty/Nm)
both places are tried.

A batch entry (one Ntry, several TxDtls with their own amounts) is one
credit per TxDtls. The XML is read as a stream with defusedxml (no DTD, no
entities, nothing fetched), each Ntry dropped once read: memory stays flat
however many entries a statement holds.
"""
from __future__ import annotations

import datetime as dt
import functools
import io
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from daemon.errors import InputError
from daemon.statements.entries import (Entry, Identities, Statement, clean_text, parse_currency,
                                       parse_decimal, reference_or_empty)

MESSAGES = {"BkToCstmrStmt": "camt.053", "BkToCstmrAcctRpt": "camt.052",
            "BkToCstmrDbtCdtNtfctn": "camt.054"}
REPORTS = frozenset({"Stmt", "Rpt", "Ntfctn"})


def read(data: bytes, name: str) -> Statement:
    """All entries of a CAMT document; InputError if it is not one, or broken."""
    reader = _Reader(name)
    try:
        for event, element in iterparse(io.BytesIO(data), events=("start", "end"), forbid_dtd=True):
            reader.take(event, element)
    except ParseError as exc:
        raise InputError(f"{name}: not well-formed XML ({exc})") from None
    except DefusedXmlException as exc:
        raise InputError(f"{name}: XML with a DTD or entities is refused ({type(exc).__name__})") from None
    if reader.message is None:
        raise InputError(f"{name}: XML, but no bank statement (expected a CAMT document, found <{reader.root}>)")
    return Statement(reader.message, tuple(reader.entries))


class _Reader:
    """Follows the stream of elements; keeps the account and the entries."""

    def __init__(self, name: str):
        self.name = name
        self.path: list[str] = []
        self.root = ""
        self.message: str | None = None
        self.account = ""
        self.entries: list[Entry] = []
        self.identities = Identities("camt")

    def take(self, event: str, element: Element) -> None:
        tag = _local(element.tag)
        if event == "start":
            self._enter(tag)
            return
        self.path.pop()
        if tag == "Acct" and self.path and self.path[-1] in REPORTS:
            self.account = _text(element, "Id/IBAN") or _text(element, "Id/Othr/Id")
        elif tag == "Ntry" and self.message:
            self.entries.extend(self._entries(element, len(self.entries) + 1))
            element.clear()

    def _enter(self, tag: str) -> None:
        if not self.path:
            self.root = tag
        elif len(self.path) == 1 and self.root == "Document":
            self.message = MESSAGES.get(tag)
            if self.message is None:
                self.root = tag
        self.path.append(tag)

    def _entries(self, ntry: Element, position: int) -> list[Entry]:
        where = f"{self.name}: entry {position}"
        details = ntry.findall("{*}NtryDtls/{*}TxDtls")
        own_amounts = len(details) > 1 and all(_amount_element(tx) is not None for tx in details)
        if not own_amounts:
            return [self._entry(ntry, details[0] if details else None, ntry, 0, where)]
        return [self._entry(ntry, tx, tx, index, f"{where}, transaction {index + 1}")
                for index, tx in enumerate(details)]

    def _entry(self, ntry: Element, tx: Element | None, amount_of: Element, index: int, where: str) -> Entry:
        amount_element = ntry.find("{*}Amt") if amount_of is ntry else _amount_element(amount_of)
        if amount_element is None:
            raise InputError(f"{where}: no amount")
        amount = parse_decimal(amount_element.text or "", where)
        currency = parse_currency(amount_element.get("Ccy"), f"{where}, currency")
        indicator = (tx is not None and _text(tx, "CdtDbtInd")) or _text(ntry, "CdtDbtInd")
        reversal = _text(ntry, "RvslInd").lower() == "true"
        status = _text(ntry, "Sts/Cd") or _text(ntry, "Sts")
        texts = _Texts(ntry, tx)
        bank_ref = (tx is not None and _text(tx, "Refs/AcctSvcrRef")) or _text(ntry, "AcctSvcrRef")
        if bank_ref:
            key = self.identities.by_reference(self.account, _text(ntry, "AcctSvcrRef"), bank_ref, index)
        else:
            key = self.identities.by_content(self.account, texts.booked_on, amount, currency, indicator,
                                             reversal, texts.end_to_end_id, texts.remittance, texts.payer)
        return Entry(
            key=key, credit=indicator == "CRDT" and not reversal and amount > 0,
            booked=status in ("BOOK", ""), amount=abs(amount), currency=currency,
            booked_on=texts.booked_on, payer=texts.payer, remittance=texts.remittance,
            reference=reference_or_empty(bank_ref or _text(ntry, "NtryRef") or texts.end_to_end_id),
            end_to_end_id=texts.end_to_end_id, search_texts=texts.search_texts())


class _Texts:
    """What a payer wrote with a transfer, and who paid."""

    def __init__(self, ntry: Element, tx: Element | None):
        self.unstructured = [] if tx is None else [u.text or "" for u in tx.findall("{*}RmtInf/{*}Ustrd")]
        self.structured = [] if tx is None else [r.text or "" for r in
                                                 tx.findall("{*}RmtInf/{*}Strd/{*}CdtrRefInf/{*}Ref")]
        self.end_to_end_id = reference_or_empty(tx is not None and _text(tx, "Refs/EndToEndId") or "")
        self.additional = _text(tx, "AddtlTxInf") if tx is not None else ""
        if not (self.unstructured or self.structured or self.additional):
            self.additional = _text(ntry, "AddtlNtryInf")   # some banks put the whole text there
        self.payer = clean_text(_payer(tx), 200) if tx is not None else ""
        self.booked_on = _date(ntry)

    @property
    def remittance(self) -> str:
        return clean_text(" ".join([*self.structured, "".join(self.unstructured), self.additional]))

    def search_texts(self) -> tuple[str, ...]:
        # Banks cut long texts into lines anywhere, in a word or between two:
        # the lines are searched joined both without and with a space.
        extra = " ".join([*self.structured, self.end_to_end_id, self.additional])
        joined = {clean_text(f"{glue.join(self.unstructured)} {extra}") for glue in ("", " ")}
        return tuple(sorted(joined))


def _payer(tx: Element) -> str:
    for path in ("RltdPties/Dbtr/Nm", "RltdPties/Dbtr/Pty/Nm", "RltdPties/UltmtDbtr/Nm",
                 "RltdPties/UltmtDbtr/Pty/Nm"):
        name = _text(tx, path)
        if name:
            return name
    return ""


def _date(ntry: Element) -> dt.date | None:
    for path in ("BookgDt/Dt", "BookgDt/DtTm", "ValDt/Dt", "ValDt/DtTm"):
        value = _text(ntry, path)
        if value:
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                return None
    return None


def _amount_element(tx: Element) -> Element | None:
    found = tx.find("{*}Amt")
    return found if found is not None else tx.find("{*}AmtDtls/{*}TxAmt/{*}Amt")


def _text(element: Element, path: str) -> str:
    found = element.find(_any_namespace(path))
    return (found.text or "").strip() if found is not None else ""


@functools.lru_cache(maxsize=None)
def _any_namespace(path: str) -> str:
    return "/".join(f"{{*}}{step}" for step in path.split("/"))


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
