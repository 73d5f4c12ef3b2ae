"""Properties of the filter language, against a plain Python reading of it.

Random text either parses or gets a FilterSyntaxError: one line, naming a
column inside the input (at most one past its end, for "something missing
at the end"), and where it quotes the word at fault the word is there.

Random filters are drawn as trees, written out the way people type them
(any case, German words, quotes, extra parentheses and blanks) and then run
on a small book of orders on SQLite and PostgreSQL. Every query the program
offers — all matches, the count, a page of the newest (on SQLite the page
goes through the planner's other plans) — must give exactly the orders a
straightforward evaluation of the same tree picks from the book in Python.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import sample_order
from daemon.orders import filters
from daemon.errors import FilterSyntaxError
from daemon.orders.service import create_order
from daemon.store.models import STATUS_FLAGS, Order
from fuzzing import examples

# ---- the book: a few orders whose names, mails and days are hard to compare -----

NAMES = ["Erika Mustermann", "Jürgen Müller", "MÜLLER Straße", "Ｍüller Maß", "İlker Şahin",
         "Anna-Lena GROSS", "Zoë O'Brien", "李 小龍", "😀 Smile", "Ærø Ǆemal", "erika", "Müller-Lüdenscheidt"]
EMAILS = ["erika@example.org", "juergen@mueller.de", "m.strasse@example.de", "mueller@xn--mller-kva.de",
          "ilker@example.com.tr", "anna@example.org", "zoe@example.ie", "li@example.cn",
          "smile@example.org", "aero@example.dk", "erika2@example.org", "ml@example.de"]
NUMBERS = ["1042", "1043", "A-7", "a-7x", "x_1", "DEMO-1", "7", "2026-11", "99", "1000", "8a", "Z9"]
METHODS = ["bank_transfer", "paypal"]
DAY = dt.datetime(2026, 3, 1)
MOMENTS = [DAY, DAY - dt.timedelta(seconds=1), DAY + dt.timedelta(hours=23, minutes=59, seconds=59),
           DAY + dt.timedelta(days=1), DAY, DAY - dt.timedelta(days=31), DAY + dt.timedelta(days=400),
           dt.datetime(2020, 1, 1), DAY + dt.timedelta(microseconds=1), DAY + dt.timedelta(days=2, hours=12),
           DAY - dt.timedelta(days=1, hours=1), DAY]


@dataclasses.dataclass(frozen=True)
class Booked:
    """An order as the oracle sees it: plain Python values."""
    id: int
    number: str
    name: str
    email: str
    method: str
    status: int
    created_at: dt.datetime


@pytest.fixture
def book(store, settings):
    booked = []
    for i, name in enumerate(NAMES):
        order = create_order(store, settings, sample_order(
            NUMBERS[i], customer={"name": name, "email": EMAILS[i]},
            payment_method=METHODS[i % 2]), quiet=True)
        status = (i * 5) % 16                   # every flag combination but a few
        Order.update(status=status, created_at=MOMENTS[i]).where(Order.id == order.id).execute()
        booked.append(Booked(order.id, NUMBERS[i], name, EMAILS[i], METHODS[i % 2], status, MOMENTS[i]))
    return booked


# ---- filters as trees, and how people write them ------------------------------------

STATUS_SPELLINGS = {"paid": ["paid", "bezahlt", "PAID", "Bezahlt"],
                    "shipped": ["shipped", "versandt", "Shipped"],
                    "cancelled": ["cancelled", "canceled", "storniert", "CANCELLED"],
                    "refunded": ["refunded", "erstattet", "Refunded"]}
OPERATOR_SPELLINGS = {"and": ["and", "und", "AND", "And"], "or": ["or", "oder", "OR"],
                      "not": ["not", "nicht", "NOT", "Nicht"]}
FIELD_SPELLINGS = {name: [name, name.upper(), name.capitalize()] for name in filters.FIELDS}


def _case_variants(text: str):
    return st.sampled_from([text, text.upper(), text.lower(), text.swapcase(), text.casefold()])


def _prefix_of(texts: list[str]):
    return st.sampled_from(texts).flatmap(
        lambda t: st.integers(1, len(t)).flatmap(lambda n: _case_variants(t[:n])))


def _day():
    near = st.builds(lambda m, d: (m + dt.timedelta(days=d)).date(), st.sampled_from(MOMENTS), st.integers(-2, 2))
    return st.one_of(near, st.sampled_from([dt.date.min, dt.date.max]), st.dates())


FIELD_VALUES = {
    "customer": st.one_of(_prefix_of(NAMES), _prefix_of([n.split()[-1] for n in NAMES]),
                          st.text(min_size=1, max_size=8)),
    "email": st.one_of(_prefix_of(EMAILS), st.text(min_size=1, max_size=8)),
    "since": _day().map(dt.date.isoformat),
    "until": _day().map(dt.date.isoformat),
    "method": st.one_of(st.sampled_from(METHODS), st.text(min_size=1, max_size=8)),
    "number": st.one_of(st.sampled_from(NUMBERS), st.sampled_from(NUMBERS).map(lambda n: "#" + n),
                        st.from_regex(filters.is_order_number.__globals__["NUMBER_RE"], fullmatch=True)
                        .filter(filters.is_order_number)),
}


def _field_is_valid(name: str, value: str) -> bool:
    """Values the language takes (the tree generator only draws those)."""
    if not value.strip() or "\x00" in value:      # NUL: dropped by the store, not by the oracle
        return False
    if name == "number":
        return filters.is_order_number(value.strip().lstrip("#"))
    return True


fields = st.sampled_from(filters.FIELDS).flatmap(
    lambda name: FIELD_VALUES[name].filter(lambda v: _field_is_valid(name, v)).map(lambda v: ("field", name, v)))
statuses = st.sampled_from(list(STATUS_FLAGS)).map(lambda w: ("status", w))
trees = st.recursive(
    st.one_of(statuses, fields),
    lambda inner: st.one_of(
        inner.map(lambda t: ("not", t)),
        st.lists(inner, min_size=2, max_size=4).map(lambda ts: ("and", ts)),
        st.lists(inner, min_size=2, max_size=4).map(lambda ts: ("or", ts))),
    max_leaves=8)

BLANKS = st.sampled_from([" ", "  ", "\t", " \n ", "\u00a0", "\u3000"])


@st.composite
def written(draw, tree) -> str:
    """The tree as a person might type it."""
    kind = tree[0]
    if kind == "status":
        return draw(st.sampled_from(STATUS_SPELLINGS[tree[1]]))
    if kind == "field":
        return draw(st.sampled_from(FIELD_SPELLINGS[tree[1]])) + ":" + _value(draw, tree[2])
    if kind == "not":
        return draw(st.sampled_from(OPERATOR_SPELLINGS["not"])) + draw(BLANKS) + _operand(draw, tree[1], "not")
    glue = [draw(BLANKS) + draw(st.sampled_from(OPERATOR_SPELLINGS[kind])) + draw(BLANKS)
            for _ in tree[1][1:]]
    parts = [_operand(draw, part, kind) for part in tree[1]]
    text = parts[0] + "".join(g + p for g, p in zip(glue, parts[1:]))
    return f"({text})" if draw(st.booleans()) and draw(st.booleans()) else text


_PRECEDENCE = {"or": 0, "and": 1, "not": 2, "status": 3, "field": 3}


def _operand(draw, tree, outer: str) -> str:
    text = draw(written(tree))
    if _PRECEDENCE[tree[0]] <= _PRECEDENCE[outer] and tree[0] not in ("status", "field"):
        return f"({text})"
    return text


def _value(draw, value: str) -> str:
    plain = not any(c.isspace() or c in '()"' for c in value) and value
    if plain and draw(st.booleans()):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- the oracle: the tree evaluated in Python ---------------------------------------

def holds(tree, order: Booked) -> bool:
    kind = tree[0]
    if kind == "status":
        return bool(order.status & STATUS_FLAGS[tree[1]])
    if kind == "not":
        return not holds(tree[1], order)
    if kind == "and":
        return all(holds(t, order) for t in tree[1])
    if kind == "or":
        return any(holds(t, order) for t in tree[1])
    name, value = tree[1], tree[2]
    if name == "customer":
        key, name_key = filters.search_key(value), filters.search_key(order.name)
        return name_key.startswith(key) or name_key.split(" ")[-1].startswith(key)
    if name == "email":
        return order.email.startswith(value.strip().lower())
    if name == "since":
        return order.created_at.date() >= dt.date.fromisoformat(value)
    if name == "until":
        return order.created_at.date() <= dt.date.fromisoformat(value)
    if name == "method":
        return order.method == value.strip()
    return order.number == value.strip().lstrip("#")


def newest_first(orders: list[Booked]) -> list[int]:
    return [o.id for o in sorted(orders, key=lambda o: (o.created_at, o.id), reverse=True)]


# ---- properties ---------------------------------------------------------------------

@examples(ci=150)
@given(data=st.data())
def test_filters_find_what_a_plain_evaluation_finds(book, data):
    tree = data.draw(trees, "tree")
    text = data.draw(written(tree), "filter")
    expected = newest_first([o for o in book if holds(tree, o)])
    assert [o.id for o in filters.find_orders(text, limit=None)] == expected
    assert filters.count_orders(text) == len(expected)
    limit, offset = data.draw(st.integers(1, 4), "limit"), data.draw(st.integers(0, 2), "offset")
    assert [o.id for o in filters.find_orders(text, limit=limit, offset=offset)] == expected[offset:offset + limit]


FRAGMENTS = ["paid", "shipped", "bezahlt", "and", "or", "not", "nicht", "(", ")", '"', "\\", ":",
             "customer:", "email:", "since:", "until:", "method:", "number:", "2026-03-01", "#",
             "1042", "erika", "Müller", "ß", " ", "  ", "\t", "\n", "\x00", "\x1f", "\udcff",
             "\u2028", "\u00a0", "x", "9999-12-31", "0000-01-01", "\U0010ffff", "İ", "ǅ",
             'since:"', 'number:"', 'customer:"', "(((((((((", "not not not not ", "nicht ("]
soups = st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
                  st.text(max_size=40),
                  st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=30).map("".join))
_COLUMN = re.compile(r"at column (\d+)")
_QUOTED_AT = re.compile(r"^(?:unknown word|unexpected|expected 'and' or 'or' before) '(.*)'.* at column (\d+)")


@examples(ci=300)
@given(soups)
def test_any_text_parses_or_gets_a_one_line_error_naming_a_column_inside_it(text):
    try:
        filters.parse(text)
    except FilterSyntaxError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        columns = [int(c) for c in _COLUMN.findall(message)]
        if len(text) <= filters.MAX_LENGTH:
            assert columns, message
        assert all(1 <= c <= len(text) + 1 for c in columns), (message, len(text))
        quoted = _QUOTED_AT.match(message)
        if quoted:
            word, column = quoted.group(1), int(quoted.group(2))
            at = text[column - 1:]
            assert at.startswith(word) or at.startswith(_unshown(word)), (message, text)


def _unshown(word: str) -> str:
    """A word as the message shows it, its \\uXXXX escapes undone."""
    return re.sub(r"\\u([0-9a-f]{4})|\\U([0-9a-f]{8})", lambda m: chr(int(m.group(1) or m.group(2), 16)), word)


@examples(ci=120)
@given(soups)
def test_any_filter_that_parses_runs_on_the_database(store, text):
    try:
        filters.parse(text)
    except FilterSyntaxError:
        return
    assert filters.count_orders(text) >= 0
    filters.find_orders(text, limit=3, offset=1)
