"""SMTP and LMTP into the running daemon: refuse early, acknowledge only what is stored.

Every test starts `ordermail serve` as a real process on loopback ports, on
both databases, and talks to it with smtplib, a raw LMTP socket and swaks.
"""
from __future__ import annotations

import datetime as dt
import random
import smtplib
import socket
import sqlite3
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from aiosmtpd.smtp import SMTP

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.intake.connections import ConnectionLimits
from daemon.intake.smtp import _CHUNK as DATA_CHUNK, SMTPDoor
from daemon.store.models import Event, InboundMessage, Order
from daemonproc import Daemon, free_port, wait_until
from mailbuilder import mail
from realservers import swaks  # noqa: F401  (fixture)

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


@pytest.fixture
def daemon(store, settings, tmp_path):
    running = Daemon(tmp_path, settings.database.url).start()
    yield running
    assert running.stop() == 0, running.log_text()
    assert "Traceback" not in running.log_text()


@pytest.fixture
def order(store, settings):
    return orders.create_order(store, settings, sample_order())


@pytest.fixture
def reply_to(settings, order):
    return token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())


def smtp(daemon) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=30)
    client.ehlo("client.example.org")
    return client


def replies_on(number: str) -> list[Event]:
    order = Order.get(Order.number == number)
    return list(Event.select().where((Event.order == order) & (Event.kind == "customer_reply")))


def test_a_reply_is_acknowledged_after_it_is_stored_and_lands_on_its_order(daemon, reply_to):
    with smtp(daemon) as client:
        client.mail("erika@example.org")
        assert client.rcpt(reply_to)[0] == 250
        code, answer = client.data(mail(to=reply_to, body="Bitte mit Geschenkpapier."))
    assert code == 250 and answer.startswith(b"2.0.0 OK queued as ")
    stored = InboundMessage.get_by_id(int(answer.split()[-1]))
    assert stored.channel == "smtp" and stored.recipients == [reply_to]
    [reply] = wait_until(lambda: replies_on("1042"))
    assert reply.body_text == "Bitte mit Geschenkpapier."


def test_recipients_are_refused_while_the_sender_is_connected(daemon, reply_to):
    forged = reply_to.replace(reply_to[7:11], "aaaa" if reply_to[7:11] != "aaaa" else "bbbb")
    with smtp(daemon) as client:
        client.mail("someone@example.org")
        assert client.rcpt("victim@elsewhere.example") == (550, b"5.7.1 Relaying denied: we accept mail for the shop only")
        assert client.rcpt("sales@shop.example")[0:1] == (550,) and client.rcpt("sales@shop.example")[1].startswith(b"5.1.1")
        assert client.rcpt(forged)[1].startswith(b"5.1.1")
        assert client.rcpt("orders+cmd-guessed-secret-0000@shop.example")[1].startswith(b"5.1.1")
    assert InboundMessage.select().count() == 0


def test_size_is_announced_and_enforced(daemon):
    with smtp(daemon) as client:
        assert client.esmtp_features["size"] == "1048576"
        code, answer = client.mail("a@example.org", ["SIZE=2000000"])
        assert (code, answer[:5]) == (552, b"5.3.4")
        client.rset()
        client.mail("a@example.org")
        client.rcpt("orders@shop.example")
        code, answer = client.data(mail(to="orders@shop.example", body=("x" * 70 + "\n") * 17_000))
        assert (code, answer[:5]) == (552, b"5.3.4")
        small = b"Subject: danach\r\n\r\nDie Sitzung geht weiter.\r\n"     # the session is still usable
        client.mail("a@example.org")
        client.rcpt("orders@shop.example")
        code, answer = client.data(small)
        assert code == 250
    [stored] = InboundMessage.select()
    assert stored.raw == small and int(answer.split()[-1]) == stored.id


