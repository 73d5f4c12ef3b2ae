"""Bounces: recognised in their common forms, read for status, recipient and our original."""
from __future__ import annotations

from pathlib import Path

import pytest

from daemon.mail.bounces import Bounce, find_bounce
from daemon.mail.parsing import parse_mail

MAILS = Path(__file__).with_name("mails")


def bounce_of(name: str, **kwargs) -> Bounce | None:
    return find_bounce(parse_mail((MAILS / "bounces" / name).read_bytes(), **kwargs))


def bounce_in(text: str, **kwargs) -> Bounce | None:
    return find_bounce(parse_mail(text.lstrip("\n").encode(), **kwargs))


# (status, permanent, recipient, original Message-ID, kind, a piece of the diagnostic)
SCENARIOS = {
    "dsn_user_unknown.eml": ("5.1.1", True, "nobody.here@example.com",
                             "<n1046.shipped.aa01@shop.example>", "rfc3464",
                             "550-5.1.1 The email account that you tried to reach does not exist."),
    "dsn_mailbox_full_4xx.eml": ("4.2.2", False, "full.box@example.org",
                                 "<n1047.paid.bb02@shop.example>", "rfc3464", "452 4.2.2 Mailbox full"),
    "bounce_postfix.eml": ("5.1.1", True, "gone@example.com",
                           "<n1048.cancelled.cc03@shop.example>", "rfc3464",
                           "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"),
    "bounce_qmail.eml": ("5.1.1", True, "old.customer@hoster.example",
                         "<n1049.shipped.dd04@shop.example>", "qmail",
                         "Remote host said: 550 5.1.1 <old.customer@hoster.example>... User unknown"),
    "bounce_exim_nonstandard.eml": ("5.2.1", True, "ines@provider.example",
                                    "<n1050.refunded.ee05@shop.example>", "exim",
                                    "550 5.2.1 Mailbox disabled for this recipient"),
    "bounce_exchange_ndr.eml": ("5.1.10", True, "k.lehmann@firma.example",
                                "<n1051.created.ff06@shop.example>", "exchange",
                                "#550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_bounce_scenario_is_read_completely(name):
    status, permanent, recipient, original, kind, diagnostic = SCENARIOS[name]
    bounce = bounce_of(name)
    assert bounce is not None
    assert (bounce.status, bounce.permanent, bounce.recipient) == (status, permanent, recipient)
    assert bounce.original_message_id == original
    assert bounce.kind == kind
    assert bounce.diagnostic.startswith(diagnostic)
    assert "\n" not in bounce.diagnostic and len(bounce.diagnostic) <= 500


def test_every_bounce_scenario_has_a_test():
    assert sorted(p.name for p in (MAILS / "bounces").glob("*.eml")) == sorted(SCENARIOS)


@pytest.mark.parametrize("path", sorted((MAILS / "inbound").glob("*.eml")), ids=lambda p: p.name)
def test_no_inbound_scenario_is_a_bounce(path):
    assert find_bounce(parse_mail(path.read_bytes())) is None


def test_original_id_is_found_even_when_the_returned_mail_is_not_kept():
    bounce = bounce_of("dsn_user_unknown.eml", keep_attachment_bytes=0)
    assert bounce.original_message_id == "<n1046.shipped.aa01@shop.example>"
    assert bounce.status == "5.1.1"          # the report itself is always kept


def test_out_of_office_quoting_a_bounce_is_not_a_bounce():
    assert bounce_in("""
From: Weber <weber@kunde.example>
Subject: Automatische Antwort: Unzustellbar: Ihre Bestellung
Auto-Submitted: auto-replied

Ich bin nicht im Büro.
> Delivery has failed to these recipients or groups:
> This message was created automatically by mail delivery software.
""") is None


def test_a_person_writing_about_a_failed_delivery_is_not_a_bounce():
    assert bounce_in("""
From: Anna <anna@example.com>
Subject: Undeliverable parcel? Order 1042

The courier says the parcel was undeliverable. Returned mail: what now?
""") is None


def test_delivery_receipt_is_not_a_bounce():
    assert bounce_in("""
From: MAILER-DAEMON@mx.example.org
Subject: Successful Mail Delivery Report
Content-Type: multipart/report; report-type=delivery-status; boundary=r

--r
Content-Type: text/plain

Your message was successfully delivered to the destination(s) listed below.
--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; anna@example.org
Action: delivered
Status: 2.0.0
--r--
""") is None


def test_first_failed_recipient_of_several_is_reported():
    bounce = bounce_in("""
From: MAILER-DAEMON@mx.example.org
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary=r

--r
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; fine@example.org
Action: delivered
Status: 2.0.0

Final-Recipient: rfc822; later@example.org
Action: delayed
Status: 4.4.1

Original-Recipient: rfc822; Gone@Example.org
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 no such user
--r--
""")
    assert (bounce.recipient, bounce.status, bounce.permanent) == ("gone@example.org", "5.1.1", True)
    assert bounce.diagnostic == "550 no such user"
    assert bounce.original_message_id is None


def test_given_up_with_a_4xx_status_is_not_permanent():
    bounce = bounce_in("""
From: MAILER-DAEMON@mx.example.org
Content-Type: multipart/report; report-type=delivery-status; boundary=r

--r
Content-Type: message/delivery-status

Final-Recipient: rfc822; slow@example.org
Action: failed
Status: 4.4.7
Diagnostic-Code: X-Postfix; delivery temporarily suspended
--r--
""")
    assert (bounce.status, bounce.permanent) == ("4.4.7", False)


def test_utf8_delivery_status_rfc6533_is_read():
    bounce = bounce_in("""
From: MAILER-DAEMON@mx.example.org
Content-Type: multipart/report; report-type=global-delivery-status; boundary=r

--r
Content-Type: message/global-delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: utf-8; jürgen@exämple.org
Action: failed
Status: 5.1.1
--r--
""")
    assert bounce is not None and bounce.status == "5.1.1" and bounce.permanent


def test_gmail_text_bounce_without_report():
    bounce = bounce_in("""
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
Subject: Delivery Status Notification (Failure)

Delivery to the following recipient failed permanently:

     lost.customer@example.com

Technical details of permanent failure:
The email account that you tried to reach does not exist.

----- Original message -----

From: orders@shop.example
Message-ID: <n1060.shipped.0001@shop.example>
Subject: Ihre Bestellung 1060
""")
    assert bounce.kind == "gmail" and bounce.recipient == "lost.customer@example.com"
    assert bounce.permanent and bounce.status == ""
    assert bounce.original_message_id == "<n1060.shipped.0001@shop.example>"


def test_bare_bounce_subject_from_the_null_sender_is_a_bounce():
    bounce = bounce_in("""
From: Postmaster <postmaster@old-isp.example>
Subject: Returned mail: see transcript for details

Your message to someone@old-isp.example could not be delivered: mailbox unavailable.
""", envelope_from="<>")
    assert bounce.kind == "text" and bounce.recipient == "someone@old-isp.example"
    assert bounce.permanent


def test_delay_wording_without_status_is_not_permanent():
    bounce = bounce_in("""
From: MAILER-DAEMON@mx.example.org
Subject: Warning: could not send message for past 4 hours

This is a warning only; the message will be retried for 5 days.
Your message to waiting@example.org is delayed.
""")
    assert bounce is not None and not bounce.permanent and bounce.recipient == "waiting@example.org"


def test_an_ordinary_reply_is_not_a_bounce():
    assert bounce_in("From: anna@example.com\nSubject: Re: order 1042\n\nThanks!\n") is None


def test_a_customer_quoting_bounce_wording_in_a_reply_is_not_a_bounce():
    assert bounce_in("""
From: Anna <anna@example.com>
To: orders+r.1042.k7Zq@shop.example
Subject: Re: Ihre Bestellung 1042

My first mail to you came back: "Your message couldn't be delivered".
Delivery has failed to these recipients or groups: that is what it said.
""") is None


def test_a_couriers_bulk_delivery_notification_is_not_a_bounce():
    assert bounce_in("""
From: Paketdienst <noreply@courier.example>
Subject: Delivery notification: your parcel arrives today
Precedence: bulk

Your parcel 00340434 will be delivered today between 10:00 and 12:00.
""") is None
