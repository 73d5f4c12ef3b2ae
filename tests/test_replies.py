"""Customer replies land on the right order, trimmed; everything else is routed safely.

These go through the pipe door in-process (`pipe.deliver`): store first, then
the worker's handling, on both backends.
"""
from __future__ import annotations

import datetime as dt
import io

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.errors import ExpiredRecipient, NotOurDomain, UnknownRecipient
from daemon.intake import pipe
from daemon.store.models import Event, InboundMessage, OutboxMessage
from mailbuilder import mail

TODAY = dt.date.today()


@pytest.fixture
def order(store, settings):
    return orders.create_order(store, settings, sample_order())


@pytest.fixture
def reply_to(settings, order):
    return token_address(settings, order, tokens.CUSTOMER_REPLY, TODAY)


def deliver(store, settings, raw: bytes, recipients=(), sender="erika@example.org") -> InboundMessage:
    assert pipe.deliver(store, settings, io.BytesIO(raw), list(recipients), sender) == 0
    return InboundMessage.select().order_by(InboundMessage.id.desc()).first()


def log_of(number="1042") -> list[Event]:
    return orders.order_events(orders.find_order(number))


def forwards(kind="reply_forward") -> list[OutboxMessage]:
    return list(OutboxMessage.select().where(OutboxMessage.kind == kind))


QUOTED_REPLY = """Ja, gravieren Sie bitte "Für Oma".

Viele Grüße
Erika

Am 26.11.2026 um 10:15 schrieb Teeladen <orders@shop.example>:
> Ihre Bestellung 1042 ist eingegangen.
> Gesamtbetrag: 24,90 €
"""


def test_a_reply_to_the_token_address_lands_trimmed_on_its_order(store, settings, reply_to):
    message = deliver(store, settings, mail(to=reply_to, body=QUOTED_REPLY, message_id="<r1@example.org>"), [reply_to])
    reply = log_of()[-1]
    assert message.state == "done" and message.order.number == "1042"
    assert reply.kind == "customer_reply" and reply.author == "customer" and reply.visibility == "public"
    assert "Für Oma" in reply.body_text and "schrieb" not in reply.body_text and "24,90" not in reply.body_text
    assert reply.message_id == "<r1@example.org>"
    assert b"schrieb Teeladen" in message.raw                    # the untrimmed raw stays


def test_the_owner_gets_each_reply_forwarded(store, settings, reply_to):
    deliver(store, settings, mail(to=reply_to), [reply_to])
    [forward] = forwards()
    assert forward.recipient == "owner@shop.example" and forward.order.number == "1042"
    assert forward.inbound_id is not None and forward.data == {"from_customer": True}


def test_a_token_used_by_another_sender_never_becomes_the_customer(store, settings, reply_to):
    deliver(store, settings, mail(to=reply_to, sender="Mallory <mallory@evil.example>", body="Send it to me"),
            [reply_to], sender="mallory@evil.example")
    event = log_of()[-1]
    assert event.kind == "system" and event.visibility == "internal"
    assert event.subject == "Reply from another address: mallory@evil.example"
    assert orders.find_order("1042").customer_email == "erika@example.org"
    [forward] = forwards()
    assert forward.data == {"from_customer": False}
    assert not OutboxMessage.select().where(OutboxMessage.recipient == "mallory@evil.example").exists()


def test_a_reply_threads_by_our_message_id_when_the_token_is_gone(store, settings, order):
    ours = OutboxMessage.get(OutboxMessage.order == order).message_id
    deliver(store, settings, mail(to="orders@shop.example", in_reply_to=ours, body="Wann kommt sie?"))
    assert log_of()[-1].kind == "customer_reply" and log_of()[-1].body_text == "Wann kommt sie?"


def test_an_order_number_in_the_subject_counts_only_from_the_customer(store, settings, order):
    deliver(store, settings, mail(to="orders@shop.example", subject="Frage zu Bestellung 1042", body="Farbe?"))
    assert log_of()[-1].kind == "customer_reply"
    deliver(store, settings, mail(to="orders@shop.example", sender="someone@else.example",
                                  subject="Frage zu Bestellung 1042", body="Ich auch"))
    assert [e.kind for e in log_of()] == ["created", "customer_reply"]
    [unmatched] = forwards("unmatched_forward")
    assert unmatched.recipient == "owner@shop.example" and unmatched.order_id is None


