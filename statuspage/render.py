"""Pages from templates: Jinja2 (autoescaped), in the reader's language.

Templates are `templates/page/*.html`, one set for all languages: the words
come from `statuspage.i18n` through `_()`. A shop may put files of the same
names into `[web] templates_dir` to override any of them. Money and dates
are Babel's (the same formatting as the mails); times are shown in
`[web] timezone`, or the server's zone.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from babel import Locale
from babel.dates import format_skeleton

from daemon.outbound import notify
from daemon.config import Settings
from daemon import translations
from statuspage import i18n

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "templates" / "page"
STATIC_DIR = BUILTIN_DIR / "static"


class Renderer:
    """The page templates of one app, with what every page needs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        translations.use_shop_folder(settings.outbound.templates_dir)   # the shop's catalog, if any
        folders = [settings.web.templates_dir, str(BUILTIN_DIR)] if settings.web.templates_dir else [str(BUILTIN_DIR)]
        self.static_dirs = [Path(f) / "static" for f in folders if (Path(f) / "static").is_dir()]
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), autoescape=True,
                                      undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                                      auto_reload=False, cache_size=200)
        self.prefix = urlsplit(settings.shop.base_url).path.rstrip("/")
        self.secure = urlsplit(settings.shop.base_url).scheme == "https"
        self.zone = zoneinfo.ZoneInfo(settings.web.timezone) if settings.web.timezone else None
        self.version = _fingerprint(folders)
        self.shop = {"name": settings.shop.name, "locale": settings.shop.locale}

    def url(self, path: str) -> str:
        """A path of this app as the browser must ask for it (under base_url's path)."""
        return self.prefix + path

    def static(self, name: str) -> str:
        return self.url(f"/static/{name}?v={self.version[:12]}")

    def render(self, name: str, lang: str, **context) -> str:
        common = {"lang": lang, **i18n.functions(lang), "shop": self.shop, "url": self.url,
                  "static": self.static, "money": functools.partial(notify.money, lang=lang),
                  "day": functools.partial(notify.day, lang=lang),
                  "when": functools.partial(self.when, lang=lang), "iso": iso}
        return self.env.get_template(name).render({**common, **context})

    def local(self, moment: dt.datetime) -> dt.datetime:
        """A stored (naive UTC) time in the pages' zone."""
        aware = moment.replace(tzinfo=dt.timezone.utc)
        return aware.astimezone(self.zone) if self.zone else aware.astimezone()

    def when(self, moment: dt.datetime | None, *, lang: str) -> str:
        """Day and time, as a reader of `lang` writes them: "27. Nov. 2026, 11:00"."""
        return _when(self.local(moment), lang) if moment else ""


@functools.lru_cache(maxsize=4096)
def _when(moment: dt.datetime, lang: str) -> str:
    day = format_skeleton("yMMMd", moment, tzinfo=moment.tzinfo, locale=lang)
    time = format_skeleton("Hm", moment, tzinfo=moment.tzinfo, locale=lang)
    return str(Locale.parse(lang).datetime_formats["medium"]).replace("{1}", day).replace("{0}", time)


def iso(moment: dt.datetime | None) -> str:
    """For <time datetime="…">: UTC with a Z."""
    return moment.isoformat(timespec="seconds") + "Z" if moment else ""


def _fingerprint(folders: list[str]) -> str:
    """The templates' and static files' content (and the words): part of every ETag,
    the same in every worker process, new when any of them changes."""
    digest = hashlib.sha256(i18n.fingerprint().encode())
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
