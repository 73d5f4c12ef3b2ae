"""What an attacker or a slow sender meets at the SMTP and LMTP doors: the banner,
timeouts on idleness (not on the total), refusals counted in full in the log.

Every test starts `ordermail serve` as a real process and talks to it over
loopback sockets, as a sending server would.
"""
from __future__ import annotations

import re
import smtplib
import socket
import time

import pytest

from daemon.store.models import InboundMessage
from daemonproc import Daemon, wait_until
from mailbuilder import mail


def _daemon(settings, tmp_path, inbound: str = "", **kwargs) -> Daemon:
    return Daemon(tmp_path, settings.database.url, inbound_extra=inbound + "\n", **kwargs).start()


@pytest.fixture
def daemon(store, settings, tmp_path):
    running = _daemon(settings, tmp_path)
    yield running
    assert running.stop() == 0, running.log_text()
    assert "Traceback" not in running.log_text()


class Wire:
    """A client that sends exactly the bytes it is given and reads whole replies."""

    def __init__(self, port: int, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.lines = self.sock.makefile("rb")
        self.banner = self.lines.readline()

    def command(self, line: bytes) -> list[bytes]:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def reply(self) -> list[bytes]:
        lines = [self.lines.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(self.lines.readline())
        return [line.rstrip(b"\r\n") for line in lines]

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


# ---- what the server tells about itself ------------------------------------------------------

LIBRARY_WORDS = re.compile(rb"python|aiosmtpd|\d+\.\d+\.\d+", re.IGNORECASE)


def test_the_banner_ehlo_and_help_name_the_host_and_ordermail_not_the_library(daemon):
    smtp = Wire(daemon.smtp_port)
    lmtp = Wire(daemon.lmtp_port)
    try:
        assert smtp.banner == b"220 shop.example ESMTP ordermail\r\n"
        assert lmtp.banner == b"220 shop.example LMTP ordermail\r\n"
        said = [*smtp.command(b"EHLO client.example.org"), *smtp.command(b"HELP"), *smtp.command(b"HELP DATA"),
                *lmtp.command(b"LHLO client.example.org"), *lmtp.command(b"HELP")]
        assert said[0] == b"250-shop.example"
        assert not [line for line in said if LIBRARY_WORDS.search(line)], said
    finally:
        smtp.close()
        lmtp.close()


# ---- timeouts ----------------------------------------------------------------------------------

def _start_data(wire: Wire) -> None:
    assert wire.command(b"EHLO client.example.org")[-1].startswith(b"250 ")
    assert wire.command(b"MAIL FROM:<erika@example.org>")[0].startswith(b"250")
    assert wire.command(b"RCPT TO:<orders@shop.example>")[0].startswith(b"250")
    assert wire.command(b"DATA")[0].startswith(b"354")


def test_a_slow_sender_that_keeps_sending_is_not_cut_off(store, settings, tmp_path):
    """Five seconds for a message, two seconds allowed without data: taken whole."""
    daemon = _daemon(settings, tmp_path, "data_timeout_seconds = 2\ncommand_timeout_seconds = 2")
    try:
        wire = Wire(daemon.smtp_port)
        _start_data(wire)
        raw = mail(to="orders@shop.example", body="langsam, aber sicher\n" * 40)
        pieces = [raw[i:i + 60] for i in range(0, len(raw), 60)]
        started = time.monotonic()
        while time.monotonic() - started < 5.0:          # a trickle: a piece every 0.4 s
            wire.sock.sendall(pieces.pop(0) if len(pieces) > 1 else b"")
            time.sleep(0.4)
        wire.sock.sendall(b"".join(pieces) + b".\r\n")
        [answer] = wire.reply()
        assert answer.startswith(b"250 2.0.0 OK queued as "), answer
        assert InboundMessage.get_by_id(int(answer.split()[-1])).raw == raw
        assert wire.command(b"QUIT")[0].startswith(b"221")
        wire.close()
    finally:
        assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()


def test_a_sender_that_stops_in_the_middle_of_a_message_hears_421_and_it_is_logged(store, settings, tmp_path):
    daemon = _daemon(settings, tmp_path, "data_timeout_seconds = 2\ncommand_timeout_seconds = 60")
    try:
        wire = Wire(daemon.smtp_port)
        _start_data(wire)
        wire.sock.sendall(b"Subject: halb\r\n\r\nDer Rest kommt ni")
        started = time.monotonic()
        assert wire.reply() == [b"421 4.4.2 shop.example Error: timeout exceeded"]
        assert 1.5 < time.monotonic() - started < 10
        assert wire.sock.recv(100) == b""                                      # and closed
        wire.close()
        wait_until(lambda: "no data for 2 s in the middle of a message" in daemon.log_text())
    finally:
        assert daemon.stop() == 0
    assert InboundMessage.select().count() == 0


def test_an_idle_session_hears_421_before_it_is_closed(store, settings, tmp_path):
    daemon = _daemon(settings, tmp_path, "command_timeout_seconds = 1")
    try:
        wire = Wire(daemon.smtp_port)
        assert wire.command(b"EHLO client.example.org")[-1].startswith(b"250 ")
        assert wire.reply() == [b"421 4.4.2 shop.example Error: timeout exceeded"]
        wire.close()
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:   # others go on
            assert client.sendmail("erika@example.org", ["orders@shop.example"],
                                   mail(to="orders@shop.example")) == {}
    finally:
        assert daemon.stop() == 0
    assert "no command for 1 s (421 sent)" in daemon.log_text()


# ---- refusals in the log -------------------------------------------------------------------------

def _refused_in_log(text: str) -> int:
    first = len(re.findall(r"connection from \S+ refused: too many connections", text))
    more = sum(int(n) for n in re.findall(r"(\d+) more connection\(s\) refused within", text))
    return first + more


def test_a_burst_of_refused_connections_is_counted_in_full_in_the_log(store, settings, tmp_path):
    daemon = _daemon(settings, tmp_path, "max_connections = 2")
    try:
        held = [Wire(daemon.smtp_port) for _ in range(2)]
        assert all(wire.banner.startswith(b"220 ") for wire in held)
        for _ in range(103):
            refused = Wire(daemon.smtp_port)
            assert refused.banner.startswith(b"421 4.7.0 shop.example Too many connections")
            refused.close()
        for wire in held:
            wire.close()
    finally:
        assert daemon.stop() == 0
    log = daemon.log_text()
    assert _refused_in_log(log) == 103, log
    assert "102 more connection(s) refused within 60 s (too many connections: 102)" in log
