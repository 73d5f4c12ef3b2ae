"""The filter language: one language for the CLI, mail commands and the web.

    filter  := (empty) | or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | atom
    atom    := STATUS | FIELD ":" VALUE | "(" or ")"

Status words: paid shipped cancelled refunded (also `canceled`, and German
bezahlt versandt storniert erstattet); operators and/or/not (und/oder/nicht);
keywords and field names are case-insensitive. Fields: customer: (prefix of
the name or of the surname), email: (prefix), since:/until: (YYYY-MM-DD, both
inclusive, days in UTC like the stored times), method: (exact payment method),
number: (exact). A value with spaces goes in double quotes; inside them \\"
and \\\\ stand for " and \\. Precedence: not > and > or. Two terms side by side
without an operator are an error, not an implicit `and`: `paid shipped` could
mean either, so the user is asked to say which. The empty filter is all orders.

Any combination of status words compiles to one `status IN (…)` — the
expression is evaluated over the 16 combinations of the four flags (a
contradiction is false, a tautology true) — served by the (status,
created_at) index of migration 0002. Prefixes compile to a range
`key >= p AND key < successor(p)`: a BINARY index serves it on SQLite, and on
PostgreSQL the "C" collation that 0002 gives the search columns; LIKE would
need a NOCASE index on SQLite and text_pattern_ops on PostgreSQL, and has
wildcards to escape.

Public: search_key, name_keys (for storing an order), parse, condition (a
peewee expression over Order), find_orders, count_orders; status_masks and
orders_query for tests and the benchmark. On SQLite `orders_query` also
guides the planner (see "planning" below).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import operator
import re
import unicodedata
from dataclasses import dataclass

import peewee as pw

from daemon.orders import numbers as order_numbers
from daemon.errors import FilterSyntaxError
from daemon.orders.as_json import is_order_number
from daemon.store.models import LONE_SURROGATE, STATUS_FLAGS, Order
from daemon.translations import Said, said

STATUS_WORDS = {
    "paid": "paid", "bezahlt": "paid",
    "shipped": "shipped", "versandt": "shipped",
    "cancelled": "cancelled", "canceled": "cancelled", "storniert": "cancelled",
    "refunded": "refunded", "erstattet": "refunded",
}
OPERATORS = {"and": "and", "und": "and", "or": "or", "oder": "or", "not": "not", "nicht": "not"}
FIELDS = ("customer", "email", "since", "until", "method", "number")
MAX_LENGTH = 1000
MAX_DEPTH = 32
KEY_LENGTH = 200            # the width of customer_key / surname_key
ALL_MASKS = frozenset(range(16))

_FIELD_LIST = ", ".join(f"{name}:" for name in FIELDS)
_STATUS_LIST = ", ".join(STATUS_FLAGS)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
# How a message shows characters one cannot see: \uXXXX.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_WORD_END = frozenset('()"')


# ---- keys for prefix search ---------------------------------------------------

def search_key(text: str) -> str:
    """NFKC case-folded, whitespace collapsed: how names are stored and searched."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def name_keys(name: str) -> tuple[str, str]:
    """(customer_key, surname_key) of a customer's name; the surname is the last word."""
    key = search_key(name)[:KEY_LENGTH]
    return key, key.rpartition(" ")[2]


# ---- the syntax tree -------------------------------------------------------------

class Node:
    """A parsed filter."""


@dataclass(frozen=True)
class Everything(Node):
    """The empty filter."""


@dataclass(frozen=True)
class Status(Node):
    word: str                   # canonical: paid, shipped, cancelled, refunded


@dataclass(frozen=True)
class Field(Node):
    name: str                   # one of FIELDS
    value: object               # normalised: a search key, a date, a number…


@dataclass(frozen=True)
class Not(Node):
    operand: Node


@dataclass(frozen=True)
class And(Node):
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or(Node):
    operands: tuple[Node, ...]


# ---- tokens ------------------------------------------------------------------------

@dataclass(frozen=True)
class _Token:
    kind: str                   # ( ) and or not status field end error
    text: str                   # as typed (for messages)
    column: int                 # 1-based
    value: object = None        # Status/Field node, or the error message


