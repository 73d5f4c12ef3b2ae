"""The owner works by mail: command mails, receipts, undo, and answering customers.

A command mail is either a *full event* — the Subject is the command
("shipped 1042 carrier DHL") and the body, with its pictures and files, is
the message the customer gets — or *lines*: each line of the body, up to the
signature, is one command, and each attached file (but pictures and
signatures) is a bank statement to import (daemon/payments/statements). Every command
mail gets one receipt, threaded onto it, that lists each line and each
statement: done (what changed) or not done (why).
Replying `undo` to a receipt within a day takes back what that mail did; the
log keeps both as internal events. A mail is applied once: a resent copy
(the same Message-ID) gets a receipt saying so and changes nothing.

Mail that fails the owner check (`owner_auth`) is discarded with a log line
and at most one alert a day to the owner — never an answer to the sender.
"""
from __future__ import annotations

import datetime as dt
import logging
import re

from daemon.handling import commands
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.errors import InputError
from daemon.mail.parsing import attachment_data
from daemon.orders.service import Content, NewFile, Via
from daemon.handling.owner_auth import check_owner
from daemon.mail.richtext import sanitize_html
from daemon.payments.statements import importer, report as statement_report
from daemon.store.models import CommandMail, OutboxMessage
from daemon.translations import Said, said, say

log = logging.getLogger("ordermail.owner")
MAX_LINES = 200
UNDO_HOURS = 24
UNDO_WORDS = frozenset({"undo", "rückgängig", "rueckgaengig", "annuler"})
REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|aw|wg|fwd?|tr|sv)\s*(?:\[\d+\])?\s*:\s*)+", re.IGNORECASE)
FULL_EVENT_VERBS = frozenset({"paid", "shipped", "cancelled", "refunded", "message", "note"})
RECEIPT_LINES = 100              # per heading of a statement's report in a receipt
# Attached files that are never a bank statement: pictures, signatures, calendar and contact cards.
# application/applefile: the resource fork Apple Mail sends beside a file (multipart/appledouble).
NOT_STATEMENTS = ("image/", "message/", "application/pgp-signature", "application/pkcs7-signature",
                  "application/x-pkcs7-signature", "application/pgp-keys", "application/ms-tnef",
                  "application/applefile", "text/vcard", "text/x-vcard", "text/calendar")


def is_owner_mail(ctx) -> bool:
    """Sent to the command address, or to an order's owner-answer address."""
    if ctx.sent_to("command"):
        return True
    return ctx.target is not None and ctx.target.purpose == tokens.OWNER_ANSWER


def handle(ctx) -> str:
    verdict = check_owner(ctx.mail, ctx.message.raw, ctx.settings, ctx.message.channel)
    if not verdict.ok:
        return _discard(ctx, verdict.reason)
    known = _known_mail(ctx)
    if known is not None:
        _receipt(ctx, [Said("This mail was already carried out on %(when)s UTC; nothing was done again.",
                            when=f"{known.created_at:%Y-%m-%d %H:%M}")], undoable=False)
        return "already done before; nothing applied again"
    if not ctx.sent_to("command"):
        return _answer_customer(ctx)
    if _undo_words(ctx):
        return _undo(ctx)
    return _run_commands(ctx)


# ---- commands --------------------------------------------------------------------

def _run_commands(ctx) -> str:
    subject = REPLY_PREFIX.sub("", ctx.mail.subject).strip()
    statements, changes = [], []
    if _is_command(subject):
        lines, content = [subject], _content(ctx)
    else:
        lines, content = _body_lines(ctx), None
        statements = _import_statements(ctx, changes)
    via = Via(author="owner", message_id=ctx.mail.message_id, now=ctx.now)
    outcomes = []
    for line in lines[:MAX_LINES]:
        before = _snapshots(line)
        for outcome in commands.run_line(ctx.store, ctx.settings, line, via=via, content=content):
            outcomes.append(outcome)
            if outcome.changed and outcome.event_id and outcome.number in before:
                changes.append({"number": outcome.number, "event_id": outcome.event_id,
                                "before": before[outcome.number]})
    report = statements + [_report_line(o) for o in outcomes]
    report = report or [Said("No command found. Write 'help' for the commands.")]
    if len(lines) > MAX_LINES:
        report.append(Said("NOT DONE: %(text)s", text=Said("%(count)s more lines (at most %(most)s per mail)",
                                                            count=len(lines) - MAX_LINES, most=MAX_LINES)))
    _record(ctx, changes, _receipt(ctx, report, undoable=bool(changes)))
    done = sum(o.changed for o in outcomes)
    imported = f", {len(statements)} statement(s)" if statements else ""
    return f"{len(outcomes)} command result(s), {done} change(s){imported}; receipt to {ctx.mail.from_address}"


