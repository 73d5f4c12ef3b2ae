"""Every corpus mail as a customer reply: the reply path under real-world mail.

test_intake_smtp and test_intake_pipe send the corpora to the shop's plain
address (or with a null sender), so they never reach the customer-reply path:
trimming, counting files, the note to the customer about files, the forward to
the owner. Here each corpus mail is one order's customer replying: sent to
that order's reply-token address, envelope sender the customer, From: the
customer (the one header changed — the daemon knows its customer by From; a
mail without From gets one). The four reply corpora hold bare reply texts, not
mails: each is sent as the text/plain body of a reply, and the order's log
must hold exactly the visible reply where the corpus gives it, and meet the
judgment of tests/corpus_judgments.toml elsewhere (see reply_corpora).

(a) over SMTP to one running `ordermail serve` per database, every corpus
mail; (b) through `ordermail deliver --recipient … --sender …` as a pipe runs
it, the MIME corpora and github's and zapier's replies (a process per mail:
crisp's and mail-parser-reply's 137 replies take the SMTP door only, which
runs the same handling); both databases.
A clean outcome: taken (250 / exit 0) or refused with a code and a reason,
never a traceback, every taken mail handled (done, or a duplicate of another
corpus mail with the same Message-ID and body), one event per handled mail on
its own order, and events + duplicates + refusals = mails sent.
"""
from __future__ import annotations

import base64
import email
import email.policy
import re
import smtplib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.store.models import Event, InboundMessage, Order, OutboxMessage, utcnow
from daemonproc import Daemon, wait_until
from mailbuilder import mail
from reply_corpora import REPLY_CORPORA, CorpusMail, corpus_mails, verdict
from test_intake_smtp import CORPORA, corpus_files

OWNER = "owner@shop.example"
MISSING = f"mail corpora not found at {CORPORA} (they come with the project's shared folder, ../shared/corpora)"


@dataclass
class Case:
    name: str              # path below the corpora folder
    order: Order
    customer: str
    address: str           # the order's reply-token address
    wire: bytes            # what is sent, CRLF line ends
    reply: CorpusMail | None = None   # a reply corpus' mail: what its text must become

    @property
    def header(self) -> bytes:
        end = self.wire.find(b"\r\n\r\n")
        return self.wire if end < 0 else self.wire[:end + 2]

    @property
    def message_id(self) -> str | None:
        value = BytesHeaderParser(policy=email.policy.compat32).parsebytes(self.wire)["Message-ID"]
        return str(value).strip() if value else None

    def part_counts(self) -> tuple[int, int]:
        """(parts the stdlib calls attachments, leaf parts): the bounds of a file count."""
        parsed = email.message_from_bytes(self.wire, policy=email.policy.default)
        leaves = [p for p in parsed.walk() if not p.is_multipart()]
        return sum(p.get_content_disposition() == "attachment" for p in leaves), len(leaves)


FROM_HEADER = re.compile(rb"^From:[^\n]*\n(?:[ \t][^\n]*\n)*", re.IGNORECASE | re.MULTILINE)
# What marks a mail as written by a machine, read from its header: only such a
# mail may end as something other than a customer reply.
MACHINE_MADE = re.compile(rb"^(?:precedence|list-id|list-unsubscribe|auto-submitted|x-autoreply|"
                          rb"x-failed-recipients)\s*:|^return-path:\s*<>|multipart/report|mailer-daemon",
                          re.IGNORECASE | re.MULTILINE)


def as_customer_reply(path: Path, customer: str, name: str, address: str, number: str) -> bytes:
    if path.relative_to(CORPORA).parts[0] in REPLY_CORPORA:
        return mail(to=address, sender=f"{name} <{customer}>", subject=f"Re: Ihre Bestellung {number}",
                    body=path.read_text(encoding="utf-8"))
    data = path.read_bytes().replace(b"\r\n", b"\n")
    end = data.find(b"\n\n")
    head, body = (data, b"") if end < 0 else (data[:end + 1], data[end + 1:])
    line = f"From: {name} <{customer}>\n".encode()
    head, replaced = FROM_HEADER.subn(lambda _match: line, head, count=1)
    if not replaced:
        head = line + head
    return (head + body).replace(b"\n", b"\r\n")


