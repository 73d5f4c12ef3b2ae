"""`ordermail init` and `ordermail demo`: a working setup on a fresh machine.

`make run` uses both: a configuration for the embedded default (SQLite under
var/, SMTP on 127.0.0.1:2525, web on 127.0.0.1:8080, mail into var/outbox/)
and a few demo orders whose status pages it prints.
"""
from __future__ import annotations

import secrets
from pathlib import Path

from daemon.orders import numbers as order_numbers, service as orders
from daemon.config import Settings
from daemon.errors import ConfigError
from daemon.orders.service import Content, Via

CONFIG_TEMPLATE = """\
# ordermail configuration for the embedded default, written by `ordermail init`.
# Every key is explained in config/ordermail.example.toml.

[shop]
name = "Beispiel-Shop"
address = "orders@shop.example"
base_url = "http://127.0.0.1:8080"
locale = "de"

[owner]
addresses = ["owner@shop.example"]
secret = "{secret}"

[database]
url = "sqlite:///var/ordermail.db"

[inbound]
smtp_listen = "127.0.0.1:2525"

[outbound]
mode = "maildir"
maildir = "var/outbox"

[web]
listen = "127.0.0.1:8080"
"""

DEMO_ORDERS = [
    {"number": "DEMO-1", "customer": {"name": "Erika Mustermann", "email": "erika@example.org"},
     "items": [{"sku": "TK-1", "name": "Teekanne", "quantity": 1, "unit_price": "24.90"}],
     "total": "24.90", "currency": "EUR", "payment_method": "bank_transfer", "locale": "de"},
    {"number": "DEMO-2", "customer": {"name": "John Smith", "email": "john@example.com"},
     "items": [{"sku": "CUP-2", "name": "Tea cup", "quantity": 4, "unit_price": "6.50"}],
     "total": "26.00", "currency": "EUR", "payment_method": "paypal", "locale": "en"},
    {"number": "DEMO-3", "customer": {"name": "Camille Dupont", "email": "camille@example.fr"},
     "items": [{"sku": "TK-9", "name": "Théière gravée", "quantity": 1, "unit_price": "49.00"}],
     "total": "49.00", "currency": "EUR", "payment_method": "bank_transfer", "locale": "fr"},
]


def write_config(path: Path, *, force: bool = False) -> int:
    if path.exists() and not force:
        print(f"{path} exists; leaving it as it is")
        return 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(CONFIG_TEMPLATE.format(secret=secrets.token_urlsafe(24).replace("-", "x")),
                        encoding="utf-8")
        path.chmod(0o600)   # it holds the command secret
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {path}")
    return 0


def seed(store, settings: Settings) -> str:
    """Create the demo orders once; return a summary with their status pages."""
    for data in DEMO_ORDERS:
        if order_numbers.taken_as(data["number"]) is None:
            _create_demo_order(store, settings, data)
    lines = ["Demo orders:"]
    for data in DEMO_ORDERS:
        order = orders.find_order(data["number"])
        lines.append(f"  {order.number:<7} {order.customer_name:<18} {settings.status_url(order.status_token)}")
    lines.append(f"Command address: {settings.command_address_text()}")
    return "\n".join(lines)


def _create_demo_order(store, settings: Settings, data: dict) -> None:
    number = data["number"]
    orders.create_order(store, settings, data)
    if number == "DEMO-2":
        orders.mark_paid(store, settings, number, via=Via(author="system"))
        orders.mark_shipped(store, settings, number, tracking="00340434161094042557", carrier="DHL")
    if number == "DEMO-3":
        orders.mark_paid(store, settings, number)
        orders.add_message(store, settings, number, Content(
            text="Bonjour Camille,\n\nla gravure est en cours ; votre théière part vendredi."))
        orders.add_note(store, settings, number, Content(text="Supplier ref A77, engraving by Jonas"))
