"""Configuration: the contract's TOML, every mistake named by its key."""
from __future__ import annotations

import pytest

from conftest import ROOT
from daemon.config import load_settings, settings_from_dict
from daemon.errors import ConfigError


def test_the_example_configuration_loads_and_matches_the_contract():
    settings = load_settings(ROOT / "config" / "ordermail.example.toml")
    assert settings.shop.address == "orders@shop.example"
    assert settings.inbound.max_message_bytes == 26214400
    assert settings.payment["bank_transfer"].cancel_after_days == 21
    assert settings.command_address == "orders+cmd-change-me-to-a-long-random-string@shop.example"


def test_an_empty_file_gives_the_embedded_defaults(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    settings = load_settings(path)
    assert settings.database.url == "sqlite:///var/ordermail.db"
    assert settings.outbound.mode == "maildir" and set(settings.payment) == {"bank_transfer", "paypal"}


def test_settings_are_frozen():
    settings = settings_from_dict({})
    with pytest.raises(AttributeError):
        settings.shop.name = "other"


@pytest.mark.parametrize("raw, message", [
    ({"shop": {"nmae": "x"}}, "unknown key [shop] nmae"),
    ({"shopp": {}}, "unknown key shopp"),
    ({"inbound": {"imap": {"prot": 1}}}, "unknown key [inbound.imap] prot"),
    ({"inbound": {"imap": {"port": "993"}}}, "[inbound.imap] port must be a whole number"),
    ({"inbound": {"max_message_bytes": True}}, "[inbound] max_message_bytes must be a whole number"),
    ({"owner": {"addresses": "owner@shop.example"}}, "[owner] addresses must be a list of strings"),
    ({"owner": {"secret": "short"}}, "[owner] secret must be at least 16 characters"),
    ({"shop": {"locale": "es"}}, "[shop] locale must be one of de, en, fr"),
    ({"shop": {"address": "orders+x@shop.example"}}, "[shop] address must be a plain address"),
    ({"outbound": {"mode": "carrier-pigeon"}}, "[outbound] mode must be"),
    ({"web": {"listen": "8080"}}, "[web] listen must be HOST:PORT"),
    ({"database": {"url": "sqlite://"}}, "[database] url 'sqlite://' names no file"),
    ({"database": {"url": "postgresql://host/"}}, "names no database"),
    ({"payment": {"cash": {"instructions": "Pay {amount}"}}}, "[payment.cash] instructions: unknown placeholder {amount}"),
    ({"payment": {"cash": {"lable": "x"}}}, "unknown key [payment.cash] lable"),
    ({"inbound": {"max_connections": 0}}, "[inbound] max_connections must be at least 1, not 0"),
    ({"inbound": {"max_connections_per_client": 0}}, "[inbound] max_connections_per_client must be at least 1"),
    ({"inbound": {"connection_limit_exempt": ["10.0.0.0/33"]}},
     "[inbound] connection_limit_exempt: '10.0.0.0/33' is not a network"),
    ({"inbound": {"connection_limit_exempt": "127.0.0.0/8"}},
     "[inbound] connection_limit_exempt must be a list of strings"),
    ({"log": {"format": "xml"}}, '[log] format must be "text" or "json", not \'xml\''),
    ({"log": {"level": "verbose"}}, "[log] level must be one of debug, info, warning, error, not 'verbose'"),
    ({"log": {"fiel": ""}}, "unknown key [log] fiel"),
])
def test_mistakes_are_named_by_their_key(raw, message):
    with pytest.raises(ConfigError) as raised:
        settings_from_dict(raw)
    assert message in str(raised.value)


@pytest.mark.parametrize("section, key, tls_on, tls_off", [
    ("inbound.imap", "ca_file", {"tls": True}, {"tls": False}),
    ("outbound", "smtp_ca_file", {"smtp_tls": "starttls"}, {"smtp_tls": "none"}),
])
def test_a_ca_file_must_be_a_file_and_needs_tls(tmp_path, section, key, tls_on, tls_off):
    def settings_with(path, tls):
        values = {key: str(path), **tls}
        return settings_from_dict({"inbound": {"imap": values}} if section == "inbound.imap" else {section: values})

    path = tmp_path / "ca.pem"
    for absent in ("missing", "folder"):
        if absent == "folder":
            path.mkdir()
        with pytest.raises(ConfigError) as raised:
            settings_with(path, tls_on)
        assert str(raised.value).startswith(f"[{section}] {key} '{path}' is not a file")
    path.rmdir()
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=rf"\[{section}\] {key} is set but TLS is off"):
        settings_with(path, tls_off)
    loaded = settings_with(path, tls_on)
    assert (loaded.inbound.imap.ca_file if section == "inbound.imap" else loaded.outbound.smtp_ca_file) == str(path)


def test_configured_payment_methods_replace_the_defaults():
    settings = settings_from_dict({"payment": {"invoice": {"label": "Rechnung"}}})
    assert set(settings.payment) == {"invoice"}
