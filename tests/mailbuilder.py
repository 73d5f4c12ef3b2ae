"""Scenario mails for tests, built the way mail clients build them."""
from __future__ import annotations

import itertools
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
import datetime as dt

_serial = itertools.count(1)


def mail(*, to: str, sender: str = "Erika Mustermann <erika@example.org>", subject: str = "Re: Ihre Bestellung",
         body: str = "Danke!", html: str | None = None, message_id: str | None = None,
         in_reply_to: str | None = None, headers: dict | None = None,
         attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.timezone.utc))
    message["Message-ID"] = message_id or make_msgid(f"t{next(_serial)}", domain="example.org")
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for filename, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=SMTP)   # CRLF line ends, as on the wire
