"""Tests for daemon.mail.trimming: our scenario replies and public reply corpora.

Scenario replies live in tests/mails/replies/: each NAME.txt (or NAME.html,
rendered with html_to_text first) has a sibling NAME.expected holding exactly
the text the order log must keep. Below LANG/ are the kinds of mail the issue
lists, in each language, written the way the common clients write them; they
are the guard against tuning to the corpora.

The corpora are read from ../shared/corpora (never copied into the repo), see
reply_corpora: where a corpus gives the visible reply, that text exactly;
elsewhere the judgments in corpus_judgments.toml; and the per-fragment
assertions of github's and zapier's tests.
"""
from __future__ import annotations

import email
import email.policy
import re
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from daemon.mail.trimming import TrimmedReply, html_to_text, is_forward_subject, trim_reply
from daemon.mail.trimming.shapes import _INVISIBLE, _ODD_SPACES
from reply_corpora import (
    CORPORA, MISSING, REPLY_CORPORA, comparable, corpus_mails, load_expectations, normalise_whitespace, verdict,
)

REPLIES = Path(__file__).resolve().parent / "mails" / "replies"
# The languages and kinds the issue names: each kind in each language.
LANGUAGES = ("de", "en", "fr", "nl", "pl", "pt", "es", "it", "sv", "no", "da", "ru", "uk")
KINDS = ("gmail_top_post", "gmail_wrapped_header", "iphone_mobile_signature", "thunderbird_signature",
         "outlook_header_block", "outlook_block_without_separator", "original_message_delimiter",
         "samsung_original_message", "gmail_forward", "apple_forward", "inline_answers",
         "inline_answers_no_blank_lines", "mobile_app_signature_above_block", "bottom_post", "kept_lookalikes")

# Keys holding per-fragment assertions (github's Ruby and zapier's Python tests).
FRAGMENT_KEYS = {
    "github_email_reply_parser": "fragment_assertions",
    "zapier_email_reply_parser": "other_assertions",
}
# Fragment flags that another corpus contradicts for the same mail. We follow
# the other corpus, and the test asserts the opposite so a change is noticed.
CONTRADICTED_FRAGMENTS: dict[tuple[str, str, int], str] = {
    ("github_email_reply_parser", "email_1_3.txt", 1):
        "crisp's email_3 is this mail, and its expected text keeps the '-Abhishek Kona' sign-off "
        "above the quote header: the customer typed it",
}
# Raw MIME corpora without expected outputs: trimming their bodies must not
# crash, hang or come back empty.
RAW_CORPORA = ("cpython_email", "mailparser", "django_helpdesk")

TIME_LIMIT = 1.0  # seconds per mail, as in the corpora's own performance tests


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


def test_every_scenario_has_an_expected_text_and_every_kind_is_written_in_every_language():
    files = scenario_files()
    for path in files:
        assert path.with_suffix(".expected").is_file(), f"{path.name} has no .expected sibling"
    written = {(p.parent.name, p.stem) for p in files}
    assert [(lang, kind) for lang in LANGUAGES for kind in KINDS if (lang, kind) not in written] == []


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
        "Verzonden met BlackBerry Work",
        "Verstuurd vanaf mijn iPad",
        "Sendt fra min iPad",
        "Skickat från min iPhone",
        "Enviado desde mi iPhone",
        "Enviado do meu iPhone",
        "Inviato da iPhone",
        "Wysłane z mojego iPhone'a",
        "Отправлено с iPhone",
        "Надіслано з iPhone",
        "Lähetetty iPhonesta",
        "從我的 iPhone 傳送",
        "iPhoneから送信",
        "Hämta Outlook för iOS<https://aka.ms/o0ukef>",
        "Scarica Outlook per Android",
        "Virus-free. www.avast.com",
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
        "Sent an email to you yesterday, no answer",
        "Gesendet: gestern, per Einschreiben",
        "Der Fahrer schrieb um 10:15 auf die Karte:\nMorgen wieder",
        "Bestellnummer: 100301\nDatum: 03.03.2026\nE-Mail: max@example.de\n\nBitte stornieren.",
        "Von: Berlin\nNach: München\nDatum: 12.03.2026",
        "Vertraulich: bitte nicht an Dritte weitergeben, nur für den Empfänger.",
        "—\nJohn Doe\nCEO",
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
        "2013/7/20 Shop <orders@shop.example>",
        "Op di 3 mrt 2026 om 10:15 schreef Shop <orders@shop.example\n<mailto:orders@shop.example>>:",
        "tir. 3. mar. 2026 kl. 10:15 skrev Shop <orders@shop.example\n>:",
        "Em ter., 3 de mar. de 2026 às 10:15, Loja (\norders@shop.example) escreveu:",
        "El 3 mar 2026, a las 10:15, Tienda <orders@shop.example> escribió:",
        "Il giorno 3 mar 2026, alle ore 10:15, Negozio <orders@shop.example> ha scritto:",
        "Dnia 3 marca 2026 10:15 Sklep <orders@shop.example> napisał(a):",
        "3 марта 2026 г., в 10:15, Магазин <orders@shop.example> написал(а):",
        "вт, 3 бер. 2026 р. о 10:15 Магазин <orders@shop.example> пише:",
        "Den 3. mar. 2026 kl. 10.15 skrev Butikken <orders@shop.example>:",
        "3 mars 2026 kl. 10:15 skrev Butiken <orders@shop.example>:",
        "2013.02.08. 7:31 keltezéssel, \"Bolt\" írta:",
        "On Wed, 14 Nov 2018 08:14:43 -0200 Shop <orders@shop.example> wrote",
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