def test_files_from_customers_are_left_out_and_they_are_told_once_a_day(store, settings, reply_to):
    photo = ("kaputt.jpg", "image/jpeg", b"\xff\xd8" + b"x" * 5000)
    for n in range(2):
        deliver(store, settings, mail(to=reply_to, body=f"Foto {n}", attachments=(photo,)), [reply_to])
    reply = log_of()[-1]
    assert reply.data["files_left_out"] == 1 and list(reply.attachments) == []
    notes = forwards("files_refused")
    assert len(notes) == 1 and notes[0].recipient == "erika@example.org"


def test_an_auto_reply_is_recorded_internally_and_never_answered(store, settings, reply_to):
    deliver(store, settings, mail(to=reply_to, subject="Abwesenheitsnotiz", body="Ich bin bis Montag weg.",
                                  headers={"Auto-Submitted": "auto-replied"}), [reply_to])
    event = log_of()[-1]
    assert event.kind == "system" and event.visibility == "internal" and "Automatic reply" in event.subject
    assert forwards() == [] and forwards("files_refused") == []


def test_our_own_mail_coming_back_is_a_loop_never_forwarded_or_answered(store, settings, order, reply_to):
    ours = OutboxMessage.get(OutboxMessage.order == order).message_id      # the order's confirmation
    looped = mail(to="orders@shop.example", sender="Teeladen <orders@shop.example>",
                  subject="Ihre Bestellung 1042", body="Danke für Ihre Bestellung.", message_id=ours)
    message = deliver(store, settings, looped, ["orders@shop.example"], sender="orders@shop.example")
    assert message.state == "done" and "our own mail came back" in message.reason
    assert forwards("unmatched_forward") == [] and forwards() == []
    threaded = deliver(store, settings, looped.replace(b"Danke", b"Vielen Dank"), [reply_to],
                       sender="erika@example.org")
    event = log_of()[-1]
    assert threaded.state == "done" and event.kind == "system" and event.visibility == "internal"
    assert "our own mail came back" in event.subject
    assert forwards() == [] and len(OutboxMessage.select()) == 1           # nothing sent because of it


def test_a_bounce_of_our_notification_lands_on_the_order(store, settings, order):
    ours = OutboxMessage.get(OutboxMessage.order == order).message_id
    dsn = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: orders@shop.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; erika@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {ours}\r\nTo: erika@example.org\r\n"
        "--B--\r\n").encode()
    message = deliver(store, settings, dsn, ["orders@shop.example"], sender="")
    event = log_of()[-1]
    assert message.state == "done" and event.kind == "bounce" and event.visibility == "internal"
    assert event.data["status"] == "5.1.1" and event.data["recipient"] == "erika@example.org"
    assert forwards() == []
    flagged = orders.find_order("1042")
    assert flagged.email_bounced_at is not None and "5.1.1" in flagged.email_bounce
    [alert] = forwards("owner_alert")
    assert alert.recipient == "owner@shop.example" and "kam zurück" in alert.data["text"]
    deliver(store, settings, dsn.replace(b"<dsn1@", b"<dsn2@"), ["orders@shop.example"], sender="")
    assert len(forwards("owner_alert")) == 1                    # told once
    assert [e.kind for e in log_of()].count("bounce") == 2


def _report(failed: str, quoted_id: str | None) -> bytes:
    quoted = f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {quoted_id}\r\n" if quoted_id else ""
    return ("From: MAILER-DAEMON@mx.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n"
            "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
            f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"{quoted}--B--\r\n").encode()


def test_a_forged_bounce_at_a_reply_address_does_not_flag_the_customer(store, settings, order, reply_to):
    """A reply address is in every mail we send: anyone can write a delivery report to it."""
    elsewhere = orders.queue_mail(settings, "status_link", "someone@example.net", order=order).message_id
    for forged in (_report("erika@example.org", None),                          # names no mail of ours
                   _report("erika@example.org", "<made-up@shop.example>"),      # names one we never sent
                   _report("erika@example.org", elsewhere)):                    # ours, but to someone else
        message = deliver(store, settings, forged, [reply_to], sender="")
        assert message.state == "done" and "bounce logged, not counted" in message.reason
    assert [e.kind for e in log_of()].count("bounce") == 3                       # kept for the owner to see
    assert orders.find_order("1042").email_bounced_at is None and forwards("owner_alert") == []
    ours = OutboxMessage.get((OutboxMessage.order == order) & (OutboxMessage.kind == "created")).message_id
    deliver(store, settings, _report("erika@example.org", ours), [reply_to], sender="")   # the real one counts
    assert orders.find_order("1042").email_bounced_at is not None