def _tokens(text: str) -> list[_Token]:
    """Split into tokens; a lexical error becomes an `error` token, so that
    the parser reports whichever problem comes first from the left."""
    tokens, i = [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return tokens + [_Token("end", "", i + 1)]
        char = text[i]
        if char in "()":
            tokens.append(_Token(char, char, i + 1))
            i += 1
            continue
        if char == '"':
            return tokens + [_error(Said("unexpected '\"' at column %(column)s (quotes go around "
                                         "a field's value, as in customer:\"Erika Mustermann\")", column=i + 1), i)]
        start = i
        while i < len(text) and not text[i].isspace() and text[i] not in _WORD_END:
            i += 1
        word = text[start:i]
        if ":" not in word:
            tokens.append(_word_token(word, start))
            continue
        name, _, value = word.partition(":")
        value_start = start + len(name) + 1
        if not value and i < len(text) and text[i] == '"':
            try:
                value, i = _quoted(text, i)
            except FilterSyntaxError as exc:
                return tokens + [_error(said(exc), i)]
        try:
            node = _field(name, value, start, value_start)
        except FilterSyntaxError as exc:
            return tokens + [_error(said(exc), start)]
        tokens.append(_Token("field", text[start:i], start + 1, node))


def _shown(text: str) -> str:
    """Text from the filter, quoted for a one-line message: line breaks and
    other invisible characters written as \\uXXXX or \\UXXXXXXXX (found by
    fuzzing: a quoted value with a line break broke the message in two)."""
    return "'" + "".join(_escaped(c) if unicodedata.category(c) in _INVISIBLE else c
                         for c in text) + "'"


def _escaped(char: str) -> str:
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def _error(message: str, index: int) -> _Token:
    return _Token("error", "", index + 1, message)


def _word_token(word: str, start: int) -> _Token:
    folded = word.casefold()
    if folded in OPERATORS:
        return _Token(OPERATORS[folded], word, start + 1)
    if folded in STATUS_WORDS:
        return _Token("status", word, start + 1, Status(STATUS_WORDS[folded]))
    return _error(Said("unknown word %(word)s at column %(column)s (status words: %(words)s; fields: %(fields)s)",
                       word=_shown(word), column=start + 1, words=_STATUS_LIST, fields=_FIELD_LIST), start)


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The value of the quoted string that opens at text[i]; and the index after it."""
    chars, j = [], i + 1
    while j < len(text):
        if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in '"\\':
            chars.append(text[j + 1])
            j += 2
        elif text[j] == '"':
            return "".join(chars), j + 1
        else:
            chars.append(text[j])
            j += 1
    raise FilterSyntaxError(Said("unclosed quote at column %(column)s", column=i + 1))


def _field(name: str, value: str, start: int, value_start: int) -> Field:
    """A field term with its value checked and normalised."""
    field = name.casefold()
    if field not in FIELDS:
        raise FilterSyntaxError(Said("unknown field %(field)s at column %(column)s (fields: %(fields)s)",
                                     field=_shown(name + ':'), column=start + 1, fields=_FIELD_LIST))
    if not value.strip():
        raise FilterSyntaxError(Said("%(field)s: needs a value at column %(column)s, as in %(field)s:%(example)s",
                                     field=field, column=value_start + 1, example=_EXAMPLES[field]))
    if field == "customer":
        return Field(field, search_key(value))
    if field == "email":
        return Field(field, value.strip().lower())
    if field in ("since", "until"):
        return Field(field, _date(field, value, value_start + 1))
    if field == "number":
        number = value.strip().lstrip("#")
        if not is_order_number(number):
            raise FilterSyntaxError(Said("%(value)s is not an order number at column %(column)s (as in number:1042)",
                                         value=_shown(value), column=value_start + 1))
        return Field(field, number)
    return Field(field, value.strip())          # method


_EXAMPLES = {"customer": '"Erika Mustermann"', "email": "erika@", "since": "2026-03-01",
             "until": "2026-03-31", "method": "paypal", "number": "1042"}


def _date(field: str, value: str, column: int) -> dt.date:
    try:
        if _DATE_RE.fullmatch(value):
            return dt.date.fromisoformat(value)
    except ValueError:
        pass
    raise FilterSyntaxError(Said("invalid date %(value)s for %(field)s: at column %(column)s "
                                 "(write a real day as YYYY-MM-DD, e.g. %(example)s)",
                                 value=_shown(value), field=field, column=column, example=_EXAMPLES[field]))


# ---- parsing -------------------------------------------------------------------------

def parse(text: str) -> Node:
    """The syntax tree of a filter; raises FilterSyntaxError naming the column."""
    if len(text) > MAX_LENGTH:
        raise FilterSyntaxError(Said("the filter is longer than %(most)s characters", most=MAX_LENGTH))
    bad = LONE_SURROGATE.search(text)   # bytes in argv that were not UTF-8 (found by fuzzing)
    if bad:
        raise FilterSyntaxError(Said("the filter is not UTF-8 text at column %(column)s", column=bad.start() + 1))
    return _Parser(_tokens(text)).parse()


class _Parser:
    """Recursive descent over the token list, one method per grammar rule."""

    def __init__(self, tokens: list[_Token]):
        self.tokens, self.at, self.depth = tokens, 0, 0

    def parse(self) -> Node:
        if self._peek().kind == "end":
            return Everything()
        node = self._or()
        token = self._peek()
        if token.kind == ")":
            raise FilterSyntaxError(Said("unexpected ')' at column %(column)s (no '(' to close)", column=token.column))
        return node

    def _peek(self) -> _Token:
        token = self.tokens[self.at]
        if token.kind == "error":
            raise FilterSyntaxError(token.value)
        return token

    def _take(self) -> _Token:
        token = self._peek()
        self.at += 1
        return token

    def _or(self) -> Node:
        return self._chain("or", Or, self._and)

    def _and(self) -> Node:
        return self._chain("and", And, self._not)

    def _chain(self, kind, combine, operand) -> Node:
        nodes = [operand()]
        while self._peek().kind == kind:
            self._take()
            nodes.append(operand())
        self._no_juxtaposition()
        if len(nodes) == 1:
            return nodes[0]
        flat = [part for node in nodes
                for part in (node.operands if isinstance(node, combine) else (node,))]
        return combine(tuple(flat))

    def _no_juxtaposition(self) -> None:
        token = self._peek()
        if token.kind in ("status", "field", "(", "not"):
            raise FilterSyntaxError(Said("expected 'and' or 'or' before %(word)s at column %(column)s",
                                         word=_shown(token.text), column=token.column))

    def _not(self) -> Node:
        if self._peek().kind != "not":
            return self._atom()
        with self._deeper(self._take()):
            return Not(self._not())

    def _atom(self) -> Node:
        token = self._peek()
        if token.kind in ("status", "field"):
            self.at += 1
            return token.value
        if token.kind != "(":
            raise FilterSyntaxError(self._operand_expected(token))
        self.at += 1
        with self._deeper(token):
            node = self._or()
        if self._peek().kind != ")":       # only the end is left: see _no_juxtaposition
            raise FilterSyntaxError(Said("unclosed parenthesis at column %(column)s", column=token.column))
        self.at += 1
        return node

    def _operand_expected(self, token: _Token) -> str:
        if self.at == 0:
            return Said("expected a status or field, not %(word)s, at column %(column)s",
                        word=_shown(token.text), column=token.column)
        return Said("expected a status or field after %(word)s at column %(column)s",
                    word=_shown(self.tokens[self.at - 1].text), column=token.column)

    @contextlib.contextmanager
    def _deeper(self, token: _Token):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterSyntaxError(Said("the filter nests deeper than %(most)s levels at column %(column)s",
                                         most=MAX_DEPTH, column=token.column))
        try:
            yield
        finally:
            self.depth -= 1


# ---- compiling -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """Hints for SQLite's planner (see `orders_query`); none by default."""
    status_hint: bool = False               # the status test is selective
    unindexed: frozenset = frozenset()      # prefix fields too common for their index
    driver: Field | None = None             # a rare prefix whose index drives the query


def condition(node: Node):
    """A peewee expression over `Order` that holds for the orders the filter means."""
    return _expression(_compile(node, _Plan()))


def _expression(compiled):
    if compiled is True:
        return pw.SQL("1 = 1")
    if compiled is False:
        return pw.SQL("1 = 0")
    return compiled


def status_masks(node: Node) -> frozenset[int] | None:
    """The status values (flag combinations) a status-only expression holds for;
    None if the expression has a field in it."""
    if not _status_only(node):
        return None
    return frozenset(mask for mask in ALL_MASKS if _holds(node, mask))


def _status_only(node: Node) -> bool:
    if isinstance(node, (Status, Everything)):
        return True
    if isinstance(node, Not):
        return _status_only(node.operand)
    if isinstance(node, (And, Or)):
        return all(_status_only(operand) for operand in node.operands)
    return False


def _holds(node: Node, mask: int) -> bool:
    if isinstance(node, Status):
        return bool(mask & STATUS_FLAGS[node.word])
    if isinstance(node, Not):
        return not _holds(node.operand, mask)
    if isinstance(node, And):
        return all(_holds(operand, mask) for operand in node.operands)
    if isinstance(node, Or):
        return any(_holds(operand, mask) for operand in node.operands)
    return True                                 # Everything


def _compile(node: Node, plan: _Plan, top: bool = True):
    """A peewee expression, or True/False where the answer is known already."""
    masks = status_masks(node)
    if masks is not None:
        return _status_in(masks, hint=top and plan.status_hint)
    if isinstance(node, Field):
        return _field_sql(node, plan)
    if isinstance(node, Not):
        inner = _compile(node.operand, plan, top=False)
        return (not inner) if isinstance(inner, bool) else ~inner
    # And/Or: all status words of the list become one IN, the rest is folded.
    kind = type(node)
    statuses = [op for op in node.operands if _status_only(op)]
    parts = [_compile(op, plan, top=False) for op in node.operands if not _status_only(op)]
    if statuses:
        parts.insert(0, _compile(kind(tuple(statuses)), plan, top=top and kind is And))
    return _fold(kind, parts)


def _fold(kind, parts: list):
    neutral = kind is And                       # True for and, False for or
    result = neutral
    for part in parts:
        if isinstance(part, bool):
            if part != neutral:
                return part                     # false in an and, true in an or
            continue
        if result is neutral:
            result = part
        else:
            result = (result & part) if kind is And else (result | part)
    return result


def _status_in(masks: frozenset[int], hint: bool = False):
    if masks == ALL_MASKS:
        return True
    if not masks:
        return False
    test = (Order.status == next(iter(masks)) if len(masks) == 1
            else Order.status.in_(sorted(masks)))
    return pw.fn.unlikely(test) if hint else test


PREFIX_COLUMNS = {"customer": ("customer_key", "surname_key"), "email": ("customer_email",)}


def _field_sql(field: Field, plan: _Plan):
    if field.name in PREFIX_COLUMNS:
        hide = field in plan.unindexed
        tests = [_prefix(_column(name, hide), field.value) for name in PREFIX_COLUMNS[field.name]]
        return functools.reduce(operator.or_, tests)
    return _FIELD_SQL[field.name](field.value)


def _column(name: str, unindexed: bool = False):
    column = getattr(Order, name)
    # SQLite's idiom: `+column` has the same value but no index.
    return pw.NodeList((pw.SQL("+"), column), glue="") if unindexed else column


def _prefix(column, prefix: str):
    """`column` starts with `prefix`, as a range an ordinary index serves."""
    upper = _successor(prefix)
    if upper is None:
        return column >= prefix
    return (column >= prefix) & (column < upper)


def _successor(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix`, in code
    point order (= SQLite BINARY = PostgreSQL "C" on UTF-8)."""
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:           # surrogates cannot be stored
        following = 0xE000
    return stem[:-1] + chr(following)


def _day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time())


def _until(day: dt.date):
    if day == dt.date.max:
        return True
    return Order.created_at < _day_start(day + dt.timedelta(days=1))


_FIELD_SQL = {
    "since": lambda day: Order.created_at >= _day_start(day),
    "until": _until,
    "method": lambda name: Order.payment_method == name,
    "number": order_numbers.matching,
}


# ---- planning (SQLite) -------------------------------------------------------------------
# "The newest 50 matching" can be read two ways: walk created_at newest first
# and stop at the 50th match (cheap when matches are common), or collect the
# matches from a selective index and keep the newest (cheap when they are
# rare). PostgreSQL weighs this with its statistics. SQLite has none on values
# (no STAT4 in common builds): it cannot know that `refunded` is rare or
# `customer:müll` common, and guessed wrong both ways (10 ms and 90 ms on a
# million orders; see bench/orders_scale.py). So on SQLite `orders_query`:
# - counts the matches of each prefix, on its own index and capped where
#   walking created_at becomes the cheaper way. A rare prefix drives the query:
#   for each of its columns the newest matches are taken from the
#   (column, created_at) index alone, and only those rows are read. A common
#   prefix is written `+column`, which SQLite cannot serve from an index, so it
#   walks created_at and stops at the 50th match;
# - gives the status test `unlikely()`, unless a selective field is beside
#   it: SQLite then reads the (status, created_at) index newest first for each
#   status value and stops each after 50 rows (its ORDER BY … LIMIT early-out
#   for IN), whatever the share of the status.
INDEX_TO_WALK_COST = 0.4   # a matching index entry / a step of the walk, measured


def _plan(node: Node, limit: int | None, offset: int) -> _Plan:
    if limit is None or not isinstance(Order._meta.database, pw.SqliteDatabase):
        return _Plan()
    fields = [c for c in _conjuncts(node) if isinstance(c, Field)]
    prefixes = [f for f in fields if f.name in PREFIX_COLUMNS]
    common = _common(prefixes, limit + offset) if prefixes else frozenset()
    rare = [f for f in prefixes if f not in common]
    if any(f.name == "number" for f in fields):
        return _Plan(unindexed=common)
    return _Plan(status_hint=not rare, unindexed=common, driver=rare[0] if rare else None)


def _conjuncts(node: Node) -> tuple[Node, ...]:
    return node.operands if isinstance(node, And) else (node,)


def _common(prefixes: list[Field], wanted: int) -> frozenset:
    """The prefixes with more matches than where walking created_at becomes
    cheaper than reading every match. Counted on the key indexes alone, in
    plain SQL: building these small queries with peewee would cost more than
    running them."""
    db = Order._meta.database
    orders = db.execute_sql("SELECT max(id) FROM orders").fetchone()[0] or 0
    threshold = max(wanted, int(math.sqrt(wanted * orders / INDEX_TO_WALK_COST)))
    common = set()
    for field in prefixes:
        found = 0
        for column in PREFIX_COLUMNS[field.name]:
            found += _count_prefix(db, column, field.value, threshold - found)
            if found >= threshold:
                common.add(field)
                break
    return frozenset(common)


def _count_prefix(db, column: str, prefix: str, cap: int) -> int:
    upper = _successor(prefix)
    below = f" AND {column} < ?" if upper is not None else ""
    params = (prefix, upper, cap) if upper is not None else (prefix, cap)
    sql = f"SELECT count(*) FROM (SELECT 1 FROM orders WHERE {column} >= ?{below} LIMIT ?)"
    return db.execute_sql(sql, params).fetchone()[0]


def _newest_ids(node: Node, plan: _Plan, limit: int, offset: int):
    """The ids of the newest matches, read per column of the driving prefix
    from its (column, created_at) index: each column's newest `limit + offset`,
    then the newest of those."""
    rest = And(tuple(c for c in _conjuncts(node) if c is not plan.driver))
    rest_sql = _compile(rest, plan, top=False) if rest.operands else True
    arms = []
    for name in PREFIX_COLUMNS[plan.driver.name]:
        test = _prefix(getattr(Order, name), plan.driver.value)
        if rest_sql is not True:
            test = test & _expression(rest_sql)
        arms.append(Order.select(Order.id, Order.created_at).where(test)
                    .order_by(*NEWEST_FIRST).limit(limit + offset))
    newest = functools.reduce(operator.or_, arms).alias("newest")     # UNION: no twice
    return (pw.Select(from_list=[newest], columns=[newest.c.id])
            .order_by(newest.c.created_at.desc(), newest.c.id.desc()).limit(limit).offset(offset))


# ---- queries ---------------------------------------------------------------------------

NEWEST_FIRST = (Order.created_at.desc(), Order.id.desc())


def orders_query(text: str, limit: int | None = 100, offset: int = 0) -> pw.ModelSelect:
    """The query `find_orders` runs (the benchmark explains it)."""
    node = parse(text)
    plan = _plan(node, limit, offset)
    if plan.driver is not None:
        newest = _newest_ids(node, plan, limit, offset).alias("page")
        return (Order.select().join(newest, on=(Order.id == newest.c.id))
                .order_by(*NEWEST_FIRST))
    query = Order.select().where(_expression(_compile(node, plan))).order_by(*NEWEST_FIRST)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return query


def find_orders(text: str, limit: int | None = 100, offset: int = 0) -> list[Order]:
    """The orders a filter means, newest first; `limit=None` for all of them."""
    return list(orders_query(text, limit, offset))


def count_orders(text: str) -> int:
    return Order.select().where(condition(parse(text))).count()
