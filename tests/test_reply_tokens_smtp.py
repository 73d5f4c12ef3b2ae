"""Reply tokens at the SMTP door: forged, expired, re-pointed and misused tokens.

A reply address is orders+TOKEN@shop.example; the token names an order and a
purpose and carries a MAC keyed by that order's secret (daemon/mail/tokens.py).
Everything here talks to a running `ordermail serve` over SMTP (the `daemon`
fixture of test_intake_smtp), on SQLite and PostgreSQL, except the unit-level
checks of the binding at the end.
"""
from __future__ import annotations

import base64
import datetime as dt

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import check_recipient, token_address
from daemon.errors import UnknownRecipient
from daemon.store.models import Event, InboundMessage, OutboxMessage, utcnow
from daemonproc import wait_until
from mailbuilder import mail
from test_intake_smtp import daemon, order, replies_on, smtp  # noqa: F401  (fixtures and helpers)

ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"      # base32, as mail/tokens.py writes it (lower case)


def today() -> dt.date:
    """The daemon's day: it checks expiry against the UTC date."""
    return utcnow().date()


def token_of(address: str) -> str:
    return address.partition("@")[0].partition("+")[2]


def with_token(address: str, token: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local.partition('+')[0]}+{token}@{domain}"


def raw_token(token: str) -> bytearray:
    return bytearray(base64.b32decode(token.upper() + "==="))


def encode_token(raw: bytes) -> str:
    return base64.b32encode(bytes(raw)).decode("ascii").rstrip("=").lower()


def forge_mac(address: str) -> str:
    """The same token with one character inside its MAC changed."""
    token = token_of(address)
    at = 20                                     # characters 13..27 encode MAC bits only
    forged = token[:at] + ALPHABET[(ALPHABET.index(token[at]) + 1) % 32] + token[at + 1:]
    genuine, changed = tokens.read_token(token), tokens.read_token(forged)
    assert changed.body == genuine.body and changed.mac != genuine.mac    # same claim, other MAC
    return with_token(address, forged)


def repoint(address: str, order_id: int) -> str:
    """The token with its order id edited to `order_id`, its MAC kept."""
    raw = raw_token(token_of(address))
    raw[1:5] = order_id.to_bytes(4, "big")
    edited = encode_token(raw)
    assert tokens.read_token(edited).order_id == order_id
    return with_token(address, edited)


def repurpose(address: str, purpose: int) -> str:
    """The token with its purpose byte edited, its MAC kept."""
    raw = raw_token(token_of(address))
    raw[5] = purpose
    edited = encode_token(raw)
    assert tokens.read_token(edited).purpose == purpose
    return with_token(address, edited)


def rcpt(daemon, address: str) -> tuple[int, bytes]:  # noqa: F811
    with smtp(daemon) as client:
        assert client.mail("erika@example.org")[0] == 250
        return client.rcpt(address)


def settled() -> list[InboundMessage]:
    """Every stored message, once none waits to be handled."""
    wait_until(lambda: not InboundMessage.select().where(
        InboundMessage.state.in_(["new", "processing"])).exists(), 30)
    return list(InboundMessage.select().order_by(InboundMessage.id))


def second_order(store, settings):
    return orders.create_order(store, settings, sample_order(
        "1043", customer={"name": "Max Muster", "email": "max@example.org"}))


# ---- refused at RCPT --------------------------------------------------------------------

def test_a_token_whose_mac_has_one_character_changed_is_refused_at_rcpt(daemon, settings, order):  # noqa: F811
    genuine = token_address(settings, order, tokens.CUSTOMER_REPLY, today())
    forged = forge_mac(genuine)
    code, answer = rcpt(daemon, forged)
    assert (code, answer) == (550, b"5.1.1 No such recipient here")
    with smtp(daemon) as client:                       # the genuine one, in the same session, is taken
        client.mail("erika@example.org")
        assert client.rcpt(forged)[0] == 550
        assert client.rcpt(genuine)[0] == 250
        code, _ = client.data(mail(to=genuine, body="Echt."))
        assert code == 250
    [message] = settled()
    assert message.recipients == [genuine]             # the forged address was never taken
    assert [e.body_text for e in replies_on("1042")] == ["Echt."]


def test_an_expired_token_is_refused_at_rcpt_with_a_reason(daemon, settings, order):  # noqa: F811
    days = settings.inbound.reply_token_days
    assert days > 0, "tokens carry an issue day and expire after [inbound] reply_token_days"
    expired = token_address(settings, order, tokens.CUSTOMER_REPLY, today() - dt.timedelta(days=days + 1))
    still_good = token_address(settings, order, tokens.CUSTOMER_REPLY, today() - dt.timedelta(days=days - 1))
    code, answer = rcpt(daemon, expired)
    assert code == 550
    assert answer == b"5.1.1 This reply address has expired; please write to the shop's address"
    with smtp(daemon) as client:
        client.sendmail("erika@example.org", [still_good], mail(to=still_good, body="Gerade noch rechtzeitig."))
    settled()
    assert [e.body_text for e in replies_on("1042")] == ["Gerade noch rechtzeitig."]