def test_mail_that_matches_nothing_is_kept_and_forwarded(store, settings):
    message = deliver(store, settings, mail(to="orders@shop.example", sender="new@customer.example",
                                            subject="Haben Sie auch Tassen?"))
    assert message.state == "done" and "forwarded to the owner" in message.reason
    assert [f.recipient for f in forwards("unmatched_forward")] == ["owner@shop.example"]


def test_the_same_message_twice_is_handled_once(store, settings, reply_to):
    raw = mail(to=reply_to, body="Nur einmal bitte")
    deliver(store, settings, raw, [reply_to])
    second = deliver(store, settings, raw, [reply_to])
    assert second.state == "duplicate"
    assert [e.kind for e in log_of()] == ["created", "customer_reply"] and len(forwards()) == 1


def received(raw: bytes, hop: str) -> bytes:
    """The same mail as another way delivers it: one more transport header on top."""
    return f"Received: from {hop} by mx.shop.example; Fri, 27 Nov 2026 10:00:05 +0000\r\n".encode() + raw


def test_the_same_message_by_two_ways_is_handled_once(store, settings):
    raw = mail(to="orders@shop.example", sender="new@customer.example", subject="Haben Sie Tassen?",
               message_id="<tassen@customer.example>")
    first = deliver(store, settings, received(raw, "mx1.customer.example"))
    second = deliver(store, settings, received(raw, "mx2.customer.example"))
    assert first.sha256 != second.sha256                     # not the same bytes
    assert (first.state, second.state) == ("done", "duplicate")
    assert len(forwards("unmatched_forward")) == 1           # the owner hears of it once


def test_a_copy_is_found_by_the_content_keys_index_on_both_backends(store, settings, caplog):
    """The duplicate check reads the partial index on content_key, not every handled mail."""
    raw = mail(to="orders@shop.example", message_id="<idx@customer.example>")
    caplog.set_level("DEBUG", logger="peewee")
    deliver(store, settings, received(raw, "mx1"))
    deliver(store, settings, received(raw, "mx2"))
    [(sql, params), *_] = [r.msg for r in caplog.records
                           if isinstance(r.msg, tuple) and r.msg[0].startswith("SELECT")
                           and '"content_key" = ' in r.msg[0]]
    explain = "EXPLAIN QUERY PLAN " if store.backend == "sqlite" else "EXPLAIN "
    plan = " ".join(str(row[-1]) for row in store.db.execute_sql(explain + sql, params))
    if store.backend == "postgresql" and "Seq Scan" in plan:        # two rows: PostgreSQL may rightly scan
        store.db.execute_sql("SET enable_seqscan = off")
        plan = " ".join(str(row[-1]) for row in store.db.execute_sql(explain + sql, params))
    assert "inbound_message_content_key" in plan, plan


def test_a_copy_through_a_pipe_with_lf_line_ends_is_the_same_message(store, settings):
    raw = mail(to="orders@shop.example", subject="Tassen?", body="Haben Sie Tassen?\nUnd Kannen?",
               message_id="<lf@customer.example>")
    by_smtp = deliver(store, settings, received(raw, "mx1"))
    by_pipe = deliver(store, settings, received(raw, "mx2").replace(b"\r\n", b"\n"))
    assert (by_smtp.state, by_pipe.state) == ("done", "duplicate")


def test_the_same_message_id_with_another_body_is_another_message(store, settings):
    first = deliver(store, settings, mail(to="orders@shop.example", subject="Tassen?", body="Haben Sie Tassen?",
                                          message_id="<reused@customer.example>"))
    second = deliver(store, settings, mail(to="orders@shop.example", subject="Tassen?", body="Und Kannen?",
                                           message_id="<reused@customer.example>"))
    assert (first.state, second.state) == ("done", "done")
    assert len(forwards("unmatched_forward")) == 2


def test_without_a_message_id_only_the_same_bytes_are_the_same(store, settings):
    raw = mail(to="orders@shop.example", subject="Tassen?").replace(b"Message-ID:", b"X-Old-Message-ID:")
    first = deliver(store, settings, received(raw, "mx1.customer.example"))
    second = deliver(store, settings, received(raw, "mx2.customer.example"))
    third = deliver(store, settings, received(raw, "mx2.customer.example"))
    assert (first.state, second.state, third.state) == ("done", "done", "duplicate")