def all_reply_corpus_files() -> list[Path]:
    """The MIME corpora and every reply corpus' mails (crisp's and mail-parser-reply's too)."""
    return sorted(set(corpus_files()) | {m.path for m in corpus_mails()})


def corpus_cases(store, settings, database_url: str, files: list[Path]) -> list[Case]:
    if not files:
        pytest.skip(MISSING)
    replies = {str(m.path.relative_to(CORPORA)): m for m in corpus_mails()}
    cases = []
    for n, path in enumerate(files):
        number, customer, name = str(5000 + n), f"kunde{n}@example.org", f"Kunde {n}"
        order = orders.create_order(store, settings, sample_order(number, customer={"name": name, "email": customer}))
        address = token_address(settings, order, tokens.CUSTOMER_REPLY, utcnow().date())
        rel = str(path.relative_to(CORPORA))
        cases.append(Case(rel, order, customer, address, as_customer_reply(path, customer, name, address, number),
                          replies.get(rel)))
    return cases


# ---- the verdict, the same for both doors ------------------------------------------------

def settle(seconds: float = 180) -> None:
    wait_until(lambda: not InboundMessage.select().where(
        InboundMessage.state.in_(["new", "processing"])).exists(), seconds)


def problems_with(cases: list[Case], taken: dict[str, int], refused: dict[str, str]) -> dict[str, str]:
    """Every way a case fell short, by corpus file; empty when all is clean."""
    problems: dict[str, str] = {}
    by_message_id: dict[str, list[Case]] = {}
    for case in cases:
        if case.message_id:
            by_message_id.setdefault(case.message_id, []).append(case)
    messages = {name: InboundMessage.get_by_id(i) for name, i in taken.items()}
    events_total = duplicates = 0
    for case in cases:
        if case.name in refused:
            continue
        if case.name not in taken:
            problems[case.name] = "neither taken nor refused"
            continue
        message = messages[case.name]
        if not message.reason.strip() or "\n" in message.reason:
            problems[case.name] = f"not a one-line reason: {message.reason!r}"
            continue
        if message.state == "duplicate":
            duplicates += 1
            twins = [messages.get(c.name) for c in by_message_id.get(case.message_id or "", []) if c is not case]
            if not any(t is not None and t.state == "done" for t in twins):
                problems[case.name] = "marked duplicate, but no other corpus mail with its Message-ID was handled"
            continue
        if message.state != "done":
            problems[case.name] = f"ended {message.state}: {message.reason}"
            continue
        events = [e for e in orders.order_events(case.order) if e.kind != "created"]
        events_total += len(events)
        problem = event_problem(case, message, events)
        if problem:
            problems[case.name] = problem
    counted = events_total + duplicates + len(refused)
    if counted != len(cases):
        problems["(all)"] = (f"{events_total} events + {duplicates} duplicates + {len(refused)} refused "
                             f"= {counted}, but {len(cases)} mails were sent")
    return problems


