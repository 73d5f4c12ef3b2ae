"""Properties of the owner's command grammar.

Lines are drawn two ways: as commands the grammar knows, written the way an
owner types them (any case, German verbs, '#' and ',' around numbers,
`quiet`/`preview` anywhere), which must parse back to what was meant; and as
soup, which must never raise anything but the documented InputError at
parse time, and never anything at all when a whole mail of such lines is run
against a real store (each line gets its answer). A line with `preview`
changes nothing in the database.
"""
from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import sample_order
from daemon.handling import commands
from daemon.orders import service as orders
from daemon.errors import InputError
from daemon.orders.as_json import is_order_number
from daemon.store.models import Event, Order, OrderItem, OutboxMessage
from fuzzing import examples

NUMBERS = ["1042", "1043", "A-7"]
SPELLINGS: dict[str, list[str]] = {}
for _word, _verb in commands.VERBS.items():
    SPELLINGS.setdefault(_verb, []).append(_word)

letters = st.text(alphabet=string.ascii_letters + "äöüßéÀ", min_size=1, max_size=8)
words = letters.filter(lambda w: w.lower() not in commands.QUIET_WORDS | commands.PREVIEW_WORDS)
numbers = st.one_of(st.sampled_from(NUMBERS), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,8}", fullmatch=True)
                    .filter(is_order_number))
blanks = st.sampled_from([" ", "  ", "\t", " \t "])
flags = st.sampled_from(["quiet", "QUIET", "preview", "Preview", "vorschau"])


@st.composite
def commands_as_typed(draw):
    """(line, verb, numbers, argument words, quiet, preview)."""
    verb = draw(st.sampled_from(sorted(SPELLINGS)))
    spelling = draw(st.sampled_from(SPELLINGS[verb]))
    head = draw(st.sampled_from([spelling, spelling.upper(), spelling.capitalize(), spelling + ":"]))
    if verb in ("list", "help"):
        wanted = []
    elif verb in commands.MANY_ORDER_VERBS:
        wanted = draw(st.lists(numbers, min_size=1, max_size=3))
    else:
        wanted = [draw(numbers)]
    typed = [draw(st.sampled_from([n, "#" + n, n + ","])) for n in wanted]
    args = draw(st.lists(words, max_size=4)) if verb != "list" else []
    tokens = [head] + typed + args
    inserted = draw(st.lists(st.tuples(st.integers(1, len(tokens)), flags), max_size=2))
    for position, flag in sorted(inserted, reverse=True):
        tokens.insert(position, flag)
    line = draw(st.sampled_from(["", " "])) + "".join(t + draw(blanks) for t in tokens).rstrip()
    said = {f.lower() for _, f in inserted}
    return (line, verb, wanted, args, "quiet" in said,
            bool(said & commands.PREVIEW_WORDS))


@examples(ci=200)
@given(commands_as_typed())
def test_a_command_as_typed_parses_to_what_was_meant(command):
    line, verb, wanted, args, quiet, preview = command
    parsed = commands.parse_line(line)
    assert (parsed.verb, list(parsed.numbers), list(parsed.words)) == (verb, wanted, args)
    assert (parsed.quiet, parsed.preview) == (quiet, preview)
    assert parsed.rest.split() == args


FRAGMENTS = ["paid", "bezahlt", "shipped", "cancelled", "refunded", "message", "note", "delete",
             "show", "list", "help", "löschen", "quiet", "preview", "confirm", "tracking", "carrier",
             "full", "1042", "1043", "#1042", "A-7", "9" * 40, "12,50", "€3", "-1", "1e9", "not",
             "paid", "and", "customer:", '"', "(", "\x00", "\udcff", "\u2028", "\r", "\t", " ", " ",
             "\n", "#", ":", "ß", "İ", "x" * 120]
soups = st.one_of(st.lists(st.sampled_from(FRAGMENTS), max_size=14).map(" ".join),
                  st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join),
                  st.text(max_size=40))


@examples(ci=300)
@given(soups)
def test_any_line_parses_or_gets_an_input_error(line):
    try:
        parsed = commands.parse_line(line)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert parsed.verb in commands.VERBS.values()
    assert all(is_order_number(n) for n in parsed.numbers)


@pytest.fixture
def book(store, settings):
    for number in NUMBERS:
        orders.create_order(store, settings, sample_order(number))


@examples(ci=60)
@given(st.lists(soups, min_size=1, max_size=4).map("\n".join))
def test_a_mail_of_any_lines_gets_an_answer_for_each_line_never_an_error(store, settings, book, text):
    with store.atomic() as transaction:           # each example starts from the same book
        outcomes = commands.run_text(store, settings, text)
        transaction.rollback()
    lines = [line.strip() for line in text.splitlines()]
    assert all(o.line in lines and isinstance(o.text, str) and o.text for o in outcomes)
    assert {o.line for o in outcomes} == {line for line in lines if line and not line.startswith("#")}


@examples(ci=60)
@given(st.lists(st.one_of(commands_as_typed().map(lambda c: c[0]), soups), min_size=1, max_size=4))
def test_a_line_with_preview_changes_nothing(store, settings, book, lines):
    before = _snapshot()
    commands.run_text(store, settings, "\n".join(f"{line} preview" for line in lines if "\n" not in line
                                                 and "\r" not in line and "\u2028" not in line))
    assert _snapshot() == before


def _snapshot():
    return ([tuple(o.__data__.items()) for o in Order.select().order_by(Order.id)],
            OrderItem.select().count(), Event.select().count(), OutboxMessage.select().count())
