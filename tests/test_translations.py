"""The catalogs: every language says every message, with the English's placeholders;
a language is its catalog alone (Dutch proves it); a shop's own catalog and
templates win over ours."""
from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from conftest import sample_order
from daemon import translations
from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.config import SUPPORTED_LOCALES, settings_from_dict
from daemon.errors import ConfigError
from daemon.store.models import OutboxMessage
from statuspage import i18n

ROOT = Path(__file__).resolve().parents[1]
LOCALES = ROOT / "templates" / "locale"
NOW = dt.datetime(2026, 11, 27, 10, 0)
# %(name)s and %(num)d (templates, receipts) and {name} (pages), each as a name
PLACEHOLDER = re.compile(r"%\((\w+)\)-?\d*[sd]|\{(\w+)\}")


def placeholders(text) -> set[str]:
    texts = text if isinstance(text, (tuple, list)) else (text,)
    return {a or b for t in texts for a, b in PLACEHOLDER.findall(t or "")}


def catalog_problems(po: Path, template: Path) -> list[str]:
    """What a catalog lacks against the extracted English (ordermail.pot)."""
    with template.open("rb") as f:
        english = {(m.context, m.id): m for m in read_po(f) if m.id}
    with po.open("rb") as f:
        catalog = {(m.context, m.id): m for m in read_po(f) if m.id}
    lang, problems = po.parents[1].name, []
    for key, message in english.items():
        found = catalog.get(key)
        if found is None:
            problems.append(f"{lang}: missing {key[1]!r}")
        elif lang != translations.FALLBACK:
            forms = found.string if isinstance(found.string, tuple) else (found.string,)
            if found.fuzzy or not all(forms):
                problems.append(f"{lang}: not translated {key[1]!r}")
            elif placeholders(found.string) != placeholders(message.id):
                problems.append(f"{lang}: placeholders {sorted(placeholders(found.string))} "
                                f"!= {sorted(placeholders(message.id))} in {key[1]!r}")
    return problems


def test_every_catalog_says_every_message_with_the_english_placeholders():
    catalogs = sorted(LOCALES.glob("*/LC_MESSAGES/ordermail.po"))
    assert [p.parents[1].name for p in catalogs] == list(SUPPORTED_LOCALES) == ["de", "en", "fr", "nl"]
    problems = [p for po in catalogs for p in catalog_problems(po, LOCALES / "ordermail.pot")]
    assert not problems, "\n".join(problems)


def test_the_check_finds_a_missing_message_and_a_wrong_placeholder(tmp_path):
    po = tmp_path / "xx" / "LC_MESSAGES" / "ordermail.po"
    po.parent.mkdir(parents=True)
    text = (LOCALES / "nl" / "LC_MESSAGES" / "ordermail.po").read_text(encoding="utf-8")
    text = text.replace('msgstr "Beste %(name)s,"', 'msgstr "Beste %(naam)s,"')
    text = text.replace('msgid "Track your parcel: %(tracking_url)s"\nmsgstr "Volg uw pakket: %(tracking_url)s"\n', "")
    po.write_text(text, encoding="utf-8")
    problems = catalog_problems(po, LOCALES / "ordermail.pot")
    assert problems == ["xx: placeholders ['naam'] != ['name'] in 'Dear %(name)s,'",
                        "xx: missing 'Track your parcel: %(tracking_url)s'"]


