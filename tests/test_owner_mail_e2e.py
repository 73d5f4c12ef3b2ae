"""The owner's mail workflow end to end: the running daemon, SMTP and swaks in,
the outbound maildir out — on both databases."""
from __future__ import annotations

import email
import email.policy
import smtplib
import time
from email.utils import getaddresses

import pytest

from conftest import sample_order
from daemon.orders import service as orders
from daemon.store.models import Order
from daemonproc import Daemon
from mailbuilder import mail
from realservers import swaks  # noqa: F401  (fixture)
from test_owner_mail import dkim_key  # noqa: F401  (fixture)

OWNER = "Olga Owner <owner@shop.example>"


@pytest.fixture
def daemon(store, settings, tmp_path):
    orders.create_order(store, settings, sample_order("1042"))
    orders.create_order(store, settings, sample_order("1043", customer={"name": "Jean Dupont",
                                                                          "email": "jean@example.fr"}))
    running = Daemon(tmp_path, settings.database.url).start()
    yield running
    assert running.stop() == 0, running.log_text()
    assert "Traceback" not in running.log_text()


def outgoing(daemon) -> list[email.message.EmailMessage]:
    folder = daemon.maildir / "new"
    if not folder.exists():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)]


def wait_for_mail(daemon, match, seconds: float = 30.0) -> email.message.EmailMessage:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for message in outgoing(daemon):
            if match(message):
                return message
        time.sleep(0.1)
    raise AssertionError(f"no such mail; have: {[(m['To'], m['Subject']) for m in outgoing(daemon)]}\n"
                         + daemon.log_text()[-3000:])


def to(message) -> str:
    return getaddresses([message["To"] or ""])[0][1]


def send(daemon, raw: bytes, recipient: str, sender: str = "owner@shop.example"):
    with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30) as client:
        return client.sendmail(sender, [recipient], raw)


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_a_command_mail_is_carried_out_and_answered_by_a_receipt(daemon, settings):
    send(daemon, mail(to=settings.command_address, sender=OWNER, subject="Heute",
                      body="paid 1042\nshipped 1043 tracking ABC123", message_id="<cmd1@owner.example>"),
         settings.command_address)
    receipt = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example" and "Heute" in m["Subject"])
    assert receipt["In-Reply-To"] == "<cmd1@owner.example>"
    assert "1042 als bezahlt vermerkt" in text_of(receipt) and "1043 als versandt vermerkt" in text_of(receipt)
    wait_for_mail(daemon, lambda m: to(m) == "erika@example.org" and m["References"])
    assert Order.get(Order.number == "1042").status_words()["paid"]


def test_a_forged_from_at_the_plain_address_commands_nothing(daemon, swaks):
    result = swaks("--to", "orders@shop.example", "--from", "owner@shop.example",
                   "--header", "From: Olga Owner <owner@shop.example>", "--header", "Subject: Befehl",
                   "--body", "paid 1042", server=("127.0.0.1", daemon.smtp_port))
    assert result.returncode == 0, result.stdout
    forward = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example")
    assert "Receipt" not in forward["Subject"] and "Befehl" in forward["Subject"]
    assert not Order.get(Order.number == "1042").status_words()["paid"]


def test_a_stranger_at_the_command_address_gets_nothing_and_the_owner_is_alerted(daemon, settings, swaks):
    for _ in range(2):
        swaks("--to", settings.command_address, "--from", "mallory@evil.example",
              "--header", "Subject: paid 1042", "--body", "paid 1042", server=("127.0.0.1", daemon.smtp_port))
    alert = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example")
    assert "mallory@evil.example" in text_of(alert)
    time.sleep(1)
    recipients = [to(m) for m in outgoing(daemon)]
    assert recipients.count("owner@shop.example") == 1 and "mallory@evil.example" not in recipients
    assert not Order.get(Order.number == "1042").status_words()["paid"]


def test_a_full_event_with_a_picture_reaches_the_customer(daemon, settings, swaks, tmp_path):
    picture = tmp_path / "kanne.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"p" * 2000)
    result = swaks("--to", settings.command_address, "--from", "owner@shop.example",
                   "--header", "From: Olga Owner <owner@shop.example>",
                   "--header", "Subject: shipped 1042 carrier DHL tracking 00340434",
                   "--body", "Ihre Kanne ist unterwegs!", "--attach", f"@{picture}",
                   server=("127.0.0.1", daemon.smtp_port))
    assert result.returncode == 0, result.stdout
    shipped = wait_for_mail(daemon, lambda m: to(m) == "erika@example.org" and "00340434" in text_of(m))
    assert "Ihre Kanne ist unterwegs!" in text_of(shipped)
    attached = [part.get_content() for part in shipped.iter_attachments()]
    assert picture.read_bytes() in attached


