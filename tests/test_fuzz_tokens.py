"""Properties of the reply tokens: ours are taken, everything else is refused.

A token is checked twice over: `read_token` + `is_genuine` alone, and at the
door, `check_recipient` on a real store (SQLite and PostgreSQL), where a
forged reply address must be refused at RCPT. Mail systems may fold the case
of a local part, so a token in other case is the same token; any other change
of a character is a forgery.
"""
from __future__ import annotations

import datetime as dt
import string

from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import sample_order
from daemon.mail import tokens
from daemon.mail.addresses import check_recipient, token_address
from daemon.errors import MailRefused, UnknownRecipient
from daemon.orders.service import create_order
from fuzzing import examples

TODAY = dt.date(2026, 11, 27)
secrets_ = st.text(alphabet=string.hexdigits.lower(), min_size=1, max_size=64)
order_ids = st.integers(min_value=0, max_value=2**32 - 1)
purposes = st.sampled_from(sorted(tokens.PURPOSES))
days = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2300, 1, 1))
# Any character a local part could carry after a mail system saw it: the
# base32 alphabet in both cases, other ASCII, and beyond.
characters = st.one_of(st.sampled_from(string.ascii_letters + string.digits + "=+-._@ "),
                       st.characters())


@st.composite
def forgeries(draw, token: str) -> str:
    """`token` with one thing changed: a character replaced, one inserted or
    deleted, two swapped, cut short, or lengthened; never only its case."""
    i = draw(st.integers(0, len(token) - 1))
    kind = draw(st.sampled_from(["replace", "insert", "delete", "swap", "cut", "append"]))
    if kind == "replace":
        char = draw(characters.filter(lambda c: c.lower() != token[i]))
        forged = token[:i] + char + token[i + 1:]
    elif kind == "insert":
        forged = token[:i] + draw(characters) + token[i:]
    elif kind == "delete":
        forged = token[:i] + token[i + 1:]
    elif kind == "swap":
        j = min(i + 1, len(token) - 1)
        forged = token[:i] + token[j] + token[i] + token[j + 1:] if j > i else token[::-1]
    elif kind == "cut":
        forged = token[:i]
    else:
        forged = token + draw(st.text(characters, min_size=1, max_size=4))
    assume(forged.lower() != token)
    return forged


@examples(ci=300)
@given(order_ids, secrets_, purposes, days)
def test_a_token_is_read_back_as_made(order_id, secret, purpose, issued):
    token = tokens.make_token(order_id, secret, purpose, issued)
    claim = tokens.read_token(token)
    assert len(token) == 29 and token == token.lower()
    assert (claim.order_id, claim.purpose) == (order_id, purpose)
    assert claim.issued == min(max(issued, tokens.EPOCH), tokens.EPOCH + dt.timedelta(days=0xFFFF))
    assert tokens.is_genuine(claim, secret)
    assert tokens.read_token(token.upper()) == claim      # a folded local part is the same token


@examples(ci=300)
@given(st.data(), order_ids, secrets_, purposes, days)
def test_a_token_differing_in_any_character_is_refused(data, order_id, secret, purpose, issued):
    token = tokens.make_token(order_id, secret, purpose, issued)
    forged = data.draw(forgeries(token))
    claim = tokens.read_token(forged)
    assert claim is None or not tokens.is_genuine(claim, secret)


@examples(ci=200)
@given(order_ids, secrets_, st.data(), purposes, days)
def test_a_token_made_with_another_secret_is_refused(order_id, secret, data, purpose, issued):
    # another order's secret, or this one's rotated: as like it as can be, one character off
    i = data.draw(st.integers(0, len(secret) - 1))
    other = secret[:i] + data.draw(st.sampled_from(string.hexdigits.lower()).filter(lambda c: c != secret[i])) \
        + secret[i + 1:]
    claim = tokens.read_token(tokens.make_token(order_id, other, purpose, issued))
    assert not tokens.is_genuine(claim, secret)


@examples(ci=300)
@given(st.text(max_size=40) | st.text(alphabet=string.ascii_lowercase + "234567", min_size=29, max_size=29))
def test_reading_any_text_gives_a_claim_or_none(text):
    claim = tokens.read_token(text)
    assert claim is None or (claim.purpose in tokens.PURPOSES and len(claim.mac) == tokens.MAC_BYTES)


# ---- at the door: check_recipient on a real store ---------------------------------

@examples(ci=60)
@given(data=st.data())
def test_only_the_reply_address_we_made_is_taken_at_rcpt(store, settings, data):
    order = _the_order(store, settings)
    purpose = data.draw(purposes)
    address = token_address(settings, order, purpose, TODAY)
    taken = check_recipient(address, settings, TODAY)
    assert (taken.kind, taken.order_id, taken.purpose) == ("token", order.id, purpose)
    local, _, domain = address.partition("@")
    base, _, token = local.partition("+")
    forged = f"{base}+{data.draw(forgeries(token))}@{domain}"
    try:
        check_recipient(forged, settings, TODAY)
    except UnknownRecipient:
        pass
    else:
        raise AssertionError(f"forged reply address {forged!r} was taken")


@examples(ci=100)
@given(local=st.text(max_size=60), domain=st.sampled_from(["shop.example", "SHOP.example", "evil.example", ""]))
def test_any_recipient_is_classified_or_refused_never_an_error(store, settings, local, domain):
    _the_order(store, settings)
    try:
        check_recipient(f"{local}@{domain}", settings, TODAY)
    except MailRefused:
        pass


def _the_order(store, settings):
    """One order per test, made on the first example."""
    from daemon.store.models import Order
    order = Order.get_or_none(Order.number == "1042")
    return order or create_order(store, settings, sample_order("1042"), quiet=True)
