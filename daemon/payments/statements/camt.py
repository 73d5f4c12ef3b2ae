"""CAMT statements (ISO 20022 XML): camt.053, and camt.052/.054 built the same way.

Every version (camt.053.001.02 … .13) is read by element names, whatever
the namespace: the parts used here (Ntry with Amt, CdtDbtInd, Sts,
BookgDt, AcctSvcrRef, NtryDtls/TxDtls with Refs, RltdPties, RmtInf) kept
their names; where a later version nests a value deeper (Sts/Cd, Dbtr/Pty/Nm)
both places are tried.

A batch entry (one Ntry, several TxDtls with their own amounts) is one
credit per TxDtls. The XML is streamed by lxml, which hands over only the
Ntry and Acct elements (the filter runs in C: a statement of 10,000 entries
reads in a fraction of a second), each Ntry dropped once read, so memory
stays flat. Nothing is fetched or expanded: no network, no external DTD,
entities left alone, and a document with a DOCTYPE is refused (no bank
writes one); libxml2's limits on depth and text size stay on.
"""
from __future__ import annotations

import datetime as dt
import io

from lxml import etree

from daemon.errors import InputError
from daemon.payments.statements.entries import (Entry, Identities, Statement, clean_text, parse_currency,
                                       parse_decimal, reference_or_empty)
from daemon.translations import Said

MESSAGES = {"BkToCstmrStmt": "camt.053", "BkToCstmrAcctRpt": "camt.052",
            "BkToCstmrDbtCdtNtfctn": "camt.054"}
REPORTS = frozenset({"Stmt", "Rpt", "Ntfctn"})


