"""Self-test of tests/realservers.py: the real servers start and behave.

Dovecot must speak IMAP with IDLE/MOVE/UIDPLUS, store and flag mail; Postfix
must relay shop.example to an LMTP listener and refuse everything else.
"""
from __future__ import annotations

import asyncio
import re
import secrets

import pytest

from realservers import (  # noqa: F401  (fixtures are used by name)
    LMTPSink,
    dovecot,
    dovecot_account,
    free_port,
    lmtp_sink,
    postfix_factory,
    require_binary,
    start_dovecot,
    start_postfix,
    swaks,
)


def _message(subject: str, to: str = "shop@shop.example") -> bytes:
    return (f"From: Customer <customer@buyer.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{secrets.token_hex(8)}@buyer.test>\r\n\r\nOrder question.\r\n").encode()


# --------------------------------------------------------------------------- #
# skip / fail when a server is missing
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("env", [{}, {"CI": "false"}])
def test_missing_binary_skips_with_install_hint(monkeypatch, env):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ORDERMAIL_REQUIRE_SERVERS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pytest.skip.Exception, match=r"not installed.*run \.ci/install-mail-servers"):
        require_binary("dovecot", "Dovecot")


@pytest.mark.parametrize("env", [{"CI": "true"}, {"ORDERMAIL_REQUIRE_SERVERS": "1"}])
def test_missing_binary_fails_where_servers_are_required(monkeypatch, env):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ORDERMAIL_REQUIRE_SERVERS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pytest.fail.Exception, match=r"not installed.*run \.ci/install-mail-servers"):
        require_binary("postfix", "Postfix")


