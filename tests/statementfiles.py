"""Bank statement files for tests, written the way the banks write them.

Each builder takes `Booking`s and returns the file's bytes: CAMT.053 in an
old (001.02) or a new (001.08) version, the MT940 of a German bank (:86:
structured, remittance cut into 27-character ?2x pieces), and a Sparkasse
"CSV-CAMT V2" export (semicolons, decimal comma, Windows-1252). bench/
statement.py builds its big CAMT file with `camt053` too.
"""
from __future__ import annotations

import datetime as dt
import io
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Booking:
    amount: str                       # signed: "-10.00" is a debit
    text: str = ""                    # the payer's remittance text
    payer: str = "Erika Mustermann"
    currency: str = "EUR"
    day: dt.date = dt.date(2026, 11, 20)
    reference: str | None = None      # the bank's entry reference (CAMT AcctSvcrRef)
    end_to_end: str = "NOTPROVIDED"
    booked: bool = True


# ---- CAMT.053 -----------------------------------------------------------------------

def camt053(bookings, *, version: str = "08", iban: str = "DE02120300000000202051", lines: int = 35) -> bytes:
    """A camt.053.001.<version> document; the remittance cut into <Ustrd> lines of `lines` characters."""
    new = int(version) >= 8
    entries = "".join(_camt_entry(b, i, new, lines) for i, b in enumerate(bookings))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.{version}" '
            f'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            f'<BkToCstmrStmt><GrpHdr><MsgId>STMT-1</MsgId><CreDtTm>2026-11-21T06:00:00</CreDtTm></GrpHdr>\n'
            f'<Stmt><Id>STMT-1-1</Id><ElctrncSeqNb>1</ElctrncSeqNb><CreDtTm>2026-11-21T06:00:00</CreDtTm>\n'
            f'<Acct><Id><IBAN>{iban}</IBAN></Id><Ccy>EUR</Ccy></Acct>\n'
            f'<Bal><Tp><CdOrPrtry><Cd>OPBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">1000.00</Amt>'
            f'<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2026-11-20</Dt></Dt></Bal>\n'
            f'{entries}</Stmt></BkToCstmrStmt></Document>\n').encode("utf-8")


def _camt_entry(b: Booking, index: int, new: bool, lines: int) -> str:
    amount = Decimal(b.amount)
    indicator = "CRDT" if amount > 0 else "DBIT"
    status = "BOOK" if b.booked else "PDNG"
    status_xml = f"<Sts><Cd>{status}</Cd></Sts>" if new else f"<Sts>{status}</Sts>"
    party = "Dbtr" if amount > 0 else "Cdtr"
    name = f"<Pty><Nm>{escape(b.payer)}</Nm></Pty>" if new else f"<Nm>{escape(b.payer)}</Nm>"
    ustrd = "".join(f"<Ustrd>{escape(b.text[i:i + lines])}</Ustrd>" for i in range(0, len(b.text), lines))
    reference = f"<AcctSvcrRef>{escape(b.reference)}</AcctSvcrRef>" if b.reference else ""
    return (f'<Ntry><NtryRef>{index + 1}</NtryRef><Amt Ccy="{b.currency}">{abs(amount):.2f}</Amt>'
            f'<CdtDbtInd>{indicator}</CdtDbtInd><RvslInd>false</RvslInd>{status_xml}'
            f'<BookgDt><Dt>{b.day.isoformat()}</Dt></BookgDt><ValDt><Dt>{b.day.isoformat()}</Dt></ValDt>'
            f'{reference}<BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RCDT</Cd><SubFmlyCd>ESCT</SubFmlyCd></Fmly>'
            f'</Domn></BkTxCd><NtryDtls><TxDtls><Refs><EndToEndId>{escape(b.end_to_end)}</EndToEndId></Refs>'
            f'<RltdPties><{party}>{name}</{party}><{party}Acct><Id><IBAN>DE89370400440532013000</IBAN></Id>'
            f'</{party}Acct></RltdPties><RmtInf>{ustrd}</RmtInf></TxDtls></NtryDtls>'
            f'<AddtlNtryInf>{"GUTSCHR. UEBERWEISUNG" if amount > 0 else "LASTSCHRIFT"}</AddtlNtryInf></Ntry>\n')


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# ---- MT940 --------------------------------------------------------------------------

def mt940(bookings, *, account: str = "10020030/1234567890") -> bytes:
    """A German bank's MT940: :86: with ?00 posting text, ?20-?29 pieces of 27, ?32 the payer."""
    lines = [":20:STARTUMSE", f":25:{account}", ":28C:00001/001", ":60F:C261119EUR1000,00"]
    for b in bookings:
        amount = Decimal(b.amount)
        mark = "C" if amount > 0 else "D"
        day = b.day.strftime("%y%m%d")
        lines.append(f":61:{day}{b.day:%m%d}{mark}{abs(amount):.2f}".replace(".", ",") + "NMSCNONREF")
        text = f"EREF+{b.end_to_end}SVWZ+{b.text}"
        pieces = [text[i:i + 27] for i in range(0, len(text), 27)][:10]
        code = "166" if amount > 0 else "105"
        lines.append(f":86:{code}?00GUTSCHR. UEBERWEISUNG?109310"
                     + "".join(f"?2{i}{p}" for i, p in enumerate(pieces))
                     + f"?30BYLADEM1001?31DE89370400440532013000?32{b.payer[:27]}")
    lines += [":62F:C261120EUR1000,00", "-"]
    # :86: wraps after 65 characters, as the banks write it
    wrapped = []
    for line in lines:
        wrapped.extend(line[i:i + 65] for i in range(0, len(line), 65))
    return ("\r\n".join(wrapped) + "\r\n").encode("cp1252")


# ---- CSV ----------------------------------------------------------------------------

SPARKASSE_HEADER = ('"Auftragskonto";"Buchungstag";"Valutadatum";"Buchungstext";"Verwendungszweck";'
                    '"Glaeubiger ID";"Mandatsreferenz";"Kundenreferenz (End-to-End)";"Sammlerreferenz";'
                    '"Lastschrift Ursprungsbetrag";"Auslagenersatz Ruecklastschrift";'
                    '"Beguenstigter/Zahlungspflichtiger";"Kontonummer/IBAN";"BIC (SWIFT-Code)";"Betrag";'
                    '"Waehrung";"Info"')


def sparkasse_csv(bookings) -> bytes:
    """The Sparkassen's CSV-CAMT V2 export: Windows-1252, semicolons, decimal comma, DD.MM.YY."""
    rows = [SPARKASSE_HEADER]
    for b in bookings:
        amount = f"{Decimal(b.amount):.2f}".replace(".", ",")
        day = b.day.strftime("%d.%m.%y")
        info = "Umsatz gebucht" if b.booked else "Umsatz vorgemerkt"
        kind = "GUTSCHR. UEBERW." if Decimal(b.amount) > 0 else "FOLGELASTSCHRIFT"
        cells = ["DE02120300000000202051", day, day, kind, b.text, "", "", b.end_to_end, "", "", "",
                 b.payer, "DE89370400440532013000", "COBADEFFXXX", amount, b.currency, info]
        rows.append(";".join('"' + c.replace('"', '""') + '"' for c in cells))
    return ("\r\n".join(rows) + "\r\n").encode("cp1252")