def test_one_copy_per_recipient_reaches_each_order(store, settings, order, reply_to):
    """An MTA may deliver one copy per recipient: each is its own order's."""
    other = orders.create_order(store, settings, sample_order("1043"))
    other_reply_to = token_address(settings, other, tokens.CUSTOMER_REPLY, TODAY)
    raw = mail(to=f"{reply_to}, {other_reply_to}", body="Beide bitte zusammen schicken.")
    copies = [deliver(store, settings, raw, [address]) for address in (reply_to, other_reply_to)]
    assert [c.state for c in copies] == ["done", "done"]
    assert [log_of(n)[-1].kind for n in ("1042", "1043")] == ["customer_reply", "customer_reply"]
    assert deliver(store, settings, raw, [other_reply_to]).state == "duplicate"


def test_two_workers_holding_two_copies_handle_the_message_once(store, settings):
    """Two copies claimed by two workers at once: the second waits for the
    first one's commit and then finds the message handled."""
    import threading
    from daemon.handling import inbound
    from daemon.intake.spool import store_message
    raw = mail(to="orders@shop.example", sender="new@customer.example", message_id="<both@customer.example>")
    with store.atomic():
        ids = [store_message(received(raw, hop), channel="smtp", envelope_from="new@customer.example",
                             recipients=["orders@shop.example"]) for hop in ("mx1", "mx2")]
    assert all(inbound.claim(i) for i in ids)
    first_handled, commit_first, states = threading.Event(), threading.Event(), {}

    def first_worker():
        with store.atomic():                      # its commit waits until the test says so
            states["first"] = inbound.process_claimed(store, settings, ids[:1])
            first_handled.set()
            commit_first.wait(10)
        store.db.close()

    def second_worker():
        first_handled.wait(10)
        states["second"] = inbound.process_claimed(store, settings, ids[1:])
        store.db.close()

    threads = [threading.Thread(target=first_worker), threading.Thread(target=second_worker)]
    for thread in threads:
        thread.start()
    threads[1].join(0.5)
    assert threads[1].is_alive()                  # waiting for the first copy's outcome
    commit_first.set()
    for thread in threads:
        thread.join(10)
    assert states == {"first": ["done"], "second": ["duplicate"]}
    assert len(forwards("unmatched_forward")) == 1


def test_a_crash_while_handling_quarantines_with_the_reason_and_retry_recovers(store, settings, reply_to, monkeypatch):
    from daemon.handling import inbound, routing

    def broken(ctx):
        raise RuntimeError("handler exploded")
    monkeypatch.setattr(routing, "route", broken)
    monkeypatch.setattr(inbound, "route", broken)
    message = deliver(store, settings, mail(to=reply_to, body="Hallo"), [reply_to])
    assert message.state == "quarantined" and message.reason == "RuntimeError: handler exploded"
    assert [e.kind for e in log_of()] == ["created"]          # nothing half-done
    monkeypatch.undo()
    inbound.retry(store, message.id)
    assert inbound.claim(message.id)
    assert inbound.process_claimed(store, settings, [message.id]) == ["done"]
    assert log_of()[-1].kind == "customer_reply"


def test_the_store_failing_is_tried_again_not_quarantined(store, settings, reply_to, monkeypatch):
    """A lock held too long or a lost connection is the store's trouble, not
    the message's: the round is undone and the message handled later."""
    import peewee as pw
    from daemon.handling import inbound, routing
    failures = iter([pw.OperationalError("database is locked")] * 2)

    def flaky(ctx):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return routing.route(ctx)
    monkeypatch.setattr(inbound, "route", flaky)
    message = deliver(store, settings, mail(to=reply_to, body="Geduld"), [reply_to])
    assert (message.state, message.store_failures) == ("new", 1)     # not quarantined: waits for a worker
    with pytest.raises(pw.OperationalError):
        inbound.process_pending(store, settings)
    assert InboundMessage.get_by_id(message.id).store_failures == 2
    assert inbound.process_pending(store, settings) == 1
    handled = InboundMessage.get_by_id(message.id)
    assert handled.state == "done" and log_of()[-1].body_text == "Geduld"