def test_server_starters_skip_without_binaries(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("ORDERMAIL_REQUIRE_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Dovecot"):
        start_dovecot(tmp_path_factory)
    with pytest.raises(pytest.skip.Exception, match="Postfix"):
        start_postfix(tmp_path_factory, lmtp_port=free_port())


# --------------------------------------------------------------------------- #
# Dovecot IMAP
# --------------------------------------------------------------------------- #

def test_dovecot_append_fetch_and_flag_with_aioimaplib(dovecot_account):
    import aioimaplib

    account = dovecot_account
    uid = account.append(_message("Order 1042: where is it?"))
    assert [m.uid for m in account.list_messages("INBOX")] == [uid]
    assert "\\Seen" not in account.flags(uid)

    async def session():
        client = aioimaplib.IMAP4(host=account.host, port=account.port, timeout=10)
        await client.wait_hello_from_server()
        login = await client.login(account.user, account.password)
        assert login.result == "OK", login
        await client.protocol.capability()  # refresh: the post-login list has MOVE, UIDPLUS
        capabilities = {c for c in ("IDLE", "MOVE", "UIDPLUS") if client.has_capability(c)}
        selected = await client.select("INBOX")
        assert selected.result == "OK", selected
        fetched = await client.uid("fetch", str(uid), "(BODY.PEEK[])")
        assert fetched.result == "OK", fetched
        stored = await client.uid("store", str(uid), "+FLAGS", "(\\Seen)")
        assert stored.result == "OK", stored
        await client.logout()
        return capabilities, b"".join(line for line in fetched.lines if isinstance(line, (bytes, bytearray)))

    capabilities, body = asyncio.run(asyncio.wait_for(session(), 30))
    assert {"IDLE", "MOVE", "UIDPLUS"} <= capabilities, capabilities
    assert b"Subject: Order 1042: where is it?" in body
    assert "\\Seen" in account.flags(uid)
    [message] = account.list_messages()
    assert message.uid == uid and "\\Seen" in message.flags
    assert b"Order question." in message.raw


def test_dovecot_idle_reports_new_mail(dovecot_account):
    import aioimaplib

    account = dovecot_account

    async def session():
        client = aioimaplib.IMAP4(host=account.host, port=account.port, timeout=10)
        await client.wait_hello_from_server()
        await client.login(account.user, account.password)
        await client.select("INBOX")
        idle = await client.idle_start(timeout=20)
        await asyncio.to_thread(account.append, _message("Pushed while idling"))
        pushed: list[bytes] = []
        while not any(re.match(rb"\d+ EXISTS", line) for line in pushed):
            pushed += [bytes(line) for line in await client.wait_server_push(timeout=15)
                       if isinstance(line, (bytes, bytearray))]
        client.idle_done()
        await asyncio.wait_for(idle, 10)
        await client.logout()
        return pushed

    pushed = asyncio.run(asyncio.wait_for(session(), 40))
    assert b"1 EXISTS" in pushed


def test_dovecot_folders_and_move(dovecot_account):
    account = dovecot_account
    uid = account.append(_message("File me"), flags=["\\Flagged"])
    with account.imap("INBOX") as conn:
        typ, data = conn.uid("MOVE", str(uid), "Archive.2024")
        assert typ == "NO"  # folder does not exist yet
        conn.create('"Archive.2024"')
        typ, data = conn.uid("MOVE", str(uid), '"Archive.2024"')
        assert typ == "OK", data
    assert account.list_messages("INBOX") == []
    [moved] = account.list_messages("Archive.2024")
    assert "\\Flagged" in moved.flags
    assert "Archive.2024" in account.folders()


def test_dovecot_accounts_are_separate(dovecot, dovecot_account):
    dovecot_account.append(_message("Only mine"))
    other = dovecot.add_user()
    assert other.list_messages() == []
    assert len(dovecot_account.list_messages()) == 1
    assert (dovecot.host, dovecot.user) == ("127.0.0.1", "shop")


# --------------------------------------------------------------------------- #
# Postfix relay -> LMTP, driven by swaks
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def shop_sink():
    pytest.importorskip("aiosmtpd")
    with LMTPSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def shop_relay(postfix_factory, shop_sink):
    return postfix_factory(shop_sink.port)


def test_postfix_relays_shop_mail_to_lmtp(shop_relay, shop_sink, swaks):
    subject = f"Order 1042 {secrets.token_hex(4)}"
    result = swaks("--from", "customer@buyer.test", "--to", "someone@shop.example",
                   "--header", f"Subject: {subject}", "--body", "Where is my parcel?",
                   server=shop_relay)
    assert result.returncode == 0, result.stdout
    assert re.search(r"<-\s+250 2\.0\.0 Ok: queued", result.stdout), result.stdout

    [envelope] = shop_sink.wait_for(1, timeout=30, match=lambda e: subject.encode() in e.data)
    assert envelope.rcpt_tos == ["someone@shop.example"]
    assert envelope.mail_from == "customer@buyer.test"
    assert b"Where is my parcel?" in envelope.data
    assert b"by relay.ordermail.test (Postfix)" in envelope.data  # Postfix's Received: line
    shop_relay.wait_for_log(rf"to=<someone@shop\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                            rf"{shop_sink.port}.*status=sent")


def test_postfix_hands_one_message_for_two_recipients_to_lmtp(shop_relay, shop_sink, swaks):
    subject = f"Two of us {secrets.token_hex(4)}"
    result = swaks("--from", "customer@buyer.test", "--to", "a@shop.example,b@shop.example",
                   "--header", f"Subject: {subject}", server=shop_relay)
    assert result.returncode == 0, result.stdout
    envelopes = shop_sink.wait_for(1, timeout=30, match=lambda e: subject.encode() in e.data)
    assert sorted(r for e in envelopes for r in e.rcpt_tos) == ["a@shop.example", "b@shop.example"]
    for rcpt in ("a", "b"):
        shop_relay.wait_for_log(rf"to=<{rcpt}@shop\.example>.*status=sent")


def test_postfix_refuses_relay_for_other_domains(shop_relay, shop_sink, swaks):
    before = len(shop_sink.envelopes)
    result = swaks("--from", "customer@buyer.test", "--to", "someone@elsewhere.example",
                   "--header", "Subject: not for us", server=shop_relay)
    assert result.returncode != 0, result.stdout
    assert re.search(r"<\*\* +5\d\d .*Relay access denied", result.stdout), result.stdout
    shop_relay.wait_for_log(r"NOQUEUE: reject: RCPT from .*Relay access denied.*"
                            r"to=<someone@elsewhere\.example>")
    assert len(shop_sink.envelopes) == before


def test_postfix_retries_until_lmtp_listener_is_up(postfix_factory, swaks):
    port = free_port()
    relay = postfix_factory(port)  # nothing listens there yet
    with relay:
        result = swaks("--from", "customer@buyer.test", "--to", "late@shop.example",
                       "--header", "Subject: early bird", server=relay)
        assert result.returncode == 0, result.stdout
        relay.wait_for_log(r"to=<late@shop\.example>.*status=deferred")
        with LMTPSink(port=port) as sink:
            [envelope] = sink.wait_for(1, timeout=30)
        assert envelope.rcpt_tos == ["late@shop.example"]
    assert relay.proc is None
    assert not relay.root.exists()  # queue and all removed ...
    assert "status=sent" in relay.log_path.read_text()  # ... the log kept
    assert (relay.log_path.parent / "main.cf").is_file()
