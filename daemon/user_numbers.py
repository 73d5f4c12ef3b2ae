"""Whole numbers typed by a user — CLI arguments, parts of a URL, a header — read
strictly and bounded before they go near a query.

`int()` takes "²" and "١٢" (any Unicode digit), surrounding spaces, and
numbers of any length; the databases take none past 2**63 - 1 (SQLite raises
OverflowError, PostgreSQL an out-of-range error: a 500 or a traceback). So a
number from outside is ASCII digits, within the bounds its use allows, or it
is refused as the door refuses anything malformed (404, exit 2).
"""
from __future__ import annotations

import argparse
import re

MAX_ID = 2**63 - 1          # a row id: anything larger names no row
MAX_COUNT = 10**9           # how many rows to list
_DIGITS = re.compile(r"[0-9]{1,19}")


def whole_number(text: str, least: int = 0, most: int = MAX_ID) -> int | None:
    """`text` as a whole number from `least` to `most`, else None."""
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if least <= value <= most else None


def argument(least: int = 0, most: int = MAX_ID):
    """An argparse `type` for a bounded whole number (a usage error, exit 2, otherwise)."""
    def convert(text: str) -> int:
        value = whole_number(text, least, most)
        if value is None:
            raise argparse.ArgumentTypeError(f"must be a whole number from {least} to {most}, not {text!r}")
        return value
    convert.__name__ = "whole number"
    return convert
