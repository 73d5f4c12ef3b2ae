"""How many messages one sender and one client get through the SMTP/LMTP
doors in an hour: the count itself (with a clock of our own), and the doors
of a running `ordermail serve` answering 450 4.7.1 over the limit."""
from __future__ import annotations

import datetime as dt
import smtplib

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.config import settings_from_dict
from daemon.errors import ConfigError
from daemon.intake import rates as rates_module
from daemon.intake.connections import ExemptNetworks
from daemon.intake.rates import MessageRates
from daemonproc import Daemon
from mailbuilder import mail


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(per_sender=3, per_client=5, exempt=("127.0.0.0/8",), owners=("owner@shop.example",)):
    clock = Clock()
    return MessageRates(per_sender, per_client, ExemptNetworks(exempt), owners, clock=clock), clock


def take(rates: MessageRates, sender: str, client: str, times: int = 1) -> None:
    for _ in range(times):
        assert rates.refusal(sender, client) is None
        rates.taken(sender, client)


def test_one_sender_gets_its_share_an_hour_and_then_again():
    rates, clock = counted()
    take(rates, "erika@example.org", "192.0.2.7", 3)
    assert rates.refusal("Erika@Example.ORG", "198.51.100.1") == (
        "450 4.7.1 Too many messages from erika@example.org this hour, try again later")
    assert rates.refusal("max@example.org", "198.51.100.1") is None       # others are not held up
    clock.now += 3300                                                     # 55 minutes on
    assert rates.refusal("erika@example.org", "198.51.100.1") is not None
    clock.now += 300                                                      # their 5 minutes have left the hour
    take(rates, "erika@example.org", "198.51.100.1")


def test_ipv6_clients_are_counted_by_their_64_bit_prefix():
    rates, clock = counted()
    for n in range(5):
        take(rates, f"sender{n}@example.org", f"2001:db8:1:2::{n + 1}")
    assert rates.refusal("new@example.org", "2001:db8:1:2:ffff::9") == (
        "450 4.7.1 Too many messages from 2001:db8:1:2::/64 this hour, try again later")
    assert rates.refusal("new@example.org", "2001:db8:1:3::1") is None        # the next /64 is another client


def test_one_client_gets_its_share_whatever_senders_it_names():
    rates, clock = counted()
    for n in range(5):
        take(rates, f"sender{n}@example.org", "192.0.2.7")
    assert rates.refusal("new@example.org", "192.0.2.7") == (
        "450 4.7.1 Too many messages from 192.0.2.7 this hour, try again later")
    assert rates.refusal("new@example.org", "192.0.2.8") is None


def test_bounces_the_owner_and_postfix_in_front_are_not_counted_where_they_must_not_be():
    rates, clock = counted()
    take(rates, "<>", "127.0.0.1", 10)                   # null sender, exempt client: a higher limit
    take(rates, "owner@shop.example", "127.0.0.1", 10)   # the owner's commands
    take(rates, "erika@example.org", "127.0.0.1", 3)     # behind Postfix the sender still counts
    assert rates.refusal("erika@example.org", "127.0.0.1") is not None
    take(rates, "<>", "192.0.2.7", 5)                    # a bounce storm from one client is bounded
    assert rates.refusal("<>", "192.0.2.7") is not None


def test_writing_the_null_sender_or_the_owners_address_does_not_get_past_the_limit():
    """Anyone can write MAIL FROM:<> or the owner's address: each is counted, at ten times the limit."""
    rates, clock = counted(per_sender=3)
    take(rates, "<>", "127.0.0.1", 30)
    assert rates.refusal("<>", "127.0.0.2") == (
        "450 4.7.1 Too many messages from the null sender this hour, try again later")
    take(rates, "Owner@Shop.Example", "127.0.0.1", 30)
    assert rates.refusal("owner@shop.example", "127.0.0.1") == (
        "450 4.7.1 Too many messages from owner@shop.example this hour, try again later")
    assert rates.refusal("erika@example.org", "127.0.0.1") is None    # each is a sender of its own
    clock.now += 3600
    take(rates, "<>", "127.0.0.1")


def test_memory_stays_bounded_under_a_flood_of_senders(monkeypatch):
    monkeypatch.setattr(rates_module, "MAX_TRACKED", 50)
    rates, clock = counted(per_sender=2, exempt=("0.0.0.0/0",))
    sweeps = []
    sweep = rates._forget_expired
    monkeypatch.setattr(rates, "_forget_expired", lambda bucket: (sweeps.append(bucket), sweep(bucket)))
    for n in range(200):
        take(rates, f"spam{n}@example.net", "192.0.2.7")
        assert len(rates._taken) <= 50
    for n in range(400):                                  # a steady flood: a few keys leave the hour at a time
        clock.now += 70
        take(rates, f"steady{n}@example.net", "192.0.2.7")
    assert len(sweeps) <= 30                              # not a sweep of every key for every few new senders
    take(rates, "erika@example.org", "192.0.2.7", 2)
    clock.now += 3601                                    # all expired: forgotten at the next sweep
    for n in range(60):
        take(rates, f"late{n}@example.net", "192.0.2.7")
    assert len(rates._taken) <= 50


@pytest.mark.parametrize("key", ["messages_per_sender_per_hour", "messages_per_client_per_hour"])
def test_a_limit_below_one_is_a_config_error(key):
    with pytest.raises(ConfigError, match=rf"\[inbound\] {key} must be at least 1, not 0"):
        settings_from_dict({"inbound": {key: 0}})


# ---- over sockets --------------------------------------------------------------------------

def test_the_doors_answer_450_over_a_senders_limit_smtp_and_lmtp_counted_together(
        store, settings, tmp_path, reply_to_order):
    daemon = Daemon(tmp_path, settings.database.url, messages_per_sender_per_hour=3).start()
    to = reply_to_order
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
            for n in range(2):
                client.sendmail("erika@example.org", [to], mail(to=to, body=f"Nummer {n}"))
        with smtplib.LMTP("127.0.0.1", daemon.lmtp_port, timeout=10) as client:
            client.sendmail("erika@example.org", [to], mail(to=to, body="Nummer 2"))
            assert client.mail("erika@example.org") == (
                450, b"4.7.1 Too many messages from erika@example.org this hour, try again later")
            client.rset()
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                client.sendmail("erika@example.org", [to], mail(to=to, body="Nummer 3"))
            assert refused.value.smtp_code == 450
            client.sendmail("max@example.org", [to], mail(to=to, sender="max@example.org", body="Von Max"))
            client.sendmail("owner@shop.example", ["orders@shop.example"],
                            mail(to="orders@shop.example", sender="owner@shop.example", body="note"))
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def test_the_doors_count_the_null_sender_and_the_owners_address_too(store, settings, tmp_path, reply_to_order):
    daemon = Daemon(tmp_path, settings.database.url, messages_per_sender_per_hour=2).start()
    to = reply_to_order
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
            for sender in ("<>", "owner@shop.example"):
                for n in range(20):
                    assert client.sendmail(sender, [to], mail(to=to, body=f"Flut {n}")) == {}
                assert client.mail(sender)[0] == 450
                client.rset()
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


@pytest.fixture
def reply_to_order(store, settings):
    order = orders.create_order(store, settings, sample_order())
    return token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())