def test_a_transaction_that_cannot_begin_counts_against_no_message(store, settings, reply_to, monkeypatch):
    import contextlib
    import peewee as pw
    from daemon.handling import inbound
    with store.atomic():
        message_id = store_message_for(reply_to)
    assert inbound.claim(message_id)

    @contextlib.contextmanager
    def locked(*args, **kwargs):
        raise pw.OperationalError("database is locked")
        yield
    monkeypatch.setattr(store, "atomic", locked)
    with pytest.raises(pw.OperationalError, match="database is locked"):
        inbound.process_claimed(store, settings, [message_id])
    monkeypatch.undo()
    assert InboundMessage.get_by_id(message_id).attempts == 0


def store_message_for(address: str) -> int:
    from daemon.intake.spool import store_message
    return store_message(mail(to=address, body="Warte"), channel="smtp", envelope_from="erika@example.org",
                         recipients=[address])


def test_a_message_the_store_fails_on_again_and_again_is_quarantined_not_blocking(store, settings, reply_to,
                                                                                   monkeypatch):
    import peewee as pw
    from daemon.handling import inbound, routing

    def poisoned(ctx):
        if "Gift" in ctx.mail.text:
            raise pw.OperationalError("string or blob too big")
        return routing.route(ctx)
    monkeypatch.setattr(inbound, "route", poisoned)
    first = deliver(store, settings, mail(to=reply_to, body="Gift"), [reply_to])
    behind = deliver(store, settings, mail(to=reply_to, body="Harmlos"), [reply_to])
    for _ in range(inbound.STORE_TROUBLE_ATTEMPTS * 2):
        try:
            inbound.process_pending(store, settings)
        except pw.OperationalError:
            pass
    first, behind = InboundMessage.get_by_id(first.id), InboundMessage.get_by_id(behind.id)
    assert first.state == "quarantined" and first.store_failures == inbound.STORE_TROUBLE_ATTEMPTS
    assert first.reason == "the store failed 5 times while handling it: OperationalError: string or blob too big"
    assert first.attempts == 1 and first.order_id is None       # one quarantine; nothing of the undone rounds
    assert behind.state == "done" and log_of()[-1].body_text == "Harmlos"
    monkeypatch.undo()
    inbound.retry(store, first.id)                                   # mended: counted afresh, and handled
    assert InboundMessage.get_by_id(first.id).store_failures == 0
    assert inbound.handle_now(store, settings, first.id) == "done"


def test_a_deadlock_between_workers_counts_against_no_message(store, settings, reply_to):
    import peewee as pw
    import psycopg2.errors
    from daemon.handling import inbound
    message = deliver(store, settings, mail(to=reply_to, body="Hallo"), [reply_to])
    deadlock = pw.OperationalError(psycopg2.errors.DeadlockDetected("deadlock detected"))
    inbound._count_store_trouble(store, message, deadlock)
    inbound._count_store_trouble(store, message, pw.OperationalError("database is locked"))
    assert InboundMessage.get_by_id(message.id).store_failures == 1


def test_refused_recipients(store, settings, order, reply_to):
    local, _, domain = reply_to.partition("@")
    forged = local[:-4] + ("aaaa" if not local.endswith("aaaa") else "bbbb") + "@" + domain
    cases = [("someone@other.example", NotOurDomain), ("sales@shop.example", UnknownRecipient),
             ("orders+nonsense@shop.example", UnknownRecipient), (forged, UnknownRecipient),
             ("orders+cmd-wrong-secret-000000@shop.example", UnknownRecipient)]
    for address, error in cases:
        with pytest.raises(error):
            pipe.deliver(store, settings, io.BytesIO(mail(to=address)), [address])
    assert InboundMessage.select().count() == 0


def test_an_expired_reply_address_is_refused_with_a_hint(store, settings, order):
    old = token_address(settings, order, tokens.CUSTOMER_REPLY, TODAY - dt.timedelta(days=800))
    with pytest.raises(ExpiredRecipient, match="expired"):
        pipe.deliver(store, settings, io.BytesIO(mail(to=old)), [old])


def test_a_reply_longer_than_an_event_keeps_its_beginning(store, settings, reply_to):
    body = "Sehr lang. " * 20_000
    message = deliver(store, settings, mail(to=reply_to, body=body), [reply_to])
    reply = log_of()[-1]
    assert message.state == "done" and reply.kind == "customer_reply"
    assert reply.body_text.startswith("Sehr lang. Sehr lang.") and "more characters left out" in reply.body_text
    assert len(reply.body_text) <= settings.limits.event_body_max_chars
