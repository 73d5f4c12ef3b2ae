"""Tests for daemon.trimming: our scenario replies and public reply corpora.

Scenario replies live in tests/mails/replies/: each NAME.txt (or NAME.html,
rendered with html_to_text first) has a sibling NAME.expected holding exactly
the text the order log must keep.

The corpora are read from ../shared/corpora (never copied into the repo). Two
of them carry expected reply texts derived from their projects' test suites;
we score ourselves on those and also check the per-fragment assertions that
stop short of a full text.
"""
from __future__ import annotations

import email
import email.policy
import json
import re
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from daemon.trimming import TrimmedReply, html_to_text, trim_reply
from daemon.trimming.shapes import _INVISIBLE, _ODD_SPACES

REPLIES = Path(__file__).resolve().parent / "mails" / "replies"
CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
MISSING_CORPORA = (
    f"shared mail corpora not found at {CORPORA}: the public reply corpora live "
    "beside the repository (../shared/corpora), not in it"
)

# Keys of expected_outputs.json whose values are literal expected reply texts.
LITERAL_KEYS = {
    "github_email_reply_parser": ("expected_visible_text", "derived_visible_text"),
    "zapier_email_reply_parser": ("expected_parse_reply", "expected_reply_stripped"),
}
# Keys holding per-fragment assertions (github's Ruby and zapier's Python tests).
FRAGMENT_KEYS = {
    "github_email_reply_parser": "fragment_assertions",
    "zapier_email_reply_parser": "other_assertions",
}
# Raw MIME corpora without expected outputs: trimming their bodies must not
# crash, hang or come back empty.
RAW_CORPORA = ("cpython_email", "mailparser", "django_helpdesk")

# Corpus cases whose expected text a shop would not want, with the reason.
# Each becomes a strict xfail, so it is noticed when behaviour changes.
DEBATABLE: dict[tuple[str, str], str] = {}

# Fragment flags that another corpus contradicts for the same mail. We follow
# the other corpus, and the test asserts the opposite so a change is noticed.
CONTRADICTED_FRAGMENTS: dict[tuple[str, str, int], str] = {
    ("github_email_reply_parser", "email_1_3.txt", 1):
        "crisp's email_3 is this mail, and its expected text keeps the '-Abhishek Kona' sign-off "
        "above the quote header: the customer typed it",
}

MIN_EXACT_SCORE = 0.85
TIME_LIMIT = 1.0  # seconds per mail, as in the corpora's own performance tests