def event_problem(case: Case, message: InboundMessage, events: list[Event]) -> str | None:
    if message.order_id != case.order.id:
        return f"handled ({message.reason}) but not tied to its order"
    if len(events) != 1:
        return f"{len(events)} events on its order, not one: {[e.kind for e in events]} ({message.reason})"
    [event] = events
    forwards = OutboxMessage.select().where((OutboxMessage.order == case.order)
                                            & (OutboxMessage.kind == "reply_forward"))
    notes = OutboxMessage.select().where((OutboxMessage.order == case.order)
                                         & (OutboxMessage.kind == "files_refused"))
    if event.kind != "customer_reply":
        if event.visibility != "internal":
            return f"a {event.kind} event that the customer sees"
        if not MACHINE_MADE.search(case.header):
            return f"a plain reply taken for machine mail: {event.kind} {event.subject!r}"
        if forwards.count() or notes.count():
            return "machine mail answered or forwarded as a customer reply"
        return None
    if (event.author, event.visibility) != ("customer", "public"):
        return f"customer reply with author {event.author}, visibility {event.visibility}"
    files = event.data.get("files_left_out")
    attachments, leaves = case.part_counts()
    if files is None or not attachments <= files <= leaves:
        return f"{files} file(s) left out, but the mail has {attachments} attachment(s) in {leaves} part(s)"
    if [(f.recipient, f.data.get("from_customer")) for f in forwards] != [(OWNER, True)]:
        return f"owner forwards: {[(f.recipient, f.data) for f in forwards]}"
    if [n.recipient for n in notes] != ([case.customer] if files else []):
        return f"{files} file(s) left out, notes about files: {[n.recipient for n in notes]}"
    if case.reply is not None:
        _, problems = verdict(case.reply, event.body_text)
        if problems:
            return "; ".join(problems)
    return None


def outbox_problems(cases: list[Case]) -> list[str]:
    """The forwards and notes of the corpus orders that were not sent."""
    rows = OutboxMessage.select().where(OutboxMessage.order.in_([c.order.id for c in cases])
                                        & OutboxMessage.kind.in_(["reply_forward", "files_refused"]))
    return [f"{r.kind} to {r.recipient} (order {r.order.number}): {r.state} {r.last_error}"
            for r in rows if r.state != "sent"]


# ---- (a) SMTP -------------------------------------------------------------------------------

@pytest.fixture
def serve(store, settings, tmp_path):
    """One `ordermail serve` for the whole corpus; its log is checked in the test."""
    running = Daemon(tmp_path, settings.database.url).start()
    try:
        yield running
    finally:
        running.stop()


def send_over_smtp(serve, cases: list[Case]) -> tuple[dict[str, int], dict[str, str], list[str]]:
    taken, refused, odd = {}, {}, []
    client = None
    for case in cases:
        if client is None:
            client = smtplib.SMTP("127.0.0.1", serve.smtp_port, timeout=60)
            client.ehlo("client.example.org")
        try:
            client.rset()
            assert client.mail(case.customer)[0] == 250
            code, answer = client.rcpt(case.address)
            if code == 250:
                code, answer = client.data(case.wire)
        except smtplib.SMTPServerDisconnected:
            odd.append(f"{case.name}: the server hung up")
            client = None
            continue
        text = answer.decode("utf-8", "replace")
        if code == 250 and text.startswith("2.0.0 OK queued as "):
            taken[case.name] = int(text.split()[-1])
        elif 400 <= code < 600 and re.match(r"\d\.\d{1,3}\.\d{1,3} \S", text):
            refused[case.name] = f"{code} {text}"
        else:
            odd.append(f"{case.name}: {code} {text!r}")
    if client is not None:
        client.quit()
    return taken, refused, odd


def test_every_corpus_mail_as_a_customer_reply_over_smtp(serve, store, settings, database_url):
    cases = corpus_cases(store, settings, database_url, all_reply_corpus_files())
    taken, refused, odd = send_over_smtp(serve, cases)
    assert odd == []
    settle()
    problems = problems_with(cases, taken, refused)
    assert problems == {}
    wait_until(lambda: not outbox_problems(cases), 120)      # the daemon sends forwards and notes itself
    assert serve.stop() == 0
    assert "Traceback" not in serve.log_text()
    assert set(refused) <= {"mailparser/mail_test_2"}, refused  # 1.5 MB over the daemon's 1 MiB limit
    assert all(r.startswith("552 5.3.4") for r in refused.values()), refused
    # the trimming was checked end to end: every reply corpus mail against its text or judgment
    checked = [c for c in cases if c.reply is not None and verdict(c.reply, "")[0] != "unjudged"]
    assert len(checked) == len([c for c in cases if c.name.split("/")[0] in REPLY_CORPORA]) >= 180


# ---- (b) the pipe ---------------------------------------------------------------------------