def test_a_header_at_the_end_of_the_mail_is_cut_too():
    text = "Bitte stornieren.\n\nAm 03.03.2026 um 10:15 schrieb Beispiel-Shop <orders@shop.example>:\n"
    assert trim_reply(text) == TrimmedReply("Bitte stornieren.", True)


def test_invisible_marks_after_a_gmail_signature_are_dropped():
    # U+1427 is the mark Gmail add-ons leave under a signature.
    text = "Danke!\n\nJonas\n\u1427\n\nAm 03.03.2026 um 10:15 schrieb Shop <orders@shop.example>:\n> alt"
    assert trim_reply(text) == TrimmedReply("Danke!\n\nJonas", True)
    assert trim_reply("Danke!\u1427\u200b") == TrimmedReply("Danke!", False)    # nothing visible cut


def test_an_outlook_forward_keeps_the_forwarded_mail_when_the_subject_says_forward():
    text = ("Siehe unten, bitte prüfen.\n\n" + "_" * 32 + "\nVon: Paketdienst <noreply@carrier.example>\n"
            "Gesendet: Montag, 9. März 2026 08:02\nAn: jonas@example.de\nBetreff: Zustellung\n\n"
            "Ihre Sendung konnte nicht zugestellt werden.")
    forwarded = "Siehe unten, bitte prüfen.\n\nIhre Sendung konnte nicht zugestellt werden."
    assert trim_reply(text, "WG: Zustellung") == TrimmedReply(forwarded, True)
    assert trim_reply(text, "Re: Ihre Bestellung") == TrimmedReply("Siehe unten, bitte prüfen.", True)


def test_a_forwarded_header_block_goes_with_its_wrapped_values():
    text = ("FYI\n\n---------- Forwarded message ---------\nFrom: Carrier <noreply@carrier.example>\n"
            "To: jane@example.org, john@example.org,\n  office@example.org\nSubject: Delivery\n\n"
            "  Your parcel is waiting at the depot.")
    assert trim_reply(text) == TrimmedReply("FYI\n\n  Your parcel is waiting at the depot.", True)


def test_a_header_block_with_nothing_typed_above_heads_the_mail_below_it():
    text = ("Von: Jonas Weber <jonas@example.de>\nGesendet: Dienstag, 3. März 2026 10:15\n"
            "An: Beispiel-Shop <orders@shop.example>\nBetreff: Bestellung 100301\n\n"
            "Bitte die Lieferadresse ändern.\n\nAm 02.03.2026 um 09:00 schrieb Beispiel-Shop "
            "<orders@shop.example>:\n> Danke für Ihre Bestellung.")
    assert trim_reply(text) == TrimmedReply("Bitte die Lieferadresse ändern.", True)


@pytest.mark.parametrize(("subject", "forward"), [
    ("Fwd: Zustellung", True), ("FW: order", True), ("WG: Bestellung", True), ("TR: commande", True),
    ("RV: pedido", True), ("Doorst: bestelling", True), ("VB: beställning", True), ("PD: zamówienie", True),
    ("[Shop] Fwd: x", True), ("Re: Fwd: x", False), ("Re: Ihre Bestellung", False), ("Forward planning", False),
    ("", False),
])
def test_forward_subjects(subject, forward):
    assert is_forward_subject(subject) is forward


