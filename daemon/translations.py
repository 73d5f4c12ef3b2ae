"""Every sentence a reader sees, in their language: one gettext catalog per language.

The catalogs are `templates/locale/<lang>/LC_MESSAGES/ordermail.po`, one
domain for the mails, the pages and the owner's receipts. The languages we
speak are the catalogs present: a new language is a new catalog and nothing
else (`make messages` extracts the English from the code and the templates).
The `.po` files are read directly (compiled in memory when first used, a few
milliseconds), so there is no build step that could leave a stale `.mo`.

A shop may put its own catalog into `[outbound] templates_dir` with the same
layout (`locale/<lang>/LC_MESSAGES/ordermail.po`): its messages win, every
message it leaves out comes from the built-in catalog. A message missing in
a language falls back to English. SIGHUP reads the catalogs again (`reload`).
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

log = logging.getLogger("ordermail.translations")

DOMAIN = "ordermail"
FALLBACK = "en"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "templates" / "locale"


def N_(message: str) -> str:
    """Marks a message for `make messages` where it is written; translated where it is used."""
    return message


_shop_folder = ""


def use_shop_folder(folder: str) -> None:
    """The shop's `[outbound] templates_dir`, for words asked for without settings at
    hand (the pages' helpers in statuspage.views); set by the page renderer. Mails,
    receipts and the CLI pass their settings' folder themselves."""
    global _shop_folder
    _shop_folder = folder


def shop_folder() -> str:
    return _shop_folder


_JOINED = "%(first)s%(then)s"   # two sentences in a row: nothing to translate, so not a literal here


class Said(str):
    """A sentence for the owner (a receipt's line, a command's answer): the English
    text as a plain str — for the log, the API and whatever compares it — that can
    still be said in the shop's language (`say`), with its values, which may be
    Said themselves. The domain service and the commands answer with these."""

    def __new__(cls, msgid: str, **values):
        self = super().__new__(cls, msgid % values if values else msgid)
        self.msgid, self.values = msgid, values
        return self

    def __add__(self, other: str) -> "Said":
        return Said(_JOINED, first=self, then=other)

    def in_language(self, lang: str, shop_dir: str) -> str:
        translated = get(lang, shop_dir).gettext(self.msgid)
        if not self.values:
            return translated
        return translated % {key: say(value, lang, shop_dir) for key, value in self.values.items()}


def joined(parts, separator: str) -> str:
    """Sentences in a row with `separator` between them, each still said in the reader's language.
    One flat Said however many parts (an order's whole log), so saying it never recurses deeply."""
    parts = list(parts)
    if len(parts) < 2:
        return parts[0] if parts else ""
    msgid = separator.replace("%", "%%").join(f"%(p{i})s" for i in range(len(parts)))
    return Said(msgid, **{f"p{i}": part for i, part in enumerate(parts)})


class Columns(Said):
    """Rows of cells (each a str or a Said) in aligned columns, two spaces apart, the last one
    ragged: the widths are measured in the reader's language, since the words' lengths differ."""

    def __new__(cls, rows: list[tuple]):
        self = str.__new__(cls, _aligned([[str(cell) for cell in row] for row in rows]))
        self.msgid, self.values, self.rows = "", {}, rows
        return self

    def in_language(self, lang: str, shop_dir: str) -> str:
        return _aligned([[say(cell, lang, shop_dir) for cell in row] for row in self.rows])


def _aligned(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)] if rows else []
    return "\n".join("  ".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(row)).rstrip()
                     for row in rows)


def said(exc: BaseException) -> str:
    """An exception's message, a Said if it was raised with one."""
    first = exc.args[0] if len(exc.args) == 1 else None
    return first if isinstance(first, Said) else str(exc)


def say(text: str, lang: str, shop_dir: str | None = None) -> str:
    """`text` in `lang` if it is a Said (else as it is)."""
    if not isinstance(text, Said):
        return str(text)
    return text.in_language(lang, _shop_folder if shop_dir is None else shop_dir)


def catalog_path(folder: Path, lang: str) -> Path:
    return folder / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.lru_cache(maxsize=1)
def languages() -> tuple[str, ...]:
    """The languages we speak: those with a built-in catalog, sorted."""
    return tuple(sorted(p.parent.parent.name for p in BUILTIN_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.po")))


@functools.lru_cache(maxsize=64)
def get(lang: str, shop_dir: str = "") -> Translations:
    """The translations for `lang` (English if we do not speak it): the shop's
    catalog first (if it has one), then ours, then English."""
    lang = lang if lang in languages() else FALLBACK
    chain = [_read(catalog_path(Path(shop_dir) / "locale", lang))] if shop_dir else []
    chain += [_read(catalog_path(BUILTIN_DIR, lang))]
    if lang != FALLBACK:
        chain.append(_read(catalog_path(BUILTIN_DIR, FALLBACK)))
    chain = [t for t in chain if t is not None] or [Translations()]
    for first, then in zip(chain, chain[1:]):
        first.add_fallback(then)
    return chain[0]


def _read(path: Path) -> Translations | None:
    """A `.po` file as Translations (compiled in memory); None if there is none.
    A shop's catalog that does not parse is logged and left out, not fatal."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as po:
            catalog = read_po(po, abort_invalid=True)
    except Exception as exc:   # babel raises several kinds for a broken file
        log.error("catalog %s not read (%s: %s); the built-in words are used", path, type(exc).__name__, exc)
        return None
    mo = io.BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return Translations(fp=mo, domain=DOMAIN)


def reload() -> None:
    """SIGHUP: read the catalogs again when next asked (built-in and the shop's)."""
    get.cache_clear()
    languages.cache_clear()


def fingerprint(shop_dir: str = "") -> str:
    """Changes when any catalog does (the pages' ETags carry it)."""
    digest = hashlib.sha256()
    folders = [BUILTIN_DIR] + ([Path(shop_dir) / "locale"] if shop_dir else [])
    for folder in folders:
        for path in sorted(folder.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
            digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()