def _is_command(subject: str) -> bool:
    try:
        parsed = commands.parse_line(subject)
    except Exception:
        return False
    return parsed.verb in FULL_EVENT_VERBS and bool(parsed.numbers)


def _import_statements(ctx, changes: list) -> list[str]:
    """Each attached file a statement: its import's report, or why it was not read.
    What marked orders paid goes to `changes`, so that `undo` takes it back."""
    report = []
    for index, attachment in enumerate(ctx.mail.attachments):
        if attachment.content_type.lower().startswith(NOT_STATEMENTS):
            continue
        data = attachment.data if attachment.data is not None else attachment_data(ctx.message.raw, index)
        name = attachment.filename or f"attachment {index + 1}"
        try:
            result = importer.import_statement(ctx.store, ctx.settings, data, name, now=ctx.now, undoable=True)
        except InputError as exc:
            report.append(Said(_ECHOED, line=name, text=Said("NOT DONE: %(text)s", text=said(exc))))
            continue
        changes.extend(result.changes)
        report.append(f"> {name}\n" + statement_report.as_text(result, limit=RECEIPT_LINES, lang=ctx.settings.shop.locale,
                                                                shop_dir=ctx.settings.outbound.templates_dir))
    return report


def _body_lines(ctx) -> list[str]:
    """The body's lines up to the signature: the trimmer cuts a signature off
    a text, but keeps one that has nothing above it (a mail that only carries
    a statement, signed), and "--" is no command."""
    lines = []
    for line in ctx.mail.trimmed.text.splitlines():
        if line.rstrip() == "--":
            break
        if line.strip() and not line.lstrip().startswith(("#", ">")):
            lines.append(line.strip())
    return lines


def _content(ctx) -> Content:
    """The body as the owner formatted it, with pictures and files."""
    mail = ctx.mail
    trimmed = mail.trimmed
    html = sanitize_html(mail.html) if mail.html.strip() and not trimmed.trimmed else ""
    files = tuple(NewFile(a.filename or "file", a.content_type,
                          a.data if a.data is not None else attachment_data(ctx.message.raw, index),
                          (a.content_id or "").strip("<>") or None)
                  for index, a in enumerate(mail.attachments))
    return Content(text=trimmed.text, html=html, files=files)


def _snapshots(line: str) -> dict:
    try:
        numbers = commands.parse_line(line).numbers
    except Exception:
        return {}
    found = {}
    for number in numbers:
        try:
            found[number] = orders.snapshot(number)
        except Exception:
            continue
    return found


_ECHOED = "> %(line)s\n%(text)s"   # no words of its own: kept out of the catalogs


def _report_line(outcome) -> Said:
    """The command as written, then what it did (the command itself is not translated)."""
    return Said(_ECHOED, line=outcome.line,
                text=outcome.text if outcome.ok else Said("NOT DONE: %(text)s", text=outcome.text))


# ---- undo ------------------------------------------------------------------------

def _undo_words(ctx) -> bool:
    first = next(iter(_body_lines(ctx)), "")
    subject = REPLY_PREFIX.sub("", ctx.mail.subject).strip().lower()
    return first.lower().rstrip(".!") in UNDO_WORDS or subject in UNDO_WORDS


def _undo(ctx) -> str:
    ids = [*ctx.mail.in_reply_to, *ctx.mail.references]
    original = CommandMail.get_or_none(CommandMail.receipt_message_id.in_(ids)) if ids else None
    if original is None:
        report = [Said("NOT DONE: undo works as a reply to a receipt; this mail answers none.")]
    elif original.undone_at is not None:
        report = [Said("Nothing to do: that mail was already undone on %(when)s UTC.",
                       when=f"{original.undone_at:%Y-%m-%d %H:%M}")]
    elif ctx.now > original.undo_until:
        report = [Said("NOT DONE: undo works for %(hours)s hours after a command mail; that one is older.",
                       hours=UNDO_HOURS)]
    else:
        report = _undo_changes(ctx, original)
    _record(ctx, [], _receipt(ctx, report, undoable=False))
    return "undo: " + "; ".join(line.splitlines()[-1] for line in report)


