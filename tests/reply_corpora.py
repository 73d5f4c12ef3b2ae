"""The public reply corpora (../shared/corpora) and what the trimmer must make of them.

Four corpora hold bare reply texts: github's and zapier's email_reply_parser
fixtures, crisp's (many languages) and mail-parser-reply's. Where a corpus
says what the visible reply is, that text is the goal, exactly; every other
mail is judged in tests/corpus_judgments.toml ("keeps", "drops", "whole"),
which also names each mail's language for the score table. Used by
test_trimming (in process), test_corpus_replies (through the daemon) and
bench/trimming.py (the table and the timings).
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
JUDGMENTS = Path(__file__).resolve().parent / "corpus_judgments.toml"
MISSING = (f"shared mail corpora not found at {CORPORA}: the public reply corpora live "
           "beside the repository (../shared/corpora), not in it")

REPLY_CORPORA = ("github_email_reply_parser", "zapier_email_reply_parser",
                 "crisp_email_reply_parser", "mail_parser_reply")
# Keys of expected_outputs.json whose values are literal expected reply texts.
LITERAL_KEYS = {
    "github_email_reply_parser": ("expected_visible_text", "derived_visible_text"),
    "zapier_email_reply_parser": ("expected_parse_reply", "expected_reply_stripped"),
    "crisp_email_reply_parser": ("expected_visible_text",),
}
# The language of every mail of these corpora (the others' are in the judgments).
ENGLISH_CORPORA = {"github_email_reply_parser": "en", "zapier_email_reply_parser": "en"}
# Corpora whose expected text is, by their own account (expected_outputs.json's
# "_semantics"), the FIRST visible fragment of the reply, not all of it: where
# the writer answers between quoted lines, what follows the first quote is
# more of the reply. Their texts are compared with the kept text up to its
# first kept quote line (the whole text where none is kept); the rest of such
# a mail is judged in corpus_judgments.toml.
FIRST_FRAGMENT_CORPORA = frozenset({"crisp_email_reply_parser"})


def first_fragment(text: str) -> str:
    """The kept text up to its first quoted passage (`> ` lines, as inline
    answers keep them) and the line that introduces it ("On … wrote:")."""
    lines = text.replace("\r\n", "\n").split("\n")
    quoted = next((i for i, line in enumerate(lines) if line.startswith(">")), len(lines))
    if 0 < quoted < len(lines) and lines[quoted - 1].rstrip().endswith(":"):
        quoted -= 1
    return "\n".join(lines[:quoted])


@dataclass(frozen=True)
class Judgment:
    language: str
    keeps: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    whole: bool = False
    note: str = ""

    @property
    def judges(self) -> bool:
        """Does it say anything about the text (not only the language)?"""
        return bool(self.keeps or self.drops or self.whole)

    def problems(self, source: str, text: str) -> list[str]:
        """How `text`, trimmed from `source`, falls short of the judgment."""
        found = [f"lost {piece!r}" for piece in self.keeps if piece not in text]
        found += [f"kept {piece!r}" for piece in self.drops if piece in text]
        if self.whole and normalise_whitespace(text) != normalise_whitespace(source):
            found.append("cut, though nothing in it is the client's")
        return found


@dataclass
class CorpusMail:
    corpus: str
    name: str                     # file name in the corpus' emails/ folder
    path: Path
    language: str
    expected: str | None = None   # the corpus' exact visible text, if it gives one
    judgment: Judgment | None = None

    @property
    def key(self) -> str:
        return f"{self.corpus}/{self.name}"

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def normalise_whitespace(text: str) -> str:
    """Compare texts without line-ending or trailing-space differences."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def available() -> bool:
    return all((CORPORA / corpus / "emails").is_dir() for corpus in REPLY_CORPORA)


def load_expectations(corpus: str) -> dict | None:
    path = CORPORA / corpus / "expected_outputs.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def expected_texts(corpus: str) -> dict[str, str]:
    """File name -> the exact visible reply the corpus asserts."""
    data = load_expectations(corpus) or {}
    found = {}
    for key in LITERAL_KEYS.get(corpus, ()):
        for name, text in data.get(key, {}).items():
            found[name if name.endswith(".txt") else f"{name}.txt"] = text
    return found


def judgments() -> dict[str, Judgment]:
    """'corpus/stem' -> its judgment."""
    data = tomllib.loads(JUDGMENTS.read_text(encoding="utf-8"))
    return {key: Judgment(language=value["language"], keeps=tuple(value.get("keeps", ())),
                          drops=tuple(value.get("drops", ())), whole=value.get("whole", False),
                          note=value.get("note", ""))
            for key, value in data.items()}


def corpus_mails() -> list[CorpusMail]:
    """Every mail of the four reply corpora, with what is expected of it; [] without the corpora."""
    if not available():
        return []
    judged = judgments()
    # github's and zapier's fixtures are mostly the mails judged in the other two
    # corpora, up to line ends and trailing spaces: those judgments hold for them.
    by_content = {normalise_whitespace((CORPORA / key.split("/")[0] / "emails" / f"{key.split('/')[1]}.txt")
                                       .read_text(encoding="utf-8")): judgment
                  for key, judgment in judged.items() if judgment.judges}
    mails = []
    for corpus in REPLY_CORPORA:
        expected = expected_texts(corpus)
        for path in sorted((CORPORA / corpus / "emails").glob("*.txt")):
            judgment = judged.get(f"{corpus}/{path.stem}") or by_content.get(
                normalise_whitespace(path.read_text(encoding="utf-8")))
            language = judgment.language if judgment else ENGLISH_CORPORA.get(corpus, "?")
            mails.append(CorpusMail(corpus, path.name, path, language, expected.get(path.name),
                                    judgment if judgment and judgment.judges else None))
    return mails


def comparable(mail: CorpusMail, trimmed: str) -> str:
    """The part of a trimmed text that the corpus' expected text speaks of."""
    return first_fragment(trimmed) if mail.corpus in FIRST_FRAGMENT_CORPORA else trimmed


def verdict(mail: CorpusMail, trimmed: str) -> tuple[str, list[str]]:
    """("exact" | "judged" | "unjudged", problems) for a mail's trimmed text."""
    if mail.expected is not None:
        same = normalise_whitespace(comparable(mail, trimmed)) == normalise_whitespace(mail.expected)
        return "exact", [] if same else [f"text {trimmed[:300]!r}, the corpus says {mail.expected[:300]!r}"]
    if mail.judgment is not None:
        return "judged", mail.judgment.problems(mail.text(), trimmed)
    return "unjudged", []
