"""Cut a customer's e-mail reply down to what the customer actually wrote.

When a customer answers a shop notification from their mail client, the
client adds the shop's mail (quoted with ">", under an "On ... wrote:" line
in the customer's language, or below an Outlook "From: / Sent: / To:" block),
a "-- " signature and mobile boilerplate such as "Verzonden met BlackBerry
Work". The order log must keep only the customer's own words, whatever the
language and the client.

How it works (the design of Discourse's email_reply_trimmer, re-implemented
and generalised): every line is classified first (`classify`), on its own and
then with its neighbours -- empty, text, ">"-quote, quote header (recognised by
its shape, joined across the line breaks clients insert), header block (a run
of "Label: value" lines starting with the sender, in any language), delimiter,
forward marker, mobile signature. The cut is then decided on the *pattern* of
classes (`policy`), not by one regex over the whole text. The word lists in
`words` only add confidence to the shapes in `shapes`.

Inline answers keep the quoted passages they answer, as "> " lines (the page
and the owner's forward show them as quotes); a forwarded mail keeps what was
forwarded without its header block. If nothing of the customer's own would be
left, the whole text is returned: a mail never becomes an empty log entry,
and the raw mail stays attached to the event either way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from daemon.mail.trimming.classify import Classified
from daemon.mail.trimming.html import html_to_text
from daemon.mail.trimming.policy import customer_lines
from daemon.mail.trimming.shapes import visible

__all__ = ["TrimmedReply", "trim_reply", "html_to_text", "is_forward_subject"]


# Characters of a reply that are read: ten times an event's default size, and
# a bound on the time a hostile mail can take (about half a second of CPU).
MAX_TEXT_LENGTH = 1_000_000


@dataclass(frozen=True)
class TrimmedReply:
    text: str       # what the customer wrote, without surrounding blank lines
    trimmed: bool   # True when something was cut


# "Fwd:", "WG:" (de), "TR:" (fr), "RV:" (es), "I:" (it), "ENC:" (pt), "Doorst:"
# (nl), "VB:" (sv), "VS:"/"Videresend:" (no, da), "PD:" (pl), "Пересл:" (ru).
_FORWARD_SUBJECT = re.compile(
    r"^\s*(?:\[[^\]]{0,40}\]\s*)?(?:fwd?|wg|tr|rv|enc|i|doorst|vb|vs|videresend|vl|pd|пересл|fw)\s*:",
    re.IGNORECASE)


def is_forward_subject(subject: str) -> bool:
    """Does a subject say the mail forwards another ("Fwd: ...", "WG: ...")?"""
    return _FORWARD_SUBJECT.match(subject or "") is not None


def trim_reply(text: str, subject: str = "") -> TrimmedReply:
    """Return what the customer wrote in a plain-text reply.

    `subject`, when given, tells a forward ("Fwd: ...") from a reply: an
    Outlook forward's header block then opens the forwarded mail, kept.
    """
    cut_short = len(text) > MAX_TEXT_LENGTH
    if cut_short:
        # A reply's own words stand at its top, and an event holds far less:
        # the rest of a huge mail is not read (the raw mail keeps it).
        text = text[:text.rfind("\n", 0, MAX_TEXT_LENGTH) + 1 or MAX_TEXT_LENGTH]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    untrimmed = _tidy(lines)
    if not untrimmed:
        return TrimmedReply("", cut_short)
    kept = _tidy(customer_lines(Classified(lines), forwarded=is_forward_subject(subject)))
    if not kept:
        # Nothing of the customer's own was found: keep the whole mail rather
        # than log an empty answer.
        return TrimmedReply(untrimmed, cut_short)
    return TrimmedReply(kept, cut_short or kept != untrimmed)


def _tidy(lines: list[str]) -> str:
    """Join lines without trailing spaces and without surrounding blank lines."""
    return "\n".join(visible(line) for line in lines).strip("\n")