def test_quiet_sends_the_customer_nothing(daemon, settings):
    send(daemon, mail(to=settings.command_address, sender=OWNER, subject="x", body="paid 1042 quiet"),
         settings.command_address)
    wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example")
    time.sleep(1)
    assert [to(m) for m in outgoing(daemon)].count("erika@example.org") == 1    # the confirmation only


def test_undo_by_replying_to_the_receipt(daemon, settings):
    send(daemon, mail(to=settings.command_address, sender=OWNER, subject="Batch", body="paid 1043",
                      message_id="<cmd2@owner.example>"), settings.command_address)
    receipt = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example")
    send(daemon, mail(to=settings.command_address, sender=OWNER, subject="Re: Batch", body="undo",
                      in_reply_to=receipt["Message-ID"]), settings.command_address)
    wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example" and "rückgängig gemacht" in text_of(m))
    assert not Order.get(Order.number == "1043").status_words()["paid"]


def test_the_owner_answers_a_customer_by_replying_to_the_forward(daemon, settings):
    first = wait_for_mail(daemon, lambda m: to(m) == "erika@example.org")      # the order confirmation
    reply_to = getaddresses([first["Reply-To"]])[0][1]
    send(daemon, mail(to=reply_to, body="Kann man die Kanne gravieren?", message_id="<q1@example.org>"),
         reply_to, sender="erika@example.org")
    forward = wait_for_mail(daemon, lambda m: to(m) == "owner@shop.example")
    answer_to = getaddresses([forward["Reply-To"]])[0][1]
    assert answer_to != reply_to and "Kann man die Kanne gravieren?" in forward.as_string()
    send(daemon, mail(to=answer_to, sender=OWNER, subject="Re: Gravur",
                      body="Ja, gern, 5 Euro extra.\n\nAm 27.11.2026 schrieb Erika:\n> Kann man?"), answer_to)
    answer = wait_for_mail(daemon, lambda m: to(m) == "erika@example.org" and "5 Euro extra" in text_of(m))
    assert "Kann man?" not in text_of(answer)


@pytest.fixture
def proving_daemon(store, settings, tmp_path, dkim_key):
    """A daemon that wants a proof: the trusted authserv-id, or a DKIM signature."""
    orders.create_order(store, settings, sample_order("1042"))
    orders.create_order(store, settings, sample_order("1043"))
    _, keys = dkim_key
    running = Daemon(tmp_path, settings.database.url, owner_extra=(
        'trusted_authserv_id = "mx.shop.example"\nverify_dkim = true\n'
        f'dkim_keys_file = "{keys}"\n')).start()
    yield running
    assert running.stop() == 0, running.log_text()


def test_only_proven_owner_mail_commands_through_the_daemon(proving_daemon, settings, dkim_key):
    from test_owner_mail import _signed
    private, _ = dkim_key
    address = settings.command_address
    injected = mail(to=address, sender=OWNER, subject="a", body="paid 1042",
                    headers={"Authentication-Results": "evil.example; dkim=pass header.d=shop.example"})
    broken = _signed(mail(to=address, sender=OWNER, subject="b", body="paid 1042"), private).replace(
        b"paid 1042", b"paid 1042 ")
    vouched = mail(to=address, sender=OWNER, subject="c", body="paid 1043",
                   headers={"Authentication-Results": "mx.shop.example; dmarc=pass header.from=shop.example"})
    signed = _signed(mail(to=address, sender=OWNER, subject="d", body="shipped 1043"), private)
    for raw in (injected, broken):
        send(proving_daemon, raw, address)
    with smtplib.LMTP("127.0.0.1", proving_daemon.lmtp_port, timeout=30) as client:   # the header's writer in front
        client.sendmail("owner@shop.example", [address], vouched)
    send(proving_daemon, signed, address)
    wait_for_mail(proving_daemon, lambda m: m["Subject"] == "Re: d" and "1043 als versandt vermerkt" in text_of(m))
    assert not Order.get(Order.number == "1042").status_words()["paid"]
    assert Order.get(Order.number == "1043").status_words() == {
        "paid": True, "shipped": True, "cancelled": False, "refunded": False}
    alerts = [m for m in outgoing(proving_daemon) if "nicht ausgeführt" in text_of(m)]
    assert len(alerts) == 1                     # two refused mails, one alert a day
