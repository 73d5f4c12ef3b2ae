"""CSV exports of German online banking, and layouts named in [statements.csv].

Built in: a header line (found among the first 50 lines, after any preamble
of account details) whose column names say what they hold, in the words
German banks use — the Sparkassen's "CSV-CAMT" export (Auftragskonto;
Buchungstag; Valutadatum; Buchungstext; Verwendungszweck; …;
Beguenstigter/Zahlungspflichtiger; Kontonummer/IBAN; BIC; Betrag; Waehrung;
Info) is the documented one; others using the same words (Buchungsdatum,
Betrag (€), Zahlungspflichtige*r, Auftraggeber/Empfänger, Währung, Status)
are read alike. Semicolons, comma or tab; decimal comma or point; UTF-8 with
or without BOM, else Windows-1252. A row marked pending ("Umsatz
vorgemerkt", "Vorgemerkt") is not booked yet and is passed over.

[statements.csv] names the columns of any other export by their header
text; then only that layout is tried.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import re
from dataclasses import dataclass

from daemon.config import StatementCsvSettings
from daemon.errors import InputError
from daemon.payments.statements.entries import (Entry, Identities, Statement, clean_text, parse_currency,
                                       reference_or_empty)
from daemon.translations import Said

HEADER_LINES = 50
DELIMITERS = (";", ",", "\t", "|")
DATE_FORMATS = ("%d.%m.%Y", "%d.%m.%y", "%Y-%m-%d", "%d/%m/%Y")
PENDING_WORDS = ("vorgemerkt", "pending", "nicht ausgefuehrt", "nicht ausgeführt")
# Column names (folded: lower case, umlauts spelled out, only letters and
# digits), the most telling first.
WORDS = {
    "date": ("buchungstag", "buchungsdatum", "buchung", "datum", "bookingdate", "date",
             "valutadatum", "wertstellung", "valuta"),
    "amount": ("betrag", "betrageur", "umsatz", "umsatzineur", "betragineur", "amount"),
    "currency": ("waehrung", "whrg", "currency"),
    "remittance": ("verwendungszweck", "buchungstext", "purpose", "remittanceinformation", "description"),
    "reference": ("kundenreferenzendtoend", "kundenreferenz", "endtoendreferenz", "endtoendid", "reference"),
    "payer": ("beguenstigterzahlungspflichtiger", "zahlungspflichtiger", "auftraggeberempfaenger",
              "namezahlungsbeteiligter", "zahlungspflichtigeer", "payer", "name", "counterparty"),
    "status": ("info", "status"),
    "account": ("auftragskonto",),
}


@dataclass(frozen=True)
class Layout:
    """Which column (0-based) holds what; the header is at line `header`."""
    header: int
    delimiter: str
    columns: dict       # field → index, "remittance" → tuple of indexes


def read(text: str, name: str, settings: StatementCsvSettings) -> Statement | None:
    """The entries of a CSV export, or None when no header line says what the columns hold."""
    lines = text.splitlines()
    layout = find_layout(lines, settings)
    if layout is None:
        return None
    rows = csv.reader(lines[layout.header + 1:], delimiter=layout.delimiter)
    identities = Identities("csv")
    entries = []
    for number, row in enumerate(rows, start=layout.header + 2):
        entry = _entry(row, layout, settings, identities, Said("%(name)s: line %(line)s", name=name, line=number))
        if entry is not None:
            entries.append(entry)
    return Statement("csv", tuple(entries))


def find_layout(lines: list[str], settings: StatementCsvSettings) -> Layout | None:
    """The header line and what its columns hold, or None: no CSV export we know."""
    delimiters = (settings.delimiter,) if settings.delimiter else DELIMITERS
    for index, line in enumerate(lines[:HEADER_LINES]):
        for delimiter in delimiters:
            if delimiter not in line:
                continue
            names = [fold(cell) for cell in next(csv.reader([line], delimiter=delimiter))]
            columns = _custom_columns(names, settings) if settings.custom else _known_columns(names)
            if columns is not None:
                return Layout(index, delimiter, columns)
    return None


def fold(name: str) -> str:
    name = name.strip().lower()
    for umlaut, spelled in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss")):
        name = name.replace(umlaut, spelled)
    return re.sub(r"[^a-z0-9]", "", name)


def _known_columns(names: list[str]) -> dict | None:
    columns = {}
    for field, words in WORDS.items():
        found = next((names.index(word) for word in words if word in names), None)
        if found is not None:
            columns[field] = found
    if "amount" not in columns or "remittance" not in columns:
        return None
    columns["remittance"] = (columns["remittance"],)
    currencies = [i for i, n in enumerate(names) if n in WORDS["currency"]]
    after = [i for i in currencies if i > columns["amount"]]     # a balance may have its own before
    if currencies:
        columns["currency"] = (after or currencies)[0]
    return columns


def _custom_columns(names: list[str], settings: StatementCsvSettings) -> dict | None:
    wanted = {"date": settings.date_column, "amount": settings.amount_column,
              "currency": settings.currency_column, "reference": settings.reference_column,
              "payer": settings.payer_column}
    columns = {}
    for field, name in wanted.items():
        if name:
            if fold(name) not in names:
                return None
            columns[field] = names.index(fold(name))
    remittance = [fold(n) for n in settings.remittance_columns]
    if any(n not in names for n in remittance):
        return None
    columns["remittance"] = tuple(names.index(n) for n in remittance)
    return columns


def _entry(row: list[str], layout: Layout, settings: StatementCsvSettings, identities: Identities,
           where: str) -> Entry | None:
    columns = layout.columns
    needed = max(max(v) if isinstance(v, tuple) else v for v in columns.values())
    if len(row) <= needed:
        if sum(1 for cell in row if cell.strip()) <= 2:    # a blank or closing line (balance, sum)
            return None
        raise InputError(Said("%(where)s: %(count)s columns, the header has more", where=where, count=len(row)))

    def cell(field: str) -> str:
        return row[columns[field]].strip() if field in columns else ""

    if not cell("amount"):
        return None
    amount = parse_amount(cell("amount"), settings.decimal_separator, where)
    currency = parse_currency(cell("currency") or settings.currency, Said("%(where)s, currency", where=where))
    remittance = clean_text(" ".join(row[i] for i in columns["remittance"]))
    reference = reference_or_empty(cell("reference"))
    payer = clean_text(cell("payer"), 200)
    key = identities.by_content(cell("account"), cell("date"), amount, currency, remittance, reference, payer)
    pending = any(word in cell("status").lower() for word in PENDING_WORDS)
    return Entry(key=key, credit=amount > 0, booked=not pending, amount=abs(amount), currency=currency,
                 booked_on=parse_date(cell("date"), settings.date_format), reference=reference,
                 end_to_end_id=reference, payer=payer, remittance=remittance,
                 search_texts=(clean_text(f"{remittance} {reference}"),))


def parse_amount(text: str, separator: str, where: str) -> decimal.Decimal:
    """"1.234,56", "-12,50", "12.50-", "+3,00 €": the decimal separator as
    configured, else the last ',' or '.' followed by one or two digits."""
    value = re.sub(r"[\s\u00a0'€$£]|EUR|USD|CHF|GBP", "", text)
    sign = -1 if value.startswith("-") or value.endswith("-") else 1
    value = value.strip("+-")
    if separator:
        other = "." if separator == "," else ","
        value = value.replace(other, "").replace(separator, ".")
    else:
        decimal_mark = re.search(r"[.,](\d{1,2})$", value)
        head = value[:decimal_mark.start()] if decimal_mark else value
        value = re.sub(r"[.,]", "", head) + (f".{decimal_mark.group(1)}" if decimal_mark else "")
    if not re.fullmatch(r"\d+(\.\d+)?", value):
        raise InputError(Said("%(where)s: %(text)s is not an amount", where=where, text=repr(text)))
    return sign * decimal.Decimal(value)


def parse_date(text: str, date_format: str) -> dt.date | None:
    for candidate in ((date_format,) if date_format else DATE_FORMATS):
        try:
            return dt.datetime.strptime(text, candidate).date()
        except ValueError:
            continue
    return None
