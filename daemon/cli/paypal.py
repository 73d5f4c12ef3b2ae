"""`ordermail payments ipn …`: the PayPal IPN messages as stored, and their fate.

    payments ipn list [--state pending|verifying|done|failed] [--limit N] [--format table|json]
    payments ipn show ID [--format text|json]   every field, decoded, and the body as posted
    payments ipn retry ID                        verify and settle again (after giving up, or
                                                 once the order it names exists)

`cli/main.py` adds these under its `payments` command with
`add_parsers(payments, common, parser_class)` and dispatches `("payments",
"ipn")` through `HANDLERS`.
"""
from __future__ import annotations

import json

from daemon import user_numbers
from daemon.payments import paypal
from daemon.cli.mail import listing
from daemon.store.models import PaypalIpn
from daemon.translations import Columns, Said, joined, say


def add_parsers(payments, common, parser_class) -> None:
    ipn = payments.add_parser("ipn", parents=[common], help="PayPal IPN messages and their state").add_subparsers(
        dest="ipn_command", required=True, parser_class=parser_class)
    lst = ipn.add_parser("list", parents=[common], help="stored messages, newest first")
    lst.add_argument("--state", choices=paypal.STATES)
    lst.add_argument("--limit", type=user_numbers.argument(1, user_numbers.MAX_COUNT), default=50)
    lst.add_argument("--format", choices=("table", "json"), default="table")
    show = ipn.add_parser("show", parents=[common], help="one message: its fields and the body as posted")
    show.add_argument("id", type=user_numbers.argument(1))
    show.add_argument("--format", choices=("text", "json"), default="text")
    retry = ipn.add_parser("retry", parents=[common], help="verify and settle a message again now")
    retry.add_argument("id", type=user_numbers.argument(1))


def cmd_ipn(args, settings, store) -> int:
    return {"list": _list, "show": _show, "retry": _retry}[args.ipn_command](args, settings, store)


def _list(args, settings, store) -> int:
    return listing(args, paypal.list_messages, message_json, lambda rows: _said(message_table(rows), settings))


def _show(args, settings, store) -> int:
    row = paypal.get_message(args.id)
    document = message_json(row, full=True)
    if args.format == "json":
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return 0
    lines = [Said("PayPal message %(id)s, received %(when)s UTC, %(size)s bytes", id=row.id,
                  when=f"{row.received_at:%Y-%m-%d %H:%M:%S}", size=row.size),
             Said("State:    %(fate)s", fate=_fate(row)),
             Said("Reason:   %(reason)s", reason=paypal.reason_said(row.reason) or row.last_error or "-"),
             Said("Attempts: %(attempts)s", attempts=row.attempts),
             Said("Order:    %(order)s", order=document["order"] or "-"), ""]
    lines += [f"{name} = {value}" for name, value in document["fields"]]
    lines += ["", Said("As posted:"), document["raw"]]
    print(_said(joined(lines, "\n"), settings))
    return 0


def _said(text: str, settings) -> str:
    """In the shop's language, each line printable (the values come from anyone's post)."""
    return "\n".join(printable(line) for line in say(text, settings.shop.locale,
                                                       settings.outbound.templates_dir).split("\n"))


def printable(text: str) -> str:
    """Anyone can post a message: control characters (a terminal's escape sequences) are shown, not sent."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _retry(args, settings, store) -> int:
    row = paypal.retry(store, settings, args.id)
    print(_said(Said("PayPal message %(id)s will be verified and settled again now (by the running daemon, "
                     "or 'ordermail jobs run paypal-ipn')", id=row.id), settings))
    return 0


def message_json(row: PaypalIpn, full: bool = False) -> dict:
    fields = _fields(row)
    values = dict(reversed(fields))      # the first of a repeated field, as the rules read it

    def iso(moment):
        return moment.isoformat(timespec="seconds") + "Z" if moment else None
    document = {
        "id": row.id, "received_at": iso(row.received_at), "state": row.state, "verdict": row.verdict or None,
        "outcome": row.outcome or None, "reason": row.reason or None, "attempts": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.state == "pending" else None,
        "last_error": row.last_error or None, "txn_id": row.txn_id, "invoice": row.invoice or None,
        "payment_status": row.payment_status or None, "amount": values.get("mc_gross"),
        "currency": values.get("mc_currency"), "receiver_email": values.get("receiver_email"),
        "order": row.order.number if row.order_id else None, "sha256": row.sha256,
    }
    if full:
        document["fields"] = fields
        document["raw"] = row.raw.decode("latin-1")    # form-encoded: ASCII as PayPal sends it
    return document


def _fields(row: PaypalIpn) -> list[tuple[str, str]]:
    try:
        return list(paypal.parse(row.raw).pairs)
    except paypal.NotAnIpn:
        return []


def _fate(row: PaypalIpn) -> str:
    if row.state == "pending" and row.verdict == "VERIFIED":
        return Said("verified, waiting for its order; looked for again at %(when)s",
                    when=f"{row.next_attempt_at:%Y-%m-%d %H:%M}")
    if row.state == "pending" and row.attempts:
        return Said("pending, PayPal not reached; next try %(when)s", when=f"{row.next_attempt_at:%Y-%m-%d %H:%M}")
    if row.state == "done":
        return f"{row.verdict.lower()}: {row.outcome}"
    return row.state


def message_table(rows: list[PaypalIpn]) -> str:
    """Newest first; the headings and a known reason in the shop's language where said."""
    if not rows:
        return Said("no PayPal messages")
    table = [(Said("ID"), Said("RECEIVED"), Said("TXN"), Said("INVOICE"), Said("STATUS"), Said("AMOUNT"),
              Said("STATE"), Said("NOTE"))]
    for row in rows:
        document = message_json(row)
        amount = f"{document['amount'] or ''} {document['currency'] or ''}".strip()
        state = row.outcome if row.state == "done" else row.state
        note = row.reason if row.state in ("done", "failed") else row.last_error or row.reason
        known = paypal.reason_said(note or "")
        table.append((str(row.id), f"{row.received_at:%Y-%m-%d %H:%M}", (row.txn_id or "-")[:17],
                      (row.invoice or "-")[:8], (row.payment_status or "-")[:10], amount[:12], state[:16],
                      known if isinstance(known, Said) else known[:70]))
    return Columns(table)


HANDLERS = {
    ("payments", "ipn"): cmd_ipn,
}