def _undo_changes(ctx, original: CommandMail) -> list[str]:
    via = Via(author="owner", now=ctx.now)
    report = []
    for change in reversed(original.changes):
        try:
            result = orders.undo_event(ctx.store, ctx.settings, change["number"], change["event_id"],
                                       change["before"], via=via)
            report.append(result.summary)
        except Exception as exc:   # the order may be gone or changed since: say so, go on
            report.append(Said("NOT DONE: %(number)s: %(text)s", number=change["number"], text=said(exc)))
    original.undone_at = ctx.now
    original.save()
    return report or [Said("Nothing to undo: that mail changed nothing.")]


# ---- answering a customer by replying to a forward ---------------------------------

def _answer_customer(ctx) -> str:
    order = ctx.target.order
    ctx.message.order = order
    content = _content(ctx)
    change = orders.add_message(ctx.store, ctx.settings, order.number, content,
                                via=Via(author="owner", message_id=ctx.mail.message_id, now=ctx.now))
    _record(ctx, [], None)
    return change.summary


# ---- receipts, records, alerts -------------------------------------------------------

def _receipt(ctx, report: list[str], *, undoable: bool) -> OutboxMessage:
    """The receipt, in the shop's language (each line a Said, or as the importer wrote it)."""
    mail, lang = ctx.mail, ctx.settings.shop.locale
    until = ctx.now + dt.timedelta(hours=UNDO_HOURS)
    report = [say(line, lang, ctx.settings.outbound.templates_dir) for line in report]
    footer = ("\n\n" + say(Said("Reply 'undo' to this mail until %(when)s UTC to take it back.",
                                 when=f"{until:%Y-%m-%d %H:%M}"), lang, ctx.settings.outbound.templates_dir)
              if undoable else "")
    subject = mail.subject if mail.subject.lower().startswith("re:") else f"Re: {mail.subject}"
    return orders.queue_mail(ctx.settings, "receipt", mail.from_address, inbound=ctx.message, now=ctx.now, data={
        "subject": subject.strip(), "in_reply_to": mail.message_id,
        "references": [*mail.references, mail.message_id] if mail.message_id else list(mail.references),
        "text": "\n\n".join(report) + footer})


def _record(ctx, changes: list, receipt: OutboxMessage | None) -> None:
    CommandMail.create(message_id=ctx.mail.message_id or f"<inbound-{ctx.message.id}@ordermail>",
                       inbound=ctx.message, sender=ctx.mail.from_address or "",
                       receipt_message_id=receipt.message_id if receipt else None,
                       created_at=ctx.now, undo_until=ctx.now + dt.timedelta(hours=UNDO_HOURS),
                       changes=changes)


def _known_mail(ctx) -> CommandMail | None:
    if not ctx.mail.message_id:
        return None
    return CommandMail.get_or_none(CommandMail.message_id == ctx.mail.message_id)


def _discard(ctx, reason: str) -> str:
    log.warning("mail to the owner's address discarded (%s): From %s, Subject %r",
                reason, ctx.mail.from_address, ctx.mail.subject[:80])
    alerted = 0
    for owner in ctx.settings.owner.addresses:
        if not _alerted_today(owner, ctx.now):
            orders.queue_mail(ctx.settings, "owner_alert", owner, now=ctx.now, data={
                "topic": "command_refused",
                "text": say(Said("A mail to your command address was not carried out: %(reason)s.\n"
                                 "From: %(sender)s\nSubject: %(subject)s\n"
                                 "It is kept as received message %(id)s ('ordermail inbound show %(id)s'). "
                                 "You get at most one such alert a day.", reason=reason,
                                 sender=ctx.mail.from_address or "(none)", subject=ctx.mail.subject,
                                 id=ctx.message.id),
                            ctx.settings.shop.locale, ctx.settings.outbound.templates_dir)})
            alerted += 1
    return f"discarded, not answered: {reason}" + ("; owner alerted" if alerted else "")


def _alerted_today(owner: str, now) -> bool:
    return orders.alerts_since(owner, "command_refused", now - dt.timedelta(hours=24)) > 0
