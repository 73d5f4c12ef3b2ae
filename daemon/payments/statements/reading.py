"""Bytes in, a `Statement` out: the format told by the content, the size bounded.

A .zip (as German banks export a day's CAMT files) is opened and each file
in it read the same way; unpacked, all of them together stay within
[statements] max_bytes however large their headers say they are, so a zip
bomb stops at the limit. XML is CAMT, text with :20: and :61: fields is
MT940, anything else must be a CSV export with a header line we can read.
A file that fails any of this is refused whole, with one line saying where.
"""
from __future__ import annotations

import io
import zipfile

from daemon.config import StatementSettings
from daemon.errors import InputError
from daemon.payments.statements import bank_csv, camt, swift
from daemon.payments.statements.entries import Statement
from daemon.translations import N_, Said

ZIP_MAGIC = b"PK\x03\x04"
MAX_ZIP_FILES = 100
SNIFF_BYTES = 4096
FORMATS_WE_READ = N_("CAMT.053 XML (also zipped), MT940, or a CSV export whose header line names its columns")


def read_statement(data: bytes, name: str, settings: StatementSettings) -> Statement:
    """Every entry of the file; InputError naming the file (and line or entry) if it cannot be read."""
    _within(len(data), name, settings)
    statement = _read_zip(data, name, settings) if data.startswith(ZIP_MAGIC) else _read_one(data, name, settings)
    if len(statement.entries) > settings.max_entries:
        raise InputError(Said("%(name)s: %(count)s entries, more than the %(most)s of [statements] max_entries",
                              name=name, count=len(statement.entries), most=settings.max_entries))
    return statement


def _read_zip(data: bytes, name: str, settings: StatementSettings) -> Statement:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        files = sorted((i for i in archive.infolist() if not i.is_dir()), key=lambda i: i.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise InputError(Said("%(name)s: a damaged .zip (%(error)s)", name=name, error=str(exc))) from None
    if not files:
        raise InputError(Said("%(name)s: an empty .zip", name=name))
    if len(files) > MAX_ZIP_FILES:
        raise InputError(Said("%(name)s: a .zip of %(count)s files, more than %(most)s",
                              name=name, count=len(files), most=MAX_ZIP_FILES))
    statement, budget = Statement("", ()), settings.max_bytes
    for info in files:
        member = f"{name}/{info.filename}"
        content = _unpack(archive, info, member, budget)
        budget -= len(content)
        if content.startswith(ZIP_MAGIC):
            raise InputError(Said("%(name)s: a .zip inside a .zip is not read", name=member))
        statement = statement + _read_one(content, member, settings)
    return statement


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str, budget: int) -> bytes:
    if info.flag_bits & 0x1:
        raise InputError(Said("%(name)s: encrypted; export the statement without a password", name=member))
    try:
        with archive.open(info) as stream:
            content = stream.read(budget + 1)    # never more, whatever the header claims
    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
        raise InputError(Said("%(name)s: cannot be unpacked (%(error)s)", name=member, error=str(exc))) from None
    if len(content) > budget:
        raise InputError(Said("%(name)s: unpacked, the .zip holds more than [statements] max_bytes allows", name=member))
    return content


def _read_one(data: bytes, name: str, settings: StatementSettings) -> Statement:
    head = data[:SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return camt.read(data, name)
    if head.startswith(b"%PDF"):
        raise InputError(Said("%(name)s: a PDF is for reading, not for importing; export %(formats)s",
                              name=name, formats=Said(FORMATS_WE_READ)))
    if b"\x00" in head:
        raise InputError(Said("%(name)s: not a bank statement (binary data); export %(formats)s",
                              name=name, formats=Said(FORMATS_WE_READ)))
    text = decode(data, settings.csv.encoding, name)
    if swift.looks_like(text):
        return swift.read(text, name)
    statement = bank_csv.read(text, name, settings.csv)
    if statement is None:
        layout = Said(" with the columns of [statements.csv]") if settings.csv.custom else ""
        raise InputError(Said("%(name)s: not a bank statement this can read%(layout)s; export %(formats)s",
                              name=name, layout=layout, formats=Said(FORMATS_WE_READ)))
    return statement


def decode(data: bytes, encoding: str, name: str) -> str:
    """As configured; else UTF-8 (a BOM dropped), else Windows-1252 as German banks write."""
    if encoding:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise InputError(Said("%(name)s: not %(encoding)s text (byte %(byte)s)",
                                  name=name, encoding=encoding, byte=exc.start)) from None
    for candidate in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(candidate)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _within(size: int, name: str, settings: StatementSettings) -> None:
    if size > settings.max_bytes:
        raise InputError(Said("%(name)s: larger than the %(most)s bytes of [statements] max_bytes",
                              name=name, most=settings.max_bytes))
