"""Bounces: recognise a non-delivery report and say what it reports.

`find_bounce` is a function of the parsed mail alone (parse once): the
delivery-status part, the returned original's Message-ID and the text are all
in the `InboundMail`. Two kinds are read:

- RFC 3464 reports (`multipart/report; report-type=delivery-status`, as sent
  by Postfix, Exim, Exchange, Gmail and most others): the per-recipient fields
  say everything. A report that only tells of delivered or relayed mail is no
  bounce.
- the older free-text ones (qmail, Exim's own format, Sendmail, old Exchange
  and Gmail wording), recognised by the sentences those programs write and,
  failing that, by a bounce subject from MAILER-DAEMON, postmaster or the
  null sender. An out-of-office subject is never read as a bounce.

`permanent` says whether the address itself is bad (a 5.x.x status, or wording
that leaves no doubt); a 4.x.x report, delayed or given up, is not permanent.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from daemon.mail.headers import normalise_message_id, one_line
from daemon.mail.machine_sent import is_out_of_office_subject
from daemon.mail.parsing import InboundMail

MAX_DIAGNOSTIC = 500
_ROBOTS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})


@dataclass(frozen=True)
class Bounce:
    status: str                     # "5.1.1", "4.2.2"; "" if the report gives none
    permanent: bool
    recipient: str | None           # the address that failed, lowercased
    diagnostic: str                 # what the remote server said, one line
    original_message_id: str | None  # of our mail that came back
    kind: str = "rfc3464"           # or the program whose wording matched: qmail, exim, …


def find_bounce(mail: InboundMail) -> Bounce | None:
    """The bounce this mail is, or None when it is none."""
    report = next((a for a in mail.attachments if a.content_type.endswith("delivery-status")),
                  None)
    if report is not None:
        return _from_report(mail, (report.data or b"").decode("utf-8", "replace"))
    kind = _text_kind(mail)
    return _from_text(mail, kind) if kind else None


# ---- RFC 3464 ------------------------------------------------------------------

def _from_report(mail: InboundMail, report: str) -> Bounce | None:
    recipients = [b for b in _field_blocks(report) if "action" in b or "final-recipient" in b]
    failed = _first(recipients, "failed") or _first(recipients, "delayed")
    if failed is None:
        if recipients:      # delivered, relayed, expanded: a receipt, not a bounce
            return None
        failed = {}          # a report without recipient fields: still a bounce
    diagnostic = _after_type(failed.get("diagnostic-code", ""))
    status = _status(failed.get("status", "")) or _status(diagnostic)
    action = failed.get("action", "failed").lower()
    recipient = _address(_after_type(failed.get("final-recipient", "")
                                     or failed.get("original-recipient", "")))
    return Bounce(
        status=status,
        permanent=status.startswith("5") or (not status and action == "failed"),
        recipient=recipient or _text_recipient(_human_part(mail.text), mail),
        diagnostic=one_line(diagnostic or _text_diagnostic(_human_part(mail.text)),
                            MAX_DIAGNOSTIC),
        original_message_id=_original_id(mail),
        kind="rfc3464",
    )


def _field_blocks(report: str) -> list[dict[str, str]]:
    """The report's field groups (blank-line separated), names lowercased, unfolded."""
    blocks = []
    for chunk in re.split(r"\n[ \t]*\n", report.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        for m in re.finditer(r"(?m)^([A-Za-z][A-Za-z0-9-]*)[ \t]*:(.*(?:\n[ \t].*)*)", chunk):
            fields.setdefault(m.group(1).lower(), " ".join(m.group(2).split()))
        if fields:
            blocks.append(fields)
    return blocks


def _first(blocks: list[dict[str, str]], action: str) -> dict[str, str] | None:
    return next((b for b in blocks if b.get("action", "").lower().startswith(action)), None)


def _after_type(value: str) -> str:
    """ "rfc822; a@b" → "a@b", "smtp; 550 …" → "550 …" """
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and " " not in kind.strip() else value.strip()


# ---- free-text bounces ------------------------------------------------------------

# Sentences only a mail program writes: enough on their own.
_SIGNATURES = (
    ("qmail", r"this is the qmail-send program"),
    ("exim", r"this message was created automatically by mail delivery software"),
    ("postfix", r"this is the mail system at host"),
    ("sendmail", r"-{3,} ?the following addresses had (?:permanent )?fatal errors|"
                 r"-{3,} ?transcript of session follows"),
)
# Wording a person might also write: a bounce only when a machine sent the mail.
_WORDINGS = (
    ("exchange", r"delivery has failed to these recipients|the following recipient\(s\) cannot"
                 r" be reached|your message (?:couldn't be|could not be|wasn't|was not) delivered|"
                 r"die nachricht konnte nicht .{0,40}zugestellt werden"),
    ("gmail", r"delivery to the following recipients? failed|there was a temporary problem"
              r" delivering your message"),
    ("postfix", r"i'm sorry to have to inform you that your message could not\s+be delivered"),
)
_SIGNATURE_RES = tuple((k, re.compile(rx, re.IGNORECASE)) for k, rx in _SIGNATURES)
_WORDING_RES = tuple((k, re.compile(rx, re.IGNORECASE)) for k, rx in _WORDINGS)
_OOO_HEADERS = frozenset({"X-Autoreply", "X-Autorespond"})
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(?:undeliver(?:ed|able)|mail delivery failed|delivery status notification|"
    r"delivery (?:failure|failed)|delivery notification: delivery has failed|"
    r"failure notice|returned mail|"
    r"mail system error|message (?:not delivered|delivery failure)|unzustellbar|"
    r"nicht zustellbar|non remis|non distribuable|warning: could not send|"
    r"delayed mail|delivery delayed)", re.IGNORECASE)


def _text_kind(mail: InboundMail) -> str | None:
    """The program whose bounce wording this is, "text" for a bare bounce subject, or None."""
    if is_out_of_office_subject(mail.subject) or mail.auto_submitted in _OOO_HEADERS:
        return None                         # an out-of-office is never a bounce
    own_words = "\n".join(line for line in mail.text[:8_000].splitlines()
                          if not line.lstrip().startswith(">"))   # not what it quotes
    for kind, rx in _SIGNATURE_RES:
        if rx.search(own_words):
            return kind
    robot = (mail.envelope_from == "<>" or _is_robot(mail.envelope_from)
             or _is_robot(mail.from_address))
    if robot or mail.auto_submitted:
        for kind, rx in _WORDING_RES:
            if rx.search(own_words):
                return kind
    return "text" if robot and _BOUNCE_SUBJECT.search(mail.subject) else None


def _is_robot(address: str | None) -> bool:
    return bool(address) and address.split("@")[0].lower() in _ROBOTS


_TEMPORARY = re.compile(r"\b(?:delayed|will (?:retry|keep trying|be retried)|still trying|"
                        r"temporar(?:y|ily)|not yet been delivered|verzögert)\b", re.IGNORECASE)


def _from_text(mail: InboundMail, kind: str) -> Bounce:
    human = _human_part(mail.text)
    status = _status(human)
    permanent = status.startswith("5") if status else not _TEMPORARY.search(human)
    return Bounce(
        status=status,
        permanent=permanent,
        recipient=_text_recipient(human, mail),
        diagnostic=one_line(_text_diagnostic(human), MAX_DIAGNOSTIC),
        original_message_id=_original_id(mail),
        kind=kind,
    )


# Where the returned original starts in a free-text bounce.
_ORIGINAL_STARTS = re.compile(
    r"(?im)^[ \t]*(?:-{2,}.*(?:copy of the message|original message|unsent message|"
    r"message follows|header of the original|returned message)|original message headers:|"
    r"(?:return-path|received|message-id|from|subject|date)[ \t]*:)")


def _human_part(text: str) -> str:
    """The bounce's own words: the text before the returned original."""
    m = _ORIGINAL_STARTS.search(text)
    return text[:m.start()] if m else text[:8_000]


_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


def _status(text: str) -> str:
    """The first enhanced status code (RFC 3463) that reports a failure."""
    return next((s for s in _STATUS.findall(text) if s[0] in "45"), "")


_ADDR = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
_RECIPIENT_PATTERNS = (
    re.compile(rf"(?m)^[ \t]*<({_ADDR})>:"),                        # qmail, Postfix text
    re.compile(rf"(?m)^[ \t]*<?({_ADDR})>?[ \t]*(?:\(.*\))?[ \t]*:?[ \t]*$"),   # Exim, Gmail, Exchange
    re.compile(rf"<?({_ADDR})>?"),                                   # anything else
)


def _text_recipient(human: str, mail: InboundMail) -> str | None:
    own = {mail.from_address, mail.sender_address, *mail.to, *mail.delivered_to}
    for pattern in _RECIPIENT_PATTERNS:
        for found in pattern.findall(human):
            address = found.lower()
            if address not in own and not _is_robot(address):
                return address
    return None


_SMTP_LINE = re.compile(r"(?m)^.*(?<![\d.])[45]\d\d(?:[ -]|$).*$")


def _text_diagnostic(human: str) -> str:
    """The remote server's answer if quoted, else the first sentence of the report."""
    m = _SMTP_LINE.search(human)
    if m:
        return m.group(0)
    lines = [line.strip() for line in human.splitlines() if line.strip()]
    return next((line for line in lines if not _marker_line(line)), "")


def _marker_line(line: str) -> bool:
    return (any(rx.search(line) for _, rx in _SIGNATURE_RES + _WORDING_RES)
            or line.lower().startswith("hi."))


_BODY_MESSAGE_ID = re.compile(r"(?im)^[ \t>]*message-id:[ \t]*(<[^<>\s]+>)")


def _original_id(mail: InboundMail) -> str | None:
    for attachment in mail.attachments:
        if attachment.message_id:
            return attachment.message_id
    m = _BODY_MESSAGE_ID.search(mail.text)
    return normalise_message_id(m.group(1)) if m else None


def _address(value: str) -> str | None:
    m = re.search(_ADDR, value)
    return m.group(0).lower() if m else None
