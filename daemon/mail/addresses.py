"""Our addresses: which recipients we take, and the reply addresses we hand out.

    orders@shop.example               the shop's address (kind "shop")
    orders+cmd-SECRET@shop.example    the owner's command address ("command")
    orders+TOKEN@shop.example         a reply address of one order ("token")
    postmaster@, abuse@               kept and passed to the owner ("shop")

Anything else is refused while the sender is still connected (RCPT time), so
we never accept a mail we would have to bounce later (backscatter).
"""
from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import dataclass, field

from daemon.mail import tokens
from daemon.store import compiled
from daemon.config import Settings
from daemon.errors import ExpiredRecipient, NotOurDomain, UnknownRecipient
from daemon.store.models import Order

ROLE_ACCOUNTS = frozenset({"postmaster", "abuse"})


@dataclass(frozen=True)
class Recipient:
    address: str
    kind: str                      # "shop", "command" or "token"
    order_id: int | None = None
    purpose: int | None = None
    order: Order | None = field(default=None, compare=False, repr=False)  # as looked up for the check


def check_recipient(address: str, settings: Settings, today: dt.date, orders: dict | None = None) -> Recipient:
    """Classify one envelope recipient or raise the refusal it deserves.

    `orders`: orders by id read ahead for a group of mails (`token_order_id`);
    None: a token's order is read here."""
    kind, detail = _classify(address, settings)
    if kind == "shop":
        return Recipient(address, "shop")
    if kind == "command":
        return _command_recipient(address, detail, settings)
    return _token_recipient(address, detail, settings, today, orders)


def token_order_id(address: str, settings: Settings) -> int | None:
    """The order a reply address's token names, not yet checked; None for any other address."""
    try:
        kind, detail = _classify(address, settings)
    except (NotOurDomain, UnknownRecipient):
        return None
    claim = kind == "token" and tokens.read_token(detail)
    return claim.order_id if claim else None


def _classify(address: str, settings: Settings) -> tuple[str, str]:
    """("shop", ""), ("command", its secret) or ("token", the token); else the refusal."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or domain.lower() != settings.shop.domain.lower():
        raise NotOurDomain()
    local = local.lower()
    base, plus, detail = local.partition("+")
    shop_local = settings.shop.address.partition("@")[0].lower()
    if local in ROLE_ACCOUNTS or (base == shop_local and not plus):
        return "shop", ""
    if base != shop_local or not detail:
        raise UnknownRecipient()
    if detail.startswith("cmd-"):
        return "command", detail[4:]
    return "token", detail


def _command_recipient(address: str, secret: str, settings: Settings) -> Recipient:
    expected = settings.owner.secret.lower()
    if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
        raise UnknownRecipient()
    return Recipient(address, "command")


def _token_recipient(address: str, token: str, settings: Settings, today: dt.date, orders: dict | None) -> Recipient:
    claim = tokens.read_token(token)
    if claim and orders is not None:
        order = orders.get(claim.order_id)
    else:
        order = claim and compiled.get(Order, "addresses.by_id", lambda: Order.select().where(Order.id == 0),
                                       claim.order_id)
    if order is None or not tokens.is_genuine(claim, order.reply_secret):
        raise UnknownRecipient()
    if tokens.is_expired(claim, today, settings.inbound.reply_token_days):
        raise ExpiredRecipient()
    return Recipient(address, "token", order.id, claim.purpose, order)


def token_address(settings: Settings, order: Order, purpose: int, today: dt.date) -> str:
    """orders+TOKEN@shop.example for one order and purpose."""
    local, _, domain = settings.shop.address.partition("@")
    token = tokens.make_token(order.id, order.reply_secret, purpose, today)
    return f"{local}+{token}@{domain}"