SYSEXITS_REFUSED = {65, 67, 75}


def deliver_all(ordermail, cases: list[Case]) -> tuple[dict[str, int], dict[str, str], list[str]]:
    def one(case: Case):
        return case, ordermail("deliver", "--recipient", case.address, "--sender", case.customer, stdin=case.wire)
    taken, refused, odd = {}, {}, []
    with ThreadPoolExecutor(2) as pool:         # an MTA runs pipe deliveries side by side
        for case, result in pool.map(one, cases):
            lines = result.stderr.strip().splitlines()
            if "Traceback" in result.stderr or len(lines) != 1:
                odd.append(f"{case.name}: exit {result.returncode}, stderr {result.stderr!r}")
            elif result.returncode == 0 and re.fullmatch(r"taken as \d+", lines[0]):
                taken[case.name] = int(lines[0].split()[-1])
            elif result.returncode in SYSEXITS_REFUSED and lines[0].startswith("ordermail: "):
                refused[case.name] = f"{result.returncode} {lines[0]}"
            else:
                odd.append(f"{case.name}: exit {result.returncode}, stderr {result.stderr!r}")
    return taken, refused, odd


def test_every_corpus_mail_as_a_customer_reply_through_the_pipe(ordermail, store, settings, database_url):
    cases = corpus_cases(store, settings, database_url, corpus_files())
    taken, refused, odd = deliver_all(ordermail, cases)
    assert odd == []
    assert refused == {}                           # 25 MiB limit: every corpus mail fits
    settle(0.1)                                    # deliver handles at once: nothing may wait
    problems = problems_with(cases, taken, refused)
    assert problems == {}
    sent = ordermail("jobs", "run", "outbox-retry")
    assert sent.returncode == 0 and "Traceback" not in sent.stderr, sent.stderr
    assert outbox_problems(cases) == []


# ---- NUL characters, which the corpora brought up ------------------------------------------------------------

def nul_reply(address: str, customer: str) -> bytes:
    text = base64.b64encode("Die Tasse ist heil angekommen.\0\r\n".encode()).decode()
    return (f"From: Ku\0nde <{customer}>\r\nTo: {address}\r\nSubject: Re: Ihre\0 Bestellung\r\n"
            "Message-ID: <nul-1\0@example.org>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            f"{text}\r\n").encode()


@pytest.mark.parametrize("door", ["smtp", "pipe"])
def test_a_reply_with_a_nul_in_its_text_lands_on_its_order(door, store, settings, ordermail, tmp_path):
    """PostgreSQL stores no text holding NUL: the characters are taken out
    (header, body, the door's Message-ID), the mail is not refused."""
    files = [p for p in corpus_files() if b"\0" in p.read_bytes()]     # mail_malformed_3, mail_outlook_1
    cases = []
    for n, path in enumerate([None, *files]):
        customer = f"nul{n}@example.org"
        order = orders.create_order(store, settings, sample_order(str(6000 + n), customer={"name": "K", "email": customer}))
        address = token_address(settings, order, tokens.CUSTOMER_REPLY, utcnow().date())
        wire = nul_reply(address, customer) if path is None else \
            as_customer_reply(path, customer, "K", address, order.number)
        cases.append(Case("synthetic" if path is None else str(path.relative_to(CORPORA)), order, customer,
                          address, wire))
    if door == "smtp":
        server = Daemon(tmp_path, settings.database.url).start()
        try:
            taken, refused, odd = send_over_smtp(server, cases)
            settle(60)
        finally:
            server.stop()
        log = server.log_text()
    else:
        taken, refused, odd = deliver_all(ordermail, cases)
        log = ""
    assert odd == [] and refused == {}
    assert problems_with(cases, taken, refused) == {}
    assert "Traceback" not in log
    [event] = [e for e in orders.order_events(cases[0].order) if e.kind == "customer_reply"]
    assert event.body_text.startswith("Die Tasse ist heil angekommen.")
    assert event.subject == "Re: Ihre Bestellung" and event.message_id == "<nul-1@example.org>"