def test_a_token_edited_to_point_at_another_order_is_refused(daemon, store, settings, order):  # noqa: F811
    other = second_order(store, settings)
    made_for_a = token_address(settings, order, tokens.CUSTOMER_REPLY, today())
    pointed_at_b = repoint(made_for_a, other.id)
    code, answer = rcpt(daemon, pointed_at_b)
    assert (code, answer[:6]) == (550, b"5.1.1 ")
    with smtp(daemon) as client:                         # a whole transaction with it: no 250 anywhere
        client.mail("erika@example.org")
        assert client.rcpt(pointed_at_b)[0] == 550
        assert client.docmd("DATA")[0] == 503            # no valid recipient: no data
    assert InboundMessage.select().count() == 0
    assert replies_on("1042") == [] and replies_on("1043") == []


# ---- a genuine token of another purpose --------------------------------------------------

def public_events(number: str) -> list[Event]:
    order = orders.find_order(number)
    return [e for e in orders.order_events(order) if e.visibility == "public" and e.kind != "created"]


def mails_to(address: str, kind: str | None = None) -> list[OutboxMessage]:
    query = OutboxMessage.select().where(OutboxMessage.recipient == address)
    return [m for m in query if kind is None or m.kind == kind]


def test_an_owner_answer_token_used_by_the_customer_is_no_customer_reply(daemon, settings, order):  # noqa: F811
    owner_answer = token_address(settings, order, tokens.OWNER_ANSWER, today())
    with smtp(daemon) as client:
        client.mail("erika@example.org")
        assert client.rcpt(owner_answer)[0] == 250         # genuine: taken, judged by its purpose later
        assert client.data(mail(to=owner_answer, body="Schicken Sie es an meine neue Adresse."))[0] == 250
    [message] = settled()
    assert message.state == "done"
    assert replies_on("1042") == [] and public_events("1042") == []
    assert mails_to("owner@shop.example", "reply_forward") == []
    assert [m.kind for m in mails_to("erika@example.org")] == ["created"]     # nothing sent to her for it


def test_a_bounce_token_used_for_a_plain_mail_is_no_customer_reply(daemon, settings, order):  # noqa: F811
    bounce_address = token_address(settings, order, tokens.BOUNCE, today())
    with smtp(daemon) as client:
        client.mail("erika@example.org")
        assert client.rcpt(bounce_address)[0] == 250
        assert client.data(mail(to=bounce_address, body="Hallo, ist das die richtige Adresse?"))[0] == 250
    [message] = settled()
    assert message.state == "done" and message.order.number == "1042"
    assert replies_on("1042") == [] and public_events("1042") == []
    [event] = [e for e in orders.order_events(orders.find_order("1042")) if e.kind == "system"]
    assert event.visibility == "internal" and "Hallo, ist das die richtige Adresse?" in event.body_text
    assert [m.kind for m in OutboxMessage.select().where(OutboxMessage.inbound == message.id)] == [
        "unmatched_forward"]                                   # the owner sees it, nobody is answered


# ---- the binding, unit level ---------------------------------------------------------------

def test_verification_is_bound_to_the_order_and_the_purpose():
    secret_a, secret_b = "a" * 43, "b" * 43
    day = dt.date(2026, 11, 27)
    token = tokens.make_token(7, secret_a, tokens.CUSTOMER_REPLY, day)
    claim = tokens.read_token(token)
    assert (claim.order_id, claim.purpose, claim.issued) == (7, tokens.CUSTOMER_REPLY, day)
    assert tokens.is_genuine(claim, secret_a)
    assert not tokens.is_genuine(claim, secret_b)                    # another order's secret
    for purpose in (tokens.OWNER_ANSWER, tokens.BOUNCE):
        raw = raw_token(token)
        raw[5] = purpose
        edited = tokens.read_token(encode_token(raw))
        assert edited.purpose == purpose and not tokens.is_genuine(edited, secret_a)
    raw = raw_token(token)
    raw[1:5] = (8).to_bytes(4, "big")
    moved = tokens.read_token(encode_token(raw))
    assert moved.order_id == 8
    assert not tokens.is_genuine(moved, secret_a) and not tokens.is_genuine(moved, secret_b)
    # the issue day is covered too: an older day under the same MAC is no token of ours
    raw = raw_token(token)
    raw[6:8] = (int.from_bytes(raw[6:8], "big") - 1).to_bytes(2, "big")
    backdated = tokens.read_token(encode_token(raw))
    assert backdated.issued == day - dt.timedelta(days=1) and not tokens.is_genuine(backdated, secret_a)


def test_a_token_has_one_spelling():
    """29 base32 characters carry 145 bits for 144: the last one's spare bit
    set would be a second address for the same token."""
    token = tokens.make_token(7, "a" * 43, tokens.CUSTOMER_REPLY, dt.date(2026, 11, 27))
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    twin = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    assert base64.b32decode(twin.upper() + "===") == base64.b32decode(token.upper() + "===")
    assert tokens.read_token(token) is not None and tokens.read_token(twin) is None
    assert tokens.read_token(token.upper()) is not None          # a folded case is the same spelling


def test_check_recipient_keeps_the_purpose_and_refuses_edited_tokens(store, settings, order):  # noqa: F811
    other = second_order(store, settings)
    for purpose in tokens.PURPOSES:
        address = token_address(settings, order, purpose, today())
        recipient = check_recipient(address, settings, today())
        assert (recipient.kind, recipient.order_id, recipient.purpose) == ("token", order.id, purpose)
        with pytest.raises(UnknownRecipient):
            check_recipient(repoint(address, other.id), settings, today())
        for edited in set(tokens.PURPOSES) - {purpose}:
            with pytest.raises(UnknownRecipient):
                check_recipient(repurpose(address, edited), settings, today())