def normalise_whitespace(text: str) -> str:
    """Compare texts without line-ending or trailing-space differences."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


# ---------------------------------------------------------------------------
# Scenario replies
# ---------------------------------------------------------------------------


def scenario_files() -> list[Path]:
    return sorted(p for p in REPLIES.rglob("*") if p.suffix in (".txt", ".html"))


def scenario_source(path: Path) -> str:
    raw = path.read_text(encoding="utf-8")
    return html_to_text(raw) if path.suffix == ".html" else raw


def expected_text(path: Path) -> str:
    return path.with_suffix(".expected").read_text(encoding="utf-8").rstrip("\n")


def test_there_are_enough_scenarios_each_with_an_expected_text():
    files = scenario_files()
    assert len(files) >= 12
    for path in files:
        assert path.with_suffix(".expected").is_file(), f"{path.name} has no .expected sibling"


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: str(p.relative_to(REPLIES)))
def test_scenario_keeps_exactly_what_the_customer_wrote(path):
    source = scenario_source(path)
    expected = expected_text(path)
    result = trim_reply(source)
    assert result.text == expected
    # Scenarios whose expected text is the whole mail must report no cut.
    assert result.trimmed is (expected != normalise_whitespace(source))


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: str(p.relative_to(REPLIES)))
def test_scenario_with_crlf_line_endings_gives_the_same_text(path):
    source = scenario_source(path).replace("\n", "\r\n")
    assert trim_reply(source).text == expected_text(path)


# ---------------------------------------------------------------------------
# API and edge cases
# ---------------------------------------------------------------------------


def test_result_is_a_frozen_dataclass():
    result = trim_reply("Danke!")
    assert result == TrimmedReply(text="Danke!", trimmed=False)
    with pytest.raises(FrozenInstanceError):
        result.text = "x"


@pytest.mark.parametrize("text", ["", "  \n\n \t\n"])
def test_blank_input_gives_blank_untrimmed_result(text):
    assert trim_reply(text) == TrimmedReply("", False)


@pytest.mark.parametrize(
    "text",
    [
        "Sent from my iPhone",
        "-- \nMax Mustermann\nMusterstraße 1",
        "> Ihre Bestellung wurde versandt.\n> Beispiel-Shop",
        "________________________________\nVon: Beispiel-Shop <orders@shop.example>\n"
        "Gesendet: Dienstag, 3. März 2026 10:15\nAn: kunde@example.de\nBetreff: Versand",
    ],
    ids=["only-mobile-signature", "only-signature", "only-quote", "only-outlook-block"],
)
def test_never_empty_when_everything_would_be_cut(text):
    result = trim_reply(text)
    assert result == TrimmedReply(normalise_whitespace(text), False)


@pytest.mark.parametrize("delimiter", ["\t-- \t", "\x0c--\x0b", "\u00a0--\u200b", "\u202f--\ufeff"])
def test_odd_and_invisible_spaces_around_a_line_are_ignored(delimiter):
    assert trim_reply(f"Danke!\n{delimiter}\nMax") == TrimmedReply("Danke!", True)


def test_only_tab_and_control_spaces_among_ascii_are_odd_or_invisible():
    # normalise skips both substitutions for ASCII lines, replacing only these
    ascii_hits = [c for c in map(chr, range(128)) if _INVISIBLE.match(c) or _ODD_SPACES.match(c)]
    assert ascii_hits == ["\t", "\x0b", "\x0c"]


def test_trailing_blank_lines_and_spaces_are_stripped():
    result = trim_reply("\n\nBitte stornieren.   \n\n\n")
    assert result == TrimmedReply("Bitte stornieren.", False)


@pytest.mark.parametrize(
    "line",
    [
        "Sent from my iPhone",
        "Sent from my Samsung Galaxy smartphone.",
        "Sent from my BlackBerry® wireless device",
        "Sent from Yahoo Mail on Android",
        "Get Outlook for iOS<https://aka.ms/o0ukef>",
        "Von meinem iPhone gesendet",
        "Gesendet von meinem iPad",
        "Gesendet von Outlook für Android",
        "Gesendet mit der WEB.DE Mail App",
        "Diese Nachricht wurde von meinem Android-Mobiltelefon mit K-9 Mail gesendet.",
        "Envoyé de mon iPhone",
        "Envoyé depuis mon smartphone Samsung Galaxy.",
        "Envoyé à partir de Outlook pour Android",
    ],
)
def test_mobile_signatures_are_cut(line):
    assert trim_reply(f"Passt so.\n\n{line}\n") == TrimmedReply("Passt so.", True)


@pytest.mark.parametrize(
    "text",
    [
        "Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
        "Rücksendung\n\nSent via DHL",
        "On my order you wrote:\nsize M",
        "Am Montag kam das Paket nicht an, Nr. 12345\nBeispiel-Shop schrieb:",
        "Abholung\nFrom: Berlin\nTo: Munich",
        "Teil 1\n\n----\n\nTeil 2",
        "Fix -- this is not a signature.",
    ],
)
def test_customer_text_that_only_looks_like_boilerplate_is_kept(text):
    assert trim_reply(text) == TrimmedReply(text, False)


@pytest.mark.parametrize(
    "header",
    [
        "Am 12.03.2026 um 10:15 schrieb Beispiel-Shop <orders@shop.example>:",
        "Am 12.03.2026 um 10:15 schrieb Beispiel-Shop\n<orders@shop.example>:",
        "Am 12.03.2026 um 10:15 hat Beispiel-Shop geschrieben:",
        "Le mar. 3 mars 2026 à 10:15, Shop <x@y> a écrit :",
        "Le mar. 3 mars 2026 à 10:15, Shop <x@y>\na écrit :",
        "On Tue, Mar 3, 2026 at 10:15 AM Shop <x@y> wrote:",
        "On Tue, Mar 3, 2026 at 10:15 AM Shop <\nx@y> wrote:",
        "Shop <orders@shop.example> wrote:",
        "---- On Tue, 3 Mar 2026 10:15:36 +0100 Shop <x@y> wrote ----",
        "2026-03-03 10:15 GMT+01:00 Shop <orders@shop.example>:",
    ],
)
def test_quote_headers_are_cut(header):
    text = f"Passt so.\n\n{header}\n> Ihre Bestellung 100300 ist unterwegs."
    assert trim_reply(text) == TrimmedReply("Passt so.", True)


def test_header_wrapped_over_three_lines_is_cut_without_the_text_above():
    text = (
        "Bitte schnell liefern.\n"
        "On Tue, Mar 3, 2026 at 10:15 AM Example Shop\n"
        "<orders@shop.example>\n"
        "wrote:\n"
        "> Your order has shipped."
    )
    assert trim_reply(text) == TrimmedReply("Bitte schnell liefern.", True)


def test_long_single_line_mail_is_fast():
    text = "x" * 500_000 + "\n" + "> " + "y" * 500_000
    started = time.perf_counter()
    trim_reply(text)
    assert time.perf_counter() - started < TIME_LIMIT


# ---------------------------------------------------------------------------
# html_to_text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>Hallo</p><p>Welt</p>", "Hallo\n\nWelt"),
        ("eins<br>zwei<br/><br>drei", "eins\nzwei\n\ndrei"),
        ("<div>a</div><div><br></div><div>b</div>", "a\n\nb"),
        (
            "<p>Antwort</p><blockquote>Frage<br><br>Details<blockquote>älter</blockquote></blockquote>",
            "Antwort\n\n> Frage\n>\n> Details\n> > älter",
        ),
        (
            'Siehe <a href="https://shop.example/o/1">Bestellung</a>.',
            "Siehe Bestellung <https://shop.example/o/1>.",
        ),
        ('<a href="https://shop.example/">shop.example</a>', "shop.example"),
        ('<a href="mailto:orders@shop.example">orders@shop.example</a>', "orders@shop.example"),
        ('<a href="https://track.example/p"><img src="logo.png"></a>Text', "Text"),
        (
            "<ul><li>Hose</li><li>Jacke</li></ul><ol><li>eins</li><li>zwei</li></ol>",
            "- Hose\n- Jacke\n1. eins\n2. zwei",
        ),
        ("<style>p{color:red}</style><script>x()</script><p>sichtbar</p>", "sichtbar"),
        ("<p>A&amp;B&nbsp;&lt;C&gt; &eacute;t&eacute;</p>", "A&B <C> été"),
        ("<pre>  eingerückt\n    mehr</pre>", "  eingerückt\n    mehr"),
        ("<p>  viel    Platz\n  hier </p>", "viel Platz hier"),
        ("Antwort<hr>From: Shop", "Antwort\n" + "_" * 32 + "\nFrom: Shop"),
        ("<table><tr><td>Artikel</td><td>Preis</td></tr><tr><td>Hose</td><td>20 €</td></tr></table>",
         "Artikel Preis\nHose 20 €"),
        ("", ""),
    ],
)
def test_html_to_text_renders_plainly(html, text):
    assert html_to_text(html) == text


# ---------------------------------------------------------------------------
# Public corpora
# ---------------------------------------------------------------------------


def load_expectations(corpus: str) -> dict | None:
    path = CORPORA / corpus / "expected_outputs.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def corpus_mail(corpus: str, name: str) -> str:
    return (CORPORA / corpus / "emails" / name).read_text(encoding="utf-8")


def literal_cases() -> list:
    """(corpus, fixture, expected text) for every literal expectation."""
    cases = []
    for corpus, keys in LITERAL_KEYS.items():
        data = load_expectations(corpus) or {}
        for key in keys:
            for name, expected in sorted(data.get(key, {}).items()):
                reason = DEBATABLE.get((corpus, name))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                cases.append(pytest.param(corpus, name, expected, marks=marks, id=f"{corpus}/{name}"))
    return cases or [pytest.param(None, None, None, id="corpora-missing")]


def fragment_cases() -> list:
    cases = []
    for corpus, key in FRAGMENT_KEYS.items():
        data = load_expectations(corpus) or {}
        for name, assertions in sorted(data.get(key, {}).items()):
            cases.append(pytest.param(corpus, name, assertions, id=f"{corpus}/{name}"))
    return cases or [pytest.param(None, None, None, id="corpora-missing")]


def raw_corpus_files() -> list:
    files = [
        path
        for corpus in RAW_CORPORA
        if (CORPORA / corpus).is_dir()
        for path in sorted((CORPORA / corpus).iterdir())
        if path.is_file() and path.name != "LICENSE_NOTE.txt"
    ]
    ids = [f"{p.parent.name}/{p.name}" for p in files]
    return [pytest.param(p, id=i) for p, i in zip(files, ids)] or [pytest.param(None, id="corpora-missing")]


def require_corpus(corpus: str | None) -> None:
    if corpus is None or not (CORPORA / corpus).is_dir():
        pytest.skip(MISSING_CORPORA)


@pytest.mark.parametrize(("corpus", "name", "expected"), literal_cases())
def test_corpus_reply_text_is_exact(corpus, name, expected):
    require_corpus(corpus)
    result = trim_reply(corpus_mail(corpus, name))
    assert normalise_whitespace(result.text) == normalise_whitespace(expected)


@pytest.mark.parametrize("corpus", sorted(LITERAL_KEYS))
def test_corpus_exact_score(corpus):
    require_corpus(corpus)
    data = load_expectations(corpus)
    if data is None:
        pytest.skip(f"{corpus} has no expected_outputs.json")
    expected = {name: text for key in LITERAL_KEYS[corpus] for name, text in data.get(key, {}).items()}
    exact = sorted(
        name
        for name, text in expected.items()
        if normalise_whitespace(trim_reply(corpus_mail(corpus, name)).text) == normalise_whitespace(text)
    )
    score = len(exact) / len(expected)
    print(f"{corpus}: exact {len(exact)}/{len(expected)} ({score:.0%})")
    assert score >= MIN_EXACT_SCORE, f"{corpus}: exact {len(exact)}/{len(expected)}"


def fragment_checks(assertions: dict) -> dict[int, list[tuple[str, str]]]:
    """Per fragment index: ("regex" | "contains" | "starts", value) checks."""
    checks: dict[int, list[tuple[str, str]]] = {}
    kinds = {
        "fragment_matches": "regex",
        "fragment_regex_match_at_start": "regex",
        "fragment_contains": "contains",
        "fragment_equals": "starts",
    }
    for key, kind in kinds.items():
        for index, values in assertions.get(key, {}).items():
            values = values if isinstance(values, list) else [values]
            checks.setdefault(int(index), []).extend((kind, v) for v in values)
    return checks


def check_holds(text: str, kind: str, value: str, hidden: bool) -> bool:
    if kind == "regex":
        return re.search(value, text, re.MULTILINE) is not None
    if kind == "contains" and hidden:
        # Fragments start lines; "--" of a hidden signature also occurs
        # mid-line in visible text ("a correct -- signature").
        return any(line.lstrip("> ").startswith(value) for line in text.split("\n"))
    if kind == "contains":
        return value in text
    return text.startswith(value.strip("\n"))


@pytest.mark.parametrize(("corpus", "name", "assertions"), fragment_cases())
def test_corpus_fragment_assertions(corpus, name, assertions):
    """What the corpora's fragment-level tests say about the visible reply.

    A visible fragment's text must be kept, a hidden one's must be gone (a
    hidden fragment's substring is looked for at line starts, where fragments
    begin).
    Where a test gives no hidden flags, these fixtures are top-posted and
    everything after the first fragment (the quote header and quote) is
    hidden. A hidden *quoted* fragment is not checked when a quoted fragment
    is visible too: with inline answers we keep the quotes between them, and
    the ">" marks cannot tell one quote from the other.
    """
    require_corpus(corpus)
    result = trim_reply(corpus_mail(corpus, name))
    checks = fragment_checks(assertions)
    count = assertions.get("fragment_count", max(checks, default=0) + 1)
    hidden = assertions.get("hidden") or [False] + [True] * (count - 1)
    quoted = assertions.get("quoted") or [False] * count
    inline = any(q and not h for q, h in zip(quoted, hidden))
    for index, fragment_checks_ in checks.items():
        for kind, value in fragment_checks_:
            if not value.strip():
                continue  # a blank fragment says nothing about the text
            holds = check_holds(result.text, kind, value, hidden[index])
            if (corpus, name, index) in CONTRADICTED_FRAGMENTS:
                assert holds, f"fragment {index}: {kind} {value!r} lost, though kept on purpose"
            elif not hidden[index]:
                assert holds, f"visible fragment {index}: {kind} {value!r} lost"
            elif not (quoted[index] and inline):
                assert not holds, f"hidden fragment {index}: {kind} {value!r} kept"
    for value in assertions.get("reply_contains", []):
        assert value in result.text
    for value in assertions.get("parse_reply_not_contains", []):
        assert value not in result.text
    if assertions.get("fragment_count") == 1:
        assert not result.trimmed  # a one-fragment mail has nothing to cut


@pytest.mark.parametrize("path", raw_corpus_files())
def test_raw_corpus_bodies_trim_quickly_and_never_to_nothing(path):
    if path is None:
        pytest.skip(MISSING_CORPORA)
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    for part in message.walk():
        body = readable_body(part)
        if body is None:
            continue
        started = time.perf_counter()
        result = trim_reply(body)
        assert time.perf_counter() - started < TIME_LIMIT
        assert result.text or not body.strip()


def readable_body(part) -> str | None:
    """A text part's content as text, or None where it cannot be decoded.

    Decoding broken MIME is the mail parser's job, not the trimmer's.
    """
    if part.get_content_maintype() != "text" or part.is_multipart():
        return None
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError):
        return None
    if not isinstance(content, str):
        return None
    return html_to_text(content) if part.get_content_subtype() == "html" else content