def test_the_template_holds_every_message_of_the_code_and_the_templates():
    """`make messages` was run: what pybabel extracts now is what the catalogs were made from."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    keywords = {**DEFAULT_KEYWORDS, "Said": None, "N_": None}
    said = {(context, msgid if isinstance(msgid, str) else msgid[0])
            for *_, msgid, _comments, context in extract_from_dir(str(ROOT), method_map, options_map,
                                                                    keywords=keywords)}
    with (LOCALES / "ordermail.pot").open("rb") as f:
        extracted = {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in read_po(f) if m.id}
    assert said == extracted


# ---- Dutch: a language by its catalog alone ----------------------------------------------------

def test_a_dutch_order_gets_dutch_mails_money_and_dates(store, settings):
    orders.create_order(store, settings, sample_order("1042", locale="nl"), now=NOW)
    mail = notify.compose(settings, OutboxMessage.select().order_by(OutboxMessage.id.desc()).first(), NOW)
    text = mail.get_body(("plain",)).get_content()
    assert mail["Subject"] == "Uw bestelling 1042 bij Teeladen"
    assert "Beste Erika Mustermann," in text and "Bedankt voor uw bestelling!" in text
    assert "27 november 2026" in text and "€\u00a024,90" in text


def test_a_dutch_shop_is_configured_and_answers_in_dutch(store, settings):
    dutch = dataclasses.replace(settings, shop=dataclasses.replace(settings.shop, locale="nl"))
    orders.create_order(store, dutch, sample_order("1042"), now=NOW)
    change = orders.mark_paid(store, dutch, "1042")
    assert translations.say(change.summary, dutch.shop.locale) == "1042 als betaald gemarkeerd"
    assert str(change.summary) == "1042 marked paid"          # the log and the API keep the English
    assert i18n.negotiate("nl-BE, nl;q=0.9", "de") == "nl"
    assert i18n.translator("nl")("Order {number}", number="1042") == "Bestelling 1042"


def test_a_language_without_a_catalog_is_refused_by_the_configuration():
    with pytest.raises(ConfigError, match=r"\[shop\] locale must be one of de, en, fr, nl, not 'pl'"):
        settings_from_dict({"shop": {"name": "Sklep", "address": "orders@shop.example",
                                     "base_url": "https://shop.example/status", "locale": "pl"},
                            "database": {"url": "sqlite:///:memory:"}})


# ---- the shop's own words ---------------------------------------------------------------------

def _shop_settings(settings, folder: Path):
    return dataclasses.replace(settings, outbound=dataclasses.replace(settings.outbound, templates_dir=str(folder)))


def test_a_shop_catalog_overrides_single_messages_and_leaves_the_rest(store, settings, tmp_path):
    po = tmp_path / "locale" / "de" / "LC_MESSAGES" / "ordermail.po"
    po.parent.mkdir(parents=True)
    po.write_text('msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                  'msgid "Dear %(name)s,"\nmsgstr "Hallo %(name)s,"\n', encoding="utf-8")
    shop = _shop_settings(settings, tmp_path)
    try:
        orders.create_order(store, shop, sample_order("1042"), now=NOW)
        mail = notify.compose(shop, OutboxMessage.select().order_by(OutboxMessage.id.desc()).first(), NOW)
        text = mail.get_body(("plain",)).get_content()
        assert "Hallo Erika Mustermann," in text and "Guten Tag" not in text
        assert mail["Subject"] == "Ihre Bestellung 1042 bei Teeladen"     # the rest as built in
    finally:
        translations.reload()


def test_a_shop_template_without_a_language_overrides_it_in_every_language(store, settings, tmp_path):
    (tmp_path / "created.txt").write_text('Subject: {{ _("Order %(number)s", number=order.number) }}!\n\n'
                                          '{{ _("Dear %(name)s,", name=order.name) }} -- ours\n', encoding="utf-8")
    shop = _shop_settings(settings, tmp_path)
    for number, lang, hello in (("1042", "de", "Guten Tag"), ("1043", "nl", "Beste")):
        orders.create_order(store, shop, sample_order(number, locale=lang), now=NOW)
        mail = notify.compose(shop, OutboxMessage.select().order_by(OutboxMessage.id.desc()).first(), NOW)
        assert mail["Subject"] == {"de": "Bestellung", "nl": "Bestelling"}[lang] + f" {number}!"
        assert f"{hello} Erika Mustermann, -- ours" in mail.get_body(("plain",)).get_content()


def test_a_long_run_of_sentences_is_said_whole():
    """An order's log of thousands of entries in a receipt: said in one piece, in the shop's language."""
    text = translations.joined([translations.Said("paid")] * 5000, "\n")
    assert text == "\n".join(["paid"] * 5000)
    assert translations.say(text, "de", "") == "\n".join(["bezahlt"] * 5000)
