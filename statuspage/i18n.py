"""The pages' words: the project's gettext catalogs (`daemon.translations`), as `_()`.

The pages write their English with str.format placeholders:
`_("Order {number}", number=n)`; `ngettext("{n} order", "{n} orders", n)`
chooses by the catalog's plural rule. Which language a page speaks comes
from the form, else the browser (`negotiate`), else the shop.
"""
from __future__ import annotations

import functools

from daemon import translations


def languages() -> tuple[str, ...]:
    return translations.languages()


def translator(lang: str):
    """`_` for one language (the shop's catalog over ours, see daemon.translations)."""
    return _functions(lang, translations.shop_folder())[0]


def functions(lang: str) -> dict:
    """What a page template calls: `_`, `ngettext`, `pgettext`."""
    _, ngettext, pgettext = _functions(lang, translations.shop_folder())
    return {"_": _, "ngettext": ngettext, "pgettext": pgettext}


@functools.lru_cache(maxsize=16)
def _functions(lang: str, shop_folder: str):
    catalog = translations.get(lang, shop_folder)

    def _(msgid: str, **values) -> str:
        text = catalog.gettext(msgid)
        return text.format(**values) if values else text

    def ngettext(singular: str, plural: str, n: int, **values) -> str:
        return catalog.ngettext(singular, plural, n).format(n=n, **values)

    def pgettext(context: str, msgid: str, **values) -> str:
        text = catalog.pgettext(context, msgid)
        return text.format(**values) if values else text
    return _, ngettext, pgettext


def negotiate(accept_language: str, default: str) -> str:
    """The first of our languages the browser asks for (by q-value), else the shop's."""
    wanted = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        code = tag.strip().lower()[:2]
        if code in languages() and quality > 0:
            wanted.append((-quality, position, code))
    return min(wanted)[2] if wanted else default


def reload() -> None:
    """SIGHUP: the catalogs read again."""
    translations.reload()
    _functions.cache_clear()


def fingerprint() -> str:
    return translations.fingerprint(translations.shop_folder())
