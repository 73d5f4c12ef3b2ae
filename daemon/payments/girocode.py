"""The GiroCode (EPC QR code) of an unpaid bank transfer: what a banking app scans.

The European Payments Council's QR code (EPC069-12, "GiroCode" in Germany)
carries a SEPA credit transfer: the account holder, IBAN, BIC, the amount
and the remittance text. We put the order number alone into the remittance
text, the reference the bank-statement matcher looks for, so the transfer
comes back with it whatever the customer would have typed.

A code is made only where it can be right: the order's payment method has
an account ([payment.<method>] iban, bic, account_holder), the order is in
euros (a SEPA credit transfer is in EUR; the standard has no other
currency), the amount lies within the standard's 0.01–999,999,999.99, and
the order is neither paid nor cancelled. Otherwise there is no code and the
customer reads the instructions as text.

segno makes the code (its `make_epc_qr` fixes error correction M and the
highest version the standard allows); the mail carries it as a PNG (every
mail client shows one), the status page as SVG.
"""
from __future__ import annotations

import decimal
import functools
import io
from dataclasses import dataclass

from daemon.config import Settings
from daemon.store.models import CANCELLED, PAID, Order

EPC_CURRENCY = "EUR"
EPC_MIN_AMOUNT = decimal.Decimal("0.01")
EPC_MAX_AMOUNT = decimal.Decimal("999999999.99")
PNG_SCALE = 5       # pixels per module: about 225 px square with the quiet zone
SVG_SCALE = 4


@dataclass(frozen=True)
class GiroCode:
    """The transfer one code asks for."""
    holder: str
    iban: str           # compact
    bic: str
    amount: decimal.Decimal
    reference: str      # the remittance text: the order number

    def png(self) -> bytes:
        return _render(self, "png", PNG_SCALE)

    def svg(self) -> bytes:
        return _render(self, "svg", SVG_SCALE)

    def _fields(self) -> dict:
        return {"name": self.holder, "iban": self.iban, "bic": self.bic,
                "amount": self.amount, "text": self.reference}


def for_order(settings: Settings, order: Order) -> GiroCode | None:
    """The code for paying this order now, or None where there can be none."""
    method = settings.payment.get(order.payment_method)
    if method is None or not method.iban:
        return None
    if order.status & (PAID | CANCELLED) or order.currency.upper() != EPC_CURRENCY:
        return None
    if not EPC_MIN_AMOUNT <= order.total <= EPC_MAX_AMOUNT:
        return None
    return GiroCode(holder=method.account_holder, iban=method.iban, bic=method.bic,
                    amount=order.total, reference=order.number)


@functools.lru_cache(maxsize=256)
def _render(code: GiroCode, kind: str, scale: int) -> bytes:
    """The image, cached: a reminder run and the status page ask for the same codes again."""
    from segno import helpers
    qr = helpers.make_epc_qr(**code._fields())
    out = io.BytesIO()
    options = {"xmldecl": False, "title": "GiroCode"} if kind == "svg" else {}
    qr.save(out, kind=kind, scale=scale, border=4, **options)
    return out.getvalue()
