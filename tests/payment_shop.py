"""A shop with a bank account, for the GiroCode and schedule tests: its configuration
as the owner writes it (TOML), the settings loaded from it, and reading its outbox."""
from __future__ import annotations

import email
import email.policy
import io
import json
from pathlib import Path

from daemon.config import load_settings

ACCOUNT = {"iban": "DE02120300000000202051", "iban_formatted": "DE02 1203 0000 0000 2020 51",
           "bic": "BYLADEM1001", "holder": "Teeladen GmbH"}


def write_config(settings, tmp_path: Path, **shop) -> Path:
    """The conftest shop, plus an account, the schedule and retention."""
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in shop.items())
    path = tmp_path / "shop.toml"
    path.write_text(f"""\
[shop]
name = "Teeladen"
address = "orders@shop.example"
base_url = "https://shop.example/status"
locale = "de"
delete_cancelled_after_days = 30
{extra}
[owner]
addresses = ["owner@shop.example"]
secret = "s3cret-command-key-0123"

[database]
url = {json.dumps(settings.database.url)}

[inbound]
keep_raw_days = 90

[outbound]
maildir = {json.dumps(settings.outbound.maildir)}

[payment.bank_transfer]
label = "Überweisung"
iban = "{ACCOUNT['iban_formatted']}"
bic = "byladem1001"
account_holder = "{ACCOUNT['holder']}"
remind_after_days = 7
cancel_after_days = 21

[payment.bank_transfer.instructions]
de = "Bitte überweisen Sie {{total}} auf das Konto {{iban}} mit dem Verwendungszweck {{number}}."
en = "Please transfer {{total}} to {{iban}}, reference {{number}}."

[payment.paypal]
label = "PayPal"

[payment.invoice]
label = "Rechnung"
instructions = "Bitte zahlen Sie {{total}} innerhalb von 14 Tagen."
remind_after_days = 14
""", encoding="utf-8")
    return path


def load(path: Path):
    return load_settings(path)


def outbox_mails(settings) -> list[email.message.EmailMessage]:
    """Every mail in the maildir, oldest first, parsed strictly."""
    folder = Path(settings.outbound.maildir) / "new"
    if not folder.is_dir():
        return []
    files = sorted(folder.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.strict) for p in files]


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def inline_images(message) -> dict[str, bytes]:
    """Content-ID (without <>) → bytes of each inline image."""
    return {part["Content-ID"].strip("<>"): part.get_content() for part in message.walk()
            if part.get_content_maintype() == "image" and part["Content-ID"]}


def scan(png: bytes) -> list[str]:
    """What a banking app reads from the image: the QR codes' contents."""
    import zxingcpp
    from PIL import Image
    return [found.text for found in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]