def test_a_gateway_warning_above_the_text_and_a_legal_footer_below_it_go():
    text = ("CAUTION: This email originated from outside of the organization. Do not click links.\n\n"
            "Please cancel order 100302.\n\nThanks,\nJane\n\n"
            "This e-mail and any attachments are confidential and intended solely for the addressee. "
            "If you are not the intended recipient, please delete it.")
    assert trim_reply(text) == TrimmedReply("Please cancel order 100302.\n\nThanks,\nJane", True)


def test_a_closing_and_a_business_signature_block_go_a_typed_name_stays():
    signed = "Please cancel order 100302.\n\nBest regards,\n\nJane Doe\nHead of Purchasing\nACME Ltd."
    assert trim_reply(signed) == TrimmedReply("Please cancel order 100302.", True)
    typed = "Please cancel order 100302.\n\nBest regards,\nJane"
    assert trim_reply(typed) == TrimmedReply(typed, False)


# Fragments that, repeated, make a backtracking regex explode.
ADVERSARIAL_UNITS = ["-", "- ", "-- x ", "<", "@", "a@", "1:", "12.03.2026 ", "On ", "> ", "*:", "Von: ",
                     "a. B", "Sent from my ", "—", "<a@b.c>", "[mailto:", "(", "schrieb ", "x" * 59 + ":"]


def _adversarial(unit: str, size: int, shape: str) -> str:
    line = (unit * (size // len(unit) + 1))[:size]
    if shape == "line":         # one long line, then a quote
        return f"Danke.\n\n{line}:\n> Zitat"
    return "Danke.\n\n" + "\n".join(line[i:i + 60] for i in range(0, len(line), 60))   # short lines


def _fastest(text: str) -> float:
    """The least CPU time of three runs (time waiting for a core does not count)."""
    times = []
    for _ in range(3):
        started = time.process_time()
        trim_reply(text)
        times.append(time.process_time() - started)
    return min(times)


@pytest.mark.parametrize("shape", ["line", "block"])
@pytest.mark.parametrize("unit", ADVERSARIAL_UNITS, ids=lambda unit: repr(unit[:8]))
def test_adversarial_input_takes_linear_time(unit, shape):
    """Four times the input may take about four times as long, not sixteen:
    no regex backtracks into quadratic (or worse) time on a hostile mail.
    Measured as a ratio of CPU times, the least of three runs each, so a
    loaded machine does not decide it."""
    small, large = _fastest(_adversarial(unit, 20_000, shape)), _fastest(_adversarial(unit, 80_000, shape))
    assert large < 8 * small + 0.02, f"{small * 1e3:.1f} ms for 20 KB, {large * 1e3:.1f} ms for 80 KB"


def test_a_huge_reply_is_read_up_to_a_bound_at_a_line_end():
    text = "Bitte stornieren.\n" + "x" * 100 + "\n" + ("Zeile\n" * 400_000)
    result = trim_reply(text)
    assert result.text.startswith("Bitte stornieren.\n") and result.trimmed
    assert len(result.text) <= 1_000_000 and result.text.endswith("Zeile")


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


def corpus_cases(which) -> list:
    """The corpus mails `which` selects."""
    mails = [m for m in corpus_mails() if which(m)]
    return [pytest.param(m, id=m.key) for m in mails] or [pytest.param(None, id="corpora-missing")]


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
        pytest.skip(MISSING)


@pytest.mark.parametrize("mail", corpus_cases(lambda m: m.expected is not None))
def test_corpus_reply_text_is_exact(mail):
    if mail is None:
        pytest.skip(MISSING)
    result = trim_reply(mail.text())
    assert normalise_whitespace(comparable(mail, result.text)) == normalise_whitespace(mail.expected)


@pytest.mark.parametrize("mail", corpus_cases(lambda m: m.judgment is not None))
def test_corpus_reply_meets_its_judgment(mail):
    if mail is None:
        pytest.skip(MISSING)
    assert mail.judgment.problems(mail.text(), trim_reply(mail.text()).text) == []


def test_every_reply_corpus_mail_has_a_language_and_an_expected_text_or_a_judgment():
    mails = corpus_mails()
    if not mails:
        pytest.skip(MISSING)
    assert {m.corpus for m in mails} == set(REPLY_CORPORA)
    assert [m.key for m in mails if m.language == "?"] == []
    assert [m.key for m in mails if verdict(m, "")[0] == "unjudged"] == []
    assert len([m for m in mails if m.corpus == "crisp_email_reply_parser" and m.expected is not None]) == 46


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
    result = trim_reply((CORPORA / corpus / "emails" / name).read_text(encoding="utf-8"))
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
        pytest.skip(MISSING)
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