def read(data: bytes, name: str) -> Statement:
    """All entries of a CAMT document; InputError if it is not one, or broken."""
    reader = _Reader(name)
    stream = etree.iterparse(io.BytesIO(data), events=("end",), tag=("{*}Ntry", "{*}Acct"),
                             resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        for _event, element in stream:
            reader.take(element)
        reader.check(stream.root)
    except etree.XMLSyntaxError as exc:
        raise InputError(Said("%(name)s: not well-formed XML (%(error)s)",
                              name=name, error=clean_text(str(exc), 160))) from None
    return Statement(reader.message, tuple(reader.entries))


class _Reader:
    """Takes the Acct and Ntry elements as the stream ends them."""

    def __init__(self, name: str):
        self.name = name
        self.message = ""
        self.account = ""
        self.entries: list[Entry] = []
        self.read = 0                           # Ntry elements, for saying where a fault is
        self.identities = Identities("camt")
        self.steps: dict = {}                   # _Paths' walk, for this document's tags

    def take(self, element) -> None:
        if not self.message:
            self.check(element.getroottree().getroot())
        parent = element.getparent()
        if _local(element.tag) == "Acct":
            if parent is not None and _local(parent.tag) in REPORTS:
                self.account = _text(element, "Id/IBAN") or _text(element, "Id/Othr/Id")
            return
        self.read += 1
        self.entries.extend(self._entries(element, self.read))
        element.clear(keep_tail=True)          # read: let it go, and the entries before it
        while element.getprevious() is not None:
            del parent[0]

    def check(self, root) -> None:
        """A CAMT document: <Document> holding a statement, report or notification, no DOCTYPE."""
        if root is None:
            raise InputError(Said("%(name)s: an empty XML document", name=self.name))
        if root.getroottree().docinfo.doctype:
            raise InputError(Said("%(name)s: XML with a DOCTYPE is refused (a bank statement has none)", name=self.name))
        first = next((c for c in root if isinstance(c.tag, str)), None)
        self.message = MESSAGES.get(_local(first.tag)) if first is not None else None
        if _local(root.tag) != "Document" or self.message is None:
            found = _local(first.tag) if _local(root.tag) == "Document" and first is not None else _local(root.tag)
            raise InputError(Said("%(name)s: XML, but no bank statement (expected a CAMT document, found <%(found)s>)",
                                  name=self.name, found=found))

    def _entries(self, ntry, position: int) -> list[Entry]:
        where = Said("%(name)s: entry %(position)s", name=self.name, position=position)
        fields = _Paths(ntry, self.steps)
        details = [_Paths(tx, self.steps) for tx in _children(ntry, "NtryDtls", "TxDtls")]
        own_amounts = len(details) > 1 and all(tx.amount() is not None for tx in details)
        if not own_amounts:
            tx = details[0] if details else _Paths(None, self.steps)
            return [self._entry(fields, tx, fields.first("Amt"), 0, where)]
        return [self._entry(fields, tx, tx.amount(), index, Said("%(where)s, transaction %(index)s", where=where, index=index + 1))
                for index, tx in enumerate(details)]

    def _entry(self, ntry: "_Paths", tx: "_Paths", amount_element, index: int, where: str) -> Entry:
        if amount_element is None:
            raise InputError(Said("%(where)s: no amount", where=where))
        amount = parse_decimal(amount_element.text or "", where)
        currency = parse_currency(amount_element.get("Ccy"), Said("%(where)s, currency", where=where))
        indicator = tx.text("CdtDbtInd") or ntry.text("CdtDbtInd")
        reversal = ntry.text("RvslInd").lower() == "true"
        status = ntry.text("Sts/Cd") or ntry.text("Sts")
        texts = _Texts(ntry, tx)
        bank_ref = tx.text("Refs/AcctSvcrRef") or ntry.text("AcctSvcrRef")
        if bank_ref:
            key = self.identities.by_reference(self.account, ntry.text("AcctSvcrRef"), bank_ref, index)
        else:
            key = self.identities.by_content(self.account, texts.booked_on, amount, currency, indicator,
                                             reversal, texts.end_to_end_id, texts.remittance, texts.payer)
        return Entry(
            key=key, credit=indicator == "CRDT" and not reversal and amount > 0,
            booked=status in ("BOOK", ""), amount=abs(amount), currency=currency,
            booked_on=texts.booked_on, payer=texts.payer, remittance=texts.remittance,
            reference=reference_or_empty(bank_ref or ntry.text("NtryRef") or texts.end_to_end_id),
            end_to_end_id=texts.end_to_end_id, search_texts=texts.search_texts())


class _Texts:
    """What a payer wrote with a transfer, and who paid."""

    def __init__(self, ntry: "_Paths", tx: "_Paths"):
        self.unstructured = tx.texts("RmtInf/Ustrd")
        self.structured = tx.texts("RmtInf/Strd/CdtrRefInf/Ref")
        self.end_to_end_id = reference_or_empty(tx.text("Refs/EndToEndId"))
        self.additional = tx.text("AddtlTxInf")
        if not (self.unstructured or self.structured or self.additional):
            self.additional = ntry.text("AddtlNtryInf")   # some banks put the whole text there
        self.payer = clean_text(next(filter(None, map(tx.text, PAYER_PATHS)), ""), 200)
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


PAYER_PATHS = ("RltdPties/Dbtr/Nm", "RltdPties/Dbtr/Pty/Nm", "RltdPties/UltmtDbtr/Nm", "RltdPties/UltmtDbtr/Pty/Nm")


def _date(ntry: "_Paths") -> dt.date | None:
    for path in ("BookgDt/Dt", "BookgDt/DtTm", "ValDt/Dt", "ValDt/DtTm"):
        value = ntry.text(path)
        if value:
            try:
                return dt.date.fromisoformat(value[:10])
            except ValueError:
                return None
    return None


# The paths read below an Ntry or a TxDtls; other branches (BkTxCd, the
# accounts and agents of the parties, charges) are not walked at all.
READ = ("Amt", "AmtDtls/TxAmt/Amt", "CdtDbtInd", "RvslInd", "Sts/Cd", "BookgDt/Dt", "BookgDt/DtTm",
        "ValDt/Dt", "ValDt/DtTm", "AcctSvcrRef", "NtryRef", "AddtlNtryInf", "AddtlTxInf", "Refs/AcctSvcrRef",
        "Refs/EndToEndId", "RmtInf/Ustrd", "RmtInf/Strd/CdtrRefInf/Ref", *PAYER_PATHS)
WALKED = frozenset(path.rsplit("/", n)[0] for path in READ for n in range(path.count("/") + 1))
BRANCHES = frozenset(path.rsplit("/", 1)[0] for path in WALKED if "/" in path)


class _Paths:
    """An element's descendants by their path of local names ("RmtInf/Ustrd"),
    in document order: one walk over the branches in READ, then every lookup
    is a dict's (ElementPath with `{*}` wildcards took several times as long).

    `steps` remembers, for one document, where a child's tag leads from a
    path ("" nowhere): its few tags repeat in every entry."""

    def __init__(self, element, steps: dict):
        self.paths: dict[str, list] = {}
        self.steps = steps
        if element is not None:
            self._walk(element, "")

    def _walk(self, node, prefix: str) -> None:
        for child in node:
            step = self.steps.get((prefix, child.tag))
            if step is None:
                step = self.steps[prefix, child.tag] = _step(prefix, child.tag)
            if step:
                found = self.paths.get(step)
                if found is None:
                    self.paths[step] = [child]
                else:
                    found.append(child)
                if step in BRANCHES:
                    self._walk(child, step + "/")

    def first(self, path: str):
        found = self.paths.get(path)
        return found[0] if found else None

    def text(self, path: str) -> str:
        found = self.paths.get(path)
        return (found[0].text or "").strip() if found else ""

    def texts(self, path: str) -> list[str]:
        return [node.text or "" for node in self.paths.get(path, ())]

    def amount(self):
        return self.first("Amt") if self.first("Amt") is not None else self.first("AmtDtls/TxAmt/Amt")


def _step(prefix: str, tag) -> str:
    """The path a child with this tag has below `prefix`, if it is walked; else ""."""
    if not isinstance(tag, str):                # a comment or a processing instruction
        return ""
    path = prefix + _local(tag)
    return path if path in WALKED else ""


def _children(element, *steps: str) -> list:
    found = [element]
    for step in steps:                          # "{*}": lxml matches the name in any namespace, or none
        found = [c for parent in found for c in parent.iterchildren("{*}" + step)]
    return found


def _find(element, path: str):
    found = _children(element, *path.split("/"))
    return found[0] if found else None


def _text(element, path: str) -> str:
    found = _find(element, path)
    return (found.text or "").strip() if found is not None else ""


def _local(tag: str) -> str:
    return tag[tag.rfind("}") + 1:]