class RawSMTP:
    """An SMTP client that sends exactly the bytes it is given, split where it is told.

    smtplib stuffs the dots and mends the line ends itself; these tests need
    the wire bytes in their own hands.
    """

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.lines = self.sock.makefile("rb")
        assert self.reply().startswith(b"220")
        self.sock.sendall(b"EHLO client.example.org\r\n")
        assert self.reply().startswith(b"250")

    def reply(self) -> bytes:
        lines = [self.lines.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(self.lines.readline())
        return lines[-1].rstrip(b"\r\n")

    def send(self, *parts: bytes) -> None:
        """Each part on its own, with a pause: the daemon reads them apart."""
        for part in parts:
            self.sock.sendall(part)
            time.sleep(0.05)

    def start_data(self) -> None:
        self.sock.sendall(b"MAIL FROM:<erika@example.org>\r\nRCPT TO:<orders@shop.example>\r\nDATA\r\n")
        assert [self.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def stored(answer: bytes) -> bytes:
    assert answer.startswith(b"250 2.0.0 OK queued as "), answer
    return InboundMessage.get_by_id(int(answer.split()[-1])).raw


def test_dot_stuffed_lines_arrive_unstuffed_and_pipelined_commands_after_the_dot_are_answered(daemon):
    wire = (b"Subject: Punkte\r\n\r\n"
            b"..\r\n"                    # a line that is one dot
            b"...\r\n"                   # two dots
            b"..Anfang\r\n"
            b"Ende.\r\n"                 # a dot at the end stays
            b"bare\n.LF\r\n"             # a bare LF starts no line: its dot stays
            b"CR\r.dot\r\n"              # nor does a bare CR
            b".\r\r\n"                   # a dot, then CR CR LF
            b".\n.\r\n")                 # a dot, LF, dot: no end, the line is longer
    unstuffed = (b"Subject: Punkte\r\n\r\n.\r\n..\r\n.Anfang\r\nEnde.\r\nbare\n.LF\r\nCR\r.dot\r\n"
                 b"\r\r\n\n.\r\n")
    client = RawSMTP(daemon.smtp_port)
    try:
        client.start_data()
        client.sock.sendall(wire + b".\r\nMAIL FROM:<erika@example.org>\r\nRCPT TO:<orders@shop.example>\r\n"
                            b"DATA\r\n")
        first = client.reply()
        assert [client.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        client.sock.sendall(b"..\r\n.\r\nQUIT\r\n")
        second = client.reply()
        assert client.reply().startswith(b"221")
    finally:
        client.close()
    assert stored(first) == unstuffed
    assert stored(second) == b".\r\n"


def test_an_empty_message_is_taken(daemon):
    client = RawSMTP(daemon.smtp_port)
    try:
        client.start_data()
        client.sock.sendall(b".\r\nQUIT\r\n")
        answer = client.reply()
        assert client.reply().startswith(b"221")
    finally:
        client.close()
    assert stored(answer) == b""


def test_the_message_is_the_same_wherever_the_daemon_reads_it_apart(daemon):
    """DATA is read in chunks of 256 KB: dots, CRLFs and the end across their boundaries.

    A part sent on its own after a pause ends a read; one more than 4 bytes
    past the chunk size makes the daemon take all but its last 4 bytes, so
    the chunk boundary moves over the dot lines byte by byte.
    """
    chunk = DATA_CHUNK
    filler = b"> " + b"q" * 74 + b"\r\n"
    dots = b".\r\n..x\r\n\r\n.\r\n"
    head = filler * ((chunk - 8) // len(filler))
    head += b"h" * (chunk - 8 - len(head) - 2) + b"\r\n"
    body = head + dots * 3
    wire = body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    assert len(wire) - 3 - chunk in range(8, 80)
    cuts = [chunk + 4 + k for k in range(20)]                  # the chunk boundary on every byte of the dots
    cuts += [len(wire) - k for k in range(1, 6)]               # the message ending at a boundary, the end cut apart
    cuts += [len(wire)]                                        # all at once: the end found past a chunk
    client = RawSMTP(daemon.smtp_port)
    try:
        for cut in cuts:
            client.start_data()
            client.send(wire[:cut], wire[cut:])
            assert stored(client.reply()) == body, cut
        client.start_data()
        client.send(wire[:chunk + 4], wire[chunk + 4:-3], b".\r\nQUIT\r\n")
        assert stored(client.reply()) == body
        assert client.reply().startswith(b"221")
    finally:
        client.close()


def lmtp_session(port: int, recipients: list[str], raw: bytes) -> list[tuple[int, bytes]]:
    """smtplib.LMTP: each RCPT's reply, then one reply per accepted recipient
    after DATA (RFC 2033): data() reads the first, getreply() the others."""
    with smtplib.LMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")               # LMTP's greeting is LHLO
        client.mail("erika@example.org")
        rcpt_replies = [client.rcpt(r) for r in recipients]
        accepted = sum(code == 250 for code, _ in rcpt_replies)
        after_data = [client.data(raw)] + [client.getreply() for _ in range(accepted - 1)]
    return rcpt_replies + after_data


def test_lmtp_answers_once_per_accepted_recipient(daemon, reply_to):
    answers = lmtp_session(daemon.lmtp_port, [reply_to, "nobody@shop.example", "orders@shop.example"],
                           mail(to=reply_to, body="Per LMTP"))
    assert [code for code, _ in answers] == [250, 550, 250, 250, 250]
    assert answers[1][1].startswith(b"5.1.1") and [text[:5] for _, text in answers[3:]] == [b"2.0.0", b"2.0.0"]
    message = InboundMessage.get()
    assert message.channel == "lmtp" and message.recipients == [reply_to, "orders@shop.example"]
    wait_until(lambda: replies_on("1042"))


def test_swaks_as_an_independent_client(daemon, swaks, reply_to):
    result = swaks("--to", reply_to, "--from", "erika@example.org", "--header", "Subject: Re: 1042",
                   "--body", "Gesendet mit swaks", server=("127.0.0.1", daemon.smtp_port))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 OK queued as" in result.stdout
    [reply] = wait_until(lambda: replies_on("1042"))
    assert reply.body_text.strip() == "Gesendet mit swaks"


def _rename_inbound_table(settings, old: str, new: str) -> None:
    """Break the store for real from outside the daemon, and mend it again."""
    url = settings.database.url
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("sqlite:///", 1)[1], timeout=30)
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        conn.commit()
        conn.close()
        return
    schema = url.rsplit("search_path%3D", 1)[1]
    conn = psycopg2.connect(url.split("?")[0])
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {schema}.{old} RENAME TO {new}")
    conn.close()


def test_an_unusable_store_answers_try_again_later_and_loses_nothing(daemon, settings, reply_to):
    _rename_inbound_table(settings, "inbound_message", "inbound_message_away")
    try:
        with smtp(daemon) as client:
            client.mail("erika@example.org")
            client.rcpt(reply_to)
            code, answer = client.data(mail(to=reply_to, body="Erster Versuch"))
        assert (code, answer[:5]) == (451, b"4.3.0")
    finally:
        _rename_inbound_table(settings, "inbound_message_away", "inbound_message")
    with smtp(daemon) as client:
        client.mail("erika@example.org")
        client.rcpt(reply_to)
        assert client.data(mail(to=reply_to, body="Zweiter Versuch"))[0] == 250
    [reply] = wait_until(lambda: replies_on("1042"))
    assert reply.body_text == "Zweiter Versuch"


def test_every_acknowledged_message_survives_a_sigkill_exactly_once(store, settings, tmp_path, reply_to):
    """The promise: a 250 means stored. Eight clients each send a stream of
    replies over one connection; kill -9 once a few hundred are acknowledged,
    restart, count."""
    daemon = Daemon(tmp_path, settings.database.url).start()
    acknowledged, lock, per_client = [], threading.Lock(), 100

    def sender(client_number: int):
        try:
            with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
                for n in range(per_client):
                    message_id = f"<crash-{client_number}-{n}@example.org>"
                    client.sendmail("erika@example.org", [reply_to], mail(
                        to=reply_to, body=f"Nachricht {client_number}/{n}", message_id=message_id))
                    with lock:
                        acknowledged.append(message_id)
        except (smtplib.SMTPException, OSError):
            return       # the daemon is gone: stop sending

    threads = [threading.Thread(target=sender, args=(c,)) for c in range(8)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(acknowledged) >= 300, 60)
    daemon.kill()
    for thread in threads:
        thread.join(30)
    assert 300 <= len(acknowledged) < 8 * per_client             # killed in the middle of the stream
    daemon.start()
    try:
        wait_until(lambda: not InboundMessage.select().where(
            InboundMessage.state.in_(["new", "processing"])).exists(), 120)
    finally:
        assert daemon.stop() == 0
    logged = [e.message_id for e in replies_on("1042")]
    assert sorted(set(acknowledged) - set(logged)) == []          # nothing acknowledged was lost
    assert len(logged) == len(set(logged))                       # nothing applied twice


def corpus_files() -> list[Path]:
    folders = ["cpython_email", "mailparser", "django_helpdesk",
               "github_email_reply_parser/emails", "zapier_email_reply_parser/emails"]
    return sorted(p for f in folders for p in (CORPORA / f).glob("*") if p.is_file() and "LICENSE" not in p.name)


@pytest.mark.skipif(not corpus_files(), reason=f"mail corpora not found at {CORPORA} "
                    "(they come with the project's shared folder)")       # before a daemon is started for nothing
def test_every_corpus_message_gets_a_clean_outcome_over_smtp(daemon):
    files = corpus_files()
    answers = {}
    with smtp(daemon) as client:
        for path in files:
            client.rset()
            client.mail("")
            client.rcpt("orders@shop.example")
            wire = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            answers[str(path.relative_to(CORPORA))] = client.data(wire)[0]
    assert set(answers.values()) <= {250, 552}, answers
    taken = sum(code == 250 for code in answers.values())
    wait_until(lambda: not InboundMessage.select().where(InboundMessage.state.in_(["new", "processing"])).exists(), 120)
    states = {m.id: (m.state, m.reason) for m in InboundMessage.select()}
    assert len(states) == taken
    assert {state for state, _ in states.values()} <= {"done", "duplicate"}, states


from realservers import postfix_factory  # noqa: E402,F401  (fixture)


def test_postfix_hands_the_shops_mail_to_the_lmtp_door(daemon, postfix_factory, swaks, reply_to):
    """The deployment in the README: Postfix in front, lmtp: transport to ordermail."""
    relay = postfix_factory(daemon.lmtp_port)
    result = swaks("--to", reply_to, "--from", "erika@example.org", "--header", "Subject: Re: Bestellung",
                   "--body", "Kommt per Postfix.", server=relay)
    assert result.returncode == 0, result.stdout
    [reply] = wait_until(lambda: replies_on("1042"), 60)
    assert reply.body_text.strip() == "Kommt per Postfix."
    assert InboundMessage.get().channel == "lmtp"
    swaks("--to", "nobody@shop.example", "--from", "erika@example.org", server=relay)
    relay.wait_for_log(r"nobody@shop\.example.*(550 5\.1\.1|bounced|rejected)", timeout=30)


def test_hard_mail_is_taken_whole(store, settings, tmp_path, reply_to):
    """A 25 MB attachment, a 100 KB header line, 8-bit headers, no From, an empty body."""
    daemon = Daemon(tmp_path, settings.database.url, max_message_bytes=40_000_000).start()
    try:
        big = mail(to=reply_to, body="Foto anbei", attachments=(("foto.jpg", "image/jpeg", b"\xff" * 25_000_000),))
        long_header = mail(to="orders@shop.example", headers={"X-Long": "a" * 100_000}, body="long header")
        eight_bit = (b"From: J\xfcrgen <juergen@example.org>\r\nTo: orders@shop.example\r\n"
                     b"Subject: Gr\xfc\xdfe\r\n\r\nHallo\r\n")
        no_from = b"To: orders@shop.example\r\nSubject: (none)\r\n\r\n"
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=120) as client:
            for raw, to in ((big, reply_to), (long_header, "orders@shop.example"),
                            (eight_bit, "orders@shop.example"), (no_from, "orders@shop.example")):
                assert client.sendmail("erika@example.org", [to], raw) == {}
        wait_until(lambda: InboundMessage.select().where(InboundMessage.state == "done").count() == 4, 120)
        [reply] = replies_on("1042")
        assert reply.body_text == "Foto anbei" and reply.data["files_left_out"] == 1
        assert InboundMessage.select().where(InboundMessage.size > 25_000_000).count() == 1
    finally:
        assert daemon.stop() == 0


def test_shutting_down_answers_421_to_a_session_still_open(store, settings):
    """SIGTERM stops new mail at once; a client mid-session hears 421, not silence."""
    from daemon.intake.smtp import Listeners
    from daemon.intake.spool import Spool
    import asyncio
    import dataclasses

    port = free_port()
    listening = dataclasses.replace(settings, inbound=dataclasses.replace(
        settings.inbound, smtp_listen=f"127.0.0.1:{port}", lmtp_listen=""))
    spool = Spool(store)
    loop = asyncio.new_event_loop()
    listeners = Listeners(listening, spool)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(listeners.start(), loop).result(10)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            client.mail("erika@example.org")
            assert client.rcpt("orders@shop.example")[0] == 250
            asyncio.run_coroutine_threadsafe(listeners.stop(), loop).result(10)
            assert client.rcpt("orders@shop.example")[:1] == (421,)
            code, answer = client.data(b"Subject: late\r\n\r\nzu spaet\r\n")
            assert code == 421 and answer.startswith(b"4.3.2")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        spool.close()
    assert InboundMessage.select().count() == 0


# ---- connection limits -----------------------------------------------------------------

def _connect(port: int) -> tuple[socket.socket, bytes]:
    """A new connection and the first line it hears."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock, sock.makefile("rb").readline()


def _limited(settings, tmp_path, options: str) -> Daemon:
    return Daemon(tmp_path, settings.database.url, inbound_extra=options + "\n").start()


def test_a_listener_beyond_its_connections_answers_421_and_takes_the_next_after_one_ends(
        store, settings, tmp_path, reply_to):
    daemon = _limited(settings, tmp_path, "max_connections = 3")
    try:
        held = [_connect(daemon.smtp_port) for _ in range(3)]
        assert all(greeting.startswith(b"220 ") for _sock, greeting in held)   # loopback: total only
        extra, answer = _connect(daemon.smtp_port)
        assert answer.startswith(b"421 4.7.0 shop.example Too many connections")
        assert extra.recv(100) == b""                                          # and closed
        held[0][0].close()
        assert wait_until(lambda: _connect(daemon.smtp_port)[1].startswith(b"220 "))
        with smtp(daemon) as client:                                            # a session as ever
            client.sendmail("erika@example.org", [reply_to], mail(to=reply_to, body="Passt, danke."))
        [reply] = wait_until(lambda: replies_on("1042"))
        assert reply.body_text == "Passt, danke."
        for sock, _greeting in held[1:]:
            sock.close()
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()
    assert "connection from 127.0.0.1 refused: too many connections" in daemon.log_text()


def test_one_client_gets_its_share_of_connections_unless_its_network_is_exempt(store, settings, tmp_path):
    daemon = _limited(settings, tmp_path, "max_connections_per_client = 2\nconnection_limit_exempt = []")
    try:
        held = [_connect(daemon.smtp_port) for _ in range(2)]
        assert all(greeting.startswith(b"220 ") for _sock, greeting in held)
        extra, answer = _connect(daemon.smtp_port)
        assert answer.startswith(b"421 4.7.0 shop.example Too many connections from 127.0.0.1")
        for sock, _greeting in held:
            sock.close()
        assert wait_until(lambda: _connect(daemon.smtp_port)[1].startswith(b"220 "))
    finally:
        assert daemon.stop() == 0
    (tmp_path / "exempt").mkdir()
    exempt = _limited(settings, tmp_path / "exempt", "max_connections_per_client = 2")
    try:
        held = [_connect(exempt.smtp_port) for _ in range(4)]                  # Postfix in front: loopback
        assert all(greeting.startswith(b"220 ") for _sock, greeting in held)
    finally:
        assert exempt.stop() == 0


def test_connection_limits_count_each_address_and_free_places_as_sessions_end():
    limits = ConnectionLimits(total=4, per_client=2, exempt=("127.0.0.0/8", "::1"))
    assert limits.admit("192.0.2.7") is None and limits.admit("192.0.2.7") is None
    assert limits.admit("192.0.2.7") == "Too many connections from 192.0.2.7"
    assert limits.admit("2001:db8::5") is None                 # another client has its own share
    assert limits.admit("::1") is None                         # exempt: the total only
    assert limits.admit("127.0.0.2") == "Too many connections"  # the total is reached
    limits.release("192.0.2.7")
    assert limits.admit("fe80::1%eth0") is None                 # a zone is not part of the address
    assert limits.admit("192.0.2.7") == "Too many connections"
    for client in ("192.0.2.7", "2001:db8::5", "::1", "fe80::1%eth0"):
        limits.release(client)
    assert limits.open == 0 and not limits.by_client


# ---- MAIL FROM / RCPT TO paths ---------------------------------------------------------

PATHS = [
    "<erika@example.org>", "<Erika.Mustermann+shop@Example.ORG>", " <a@b.example>  SIZE=2048 BODY=8BITMIME",
    "<a@b.example>SIZE=1", "<a@b.example>\tSIZE=1", "<>", "< a@b.example>", "<a @b.example>", "<a@b.example >",
    "<\"quoted local\"@b.example>", "<a@[192.0.2.1]>", "<@relay.example:a@b.example>", "a@b.example",
    "<a@b.example> (comment) SIZE=1", "<a@b.example>(comment)", " \x0b<a@b.example>", "<a@b.example> \x0bSIZE=1",
    "<a..b@c.example>", "<.a@b.example>", "<a@b.example.>", "<a@-b.example>", "<jürgen@b.example>",
    "<a@b.example", "<a@b.example>>", "<<a@b.example>>", "<a!#$%&'*+/=?^_`{|}~-@b.example>", "",
    "<" + "l" * 70 + "@b.example>",
]


def _door(local_part_limit: int = 0):
    door = SMTPDoor.__new__(SMTPDoor)        # only the address parsing is used: no server needed
    door.local_part_limit = local_part_limit
    return door


@pytest.mark.parametrize("limit", [0, 64])
def test_mail_and_rcpt_paths_are_read_as_aiosmtpd_reads_them(limit):
    """The pattern for plain paths gives what aiosmtpd's header parser gives,
    for plain paths and for every form it leaves to that parser."""
    door = _door(limit)
    rng = random.Random(7)
    pieces = ["<", ">", "@", ".", " ", "\t", "(", ")", '"', "a", "B", "1", "-", "+", "ü", "x.example", "\x0b", ":"]
    generated = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 14))) for _ in range(3000)]
    mutated = [p[:i] + rng.choice(pieces) + p[i:] for p in PATHS for i in range(len(p) + 1)]
    for arg in PATHS + generated + mutated:
        assert door._getaddr(arg) == _aiosmtpd_or_malformed(lambda: SMTP._getaddr(door, arg)), arg


def _aiosmtpd_or_malformed(parse):
    try:
        return parse()
    except Exception:    # aiosmtpd's parser breaks on some paths ("<"): for us they are malformed
        return None, None


def test_a_path_that_breaks_aiosmtpds_parser_is_a_syntax_error_not_a_crash(daemon):
    client = smtp(daemon)
    assert client.docmd("MAIL", "FROM:<") == (553, b"5.1.3 Error: malformed address")   # not 500 (IndexError)
    assert client.docmd("MAIL", "FROM:<erika@example.org>")[0] == 250
    assert client.docmd("RCPT", "TO:<") == (553, b"5.1.3 Error: malformed address")
    client.quit()


def test_a_plain_path_gives_the_address_and_the_parameters():
    assert _door()._getaddr(" <Erika.M+shop@Example.ORG>  SIZE=2048") == ("Erika.M+shop@Example.ORG", "SIZE=2048")
    assert _door(64)._getaddr("<" + "l" * 65 + "@b.example>") == (None, None)   # over the local-part limit
