"""What a command mail must prove, attacked as an outsider would: a forged
Authentication-Results header at the SMTP door, several From addresses, a
From that only looks like the owner's — against the running daemon, on both
databases.
"""
from __future__ import annotations

import io
import smtplib

import pytest

from conftest import sample_order
from daemon.orders import service as orders
from daemon.intake import pipe
from daemon.store.models import InboundMessage, Order
from daemonproc import Daemon, wait_until
from mailbuilder import mail

OWNER = "Olga Owner <owner@shop.example>"
TRUSTED = 'trusted_authserv_id = "mx.shop.example"\n'
PASS = {"Authentication-Results": "mx.shop.example; dkim=pass header.d=shop.example; dmarc=pass header.from=shop.example"}


@pytest.fixture
def daemon(store, settings, tmp_path):
    for number in ("1042", "1043", "1044"):
        orders.create_order(store, settings, sample_order(number))
    running = Daemon(tmp_path, settings.database.url, owner_extra=TRUSTED).start()
    yield running
    assert running.stop() == 0, running.log_text()
    assert "Traceback" not in running.log_text()


def paid(number: str) -> bool:
    return Order.get(Order.number == number).status_words()["paid"]


def handled(count: int) -> list[InboundMessage]:
    return wait_until(lambda: (lambda done: done if len(done) >= count else None)(
        list(InboundMessage.select().where(InboundMessage.state == "done").order_by(InboundMessage.id))))


def test_an_authentication_results_header_written_by_the_sender_is_not_obeyed_at_the_smtp_door(daemon, settings):
    """At the SMTP door ordermail is the receiving server: the header came from the sender."""
    forged = mail(to=settings.command_address, sender=OWNER, body="paid 1042", headers=PASS)
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
        assert client.sendmail("owner@shop.example", [settings.command_address], forged) == {}
    [message] = handled(1)
    assert message.reason.startswith("owner mail: discarded, not answered: taken by SMTP directly, "
                                     "so no Authentication-Results header can vouch for it")
    assert not paid("1042")


def test_behind_a_mail_server_its_topmost_header_vouches_and_only_that_one(daemon, settings):
    """LMTP is where Postfix (with OpenDMARC) hands mail over, its own header on top."""
    genuine = mail(to=settings.command_address, sender=OWNER, body="paid 1043", headers=PASS)
    failing_on_top = (b"Authentication-Results: mx.shop.example; dkim=fail header.d=shop.example\r\n"
                      + mail(to=settings.command_address, sender=OWNER, body="paid 1044", headers=PASS))
    with smtplib.LMTP("127.0.0.1", daemon.lmtp_port, timeout=30) as client:
        assert client.sendmail("owner@shop.example", [settings.command_address], genuine) == {}
        assert client.sendmail("owner@shop.example", [settings.command_address], failing_on_top) == {}
    first, second = handled(2)
    assert paid("1043") and "command result" in first.reason
    assert not paid("1044") and "mx.shop.example reports no aligned dkim or dmarc pass" in second.reason


# ---- one From, one address -------------------------------------------------------------------

def _with_from(raw: bytes, value: bytes, extra_from: bytes | None = None) -> bytes:
    """raw with its From header replaced (and another From line after it, if given)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = [b"From: " + value if line.startswith(b"From: ") else line for line in head.split(b"\r\n")]
    if extra_from is not None:
        lines.insert(1 + next(i for i, line in enumerate(lines) if line.startswith(b"From: ")),
                     b"From: " + extra_from)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


FROMS = {
    "two addresses": (b"owner@shop.example, mallory@evil.example", None, "names 2 addresses"),
    "two From lines": (b"Olga Owner <owner@shop.example>", b"mallory@evil.example", "2 From headers"),
    "an address after the brackets": (b"<owner@shop.example>@evil.example", None, "malformed"),
    "a group": (b"owners: owner@shop.example;", None, "a group"),
}


@pytest.mark.parametrize("case", sorted(FROMS))
def test_a_command_mail_names_one_sender_in_one_from_header(store, settings, case):
    orders.create_order(store, settings, sample_order("1042"))
    value, extra, reason = FROMS[case]
    raw = _with_from(mail(to=settings.command_address, sender=OWNER, body="paid 1042"), value, extra)
    pipe.deliver(store, settings, io.BytesIO(raw), [settings.command_address], "owner@shop.example")
    [message] = InboundMessage.select()
    assert message.reason.startswith("owner mail: discarded, not answered:") and reason in message.reason
    assert not paid("1042")
    clean = _with_from(mail(to=settings.command_address, sender=OWNER, body="paid 1042"),   # as a mail client
                       b"=?utf-8?q?Olga_=C3=9Cberall_Owner?=\r\n <owner@shop.example>")         # folds a long one
    pipe.deliver(store, settings, io.BytesIO(clean), [settings.command_address], "owner@shop.example")
    assert paid("1042")
