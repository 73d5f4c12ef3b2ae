"""The IMAP door against a real, private Dovecot, on both databases.

Each test gets an empty mailbox (`dovecot_account`), runs `ImapDoor` with
asyncio.run beside a scenario, and looks at the result in the store and in
the mailbox: taken means stored once, then marked once — never the reverse.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import smtplib
import sqlite3
import subprocess
import time
from urllib.parse import urlsplit

import aioimaplib
import psycopg2
import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.config import ImapSettings
from daemon.intake.imap import TAKEN, ImapDoor
from daemon.intake.spool import Spool
from daemon.store.models import Event, InboundMessage, Order, OutboxMessage, utcnow
from daemonproc import Daemon, wait_until
from mailbuilder import mail
from realservers import dovecot, dovecot_account  # noqa: F401  (fixtures)

WAIT = 20.0   # seconds any expected outcome may take


# ---- helpers ---------------------------------------------------------------------

def door_settings(settings, account, *, max_message_bytes=None, tls=False, **imap):
    """The test settings pointed at `account` on the private Dovecot: plain IMAP, or with
    `tls` its implicit-TLS port."""
    imap = ImapSettings(host=account.host, port=account.tls_port if tls else account.port, tls=tls,
                        user=account.user, password=account.password, **imap)
    inbound = dataclasses.replace(settings.inbound, imap=imap)
    if max_message_bytes is not None:
        inbound = dataclasses.replace(inbound, max_message_bytes=max_message_bytes)
    return dataclasses.replace(settings, inbound=inbound)


def run_door(settings, store, scenario=None):
    """Run one ImapDoor until `scenario(door)` returns (or until it idles); then stop it."""
    spool = Spool(store)

    async def main():
        stop = asyncio.Event()
        door = ImapDoor(settings, spool, timeout=10)
        task = asyncio.create_task(door.run(stop))
        try:
            await asyncio.wait_for((scenario or settled)(door), 60)
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        assert door.state == "stopped"

    try:
        asyncio.run(main())
    finally:
        spool.close()


async def until(check, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(0.05)


async def settled(door):
    await until(lambda: door.state in ("idle", "polling"), "the door waits for news")


def stored():
    return list(InboundMessage.select().order_by(InboundMessage.id))


def customer_mail(subject: str, to: str = "Teeladen <orders@shop.example>", **headers) -> bytes:
    return mail(to=to, subject=subject, body=f"{subject}\n\nViele Grüße, Erika",
                headers={name.replace("_", "-"): value for name, value in headers.items()})


def taken_flags(account, folder="INBOX"):
    return {m.uid: TAKEN in m.flags for m in account.list_messages(folder)}


# ---- taking ----------------------------------------------------------------------

def test_messages_waiting_before_start_are_stored_then_flagged_once(store, settings, dovecot_account):
    first = customer_mail("Wo bleibt meine Bestellung?")
    second = customer_mail("Lieferadresse", to="someone@elsewhere.example")
    uids = [dovecot_account.append(first), dovecot_account.append(second)]

    run_door(door_settings(settings, dovecot_account), store)

    rows = stored()
    assert [row.raw for row in rows] == [first, second]
    assert {row.channel for row in rows} == {"imap"}
    assert rows[0].recipients == ["orders@shop.example"]
    assert rows[1].recipients == ["orders@shop.example"]   # none of ours named: the shop address
    assert rows[0].envelope_from == "erika@example.org"   # not "": that would be a bounce
    assert taken_flags(dovecot_account) == {uid: True for uid in uids}
    assert all("\\Seen" not in m.flags for m in dovecot_account.list_messages())


def test_message_appended_during_idle_is_taken_by_idle_not_polling(store, settings, dovecot_account):
    raw = customer_mail("Noch eine Frage")

    async def scenario(door):
        await settled(door)
        assert door.state == "idle"
        started = time.monotonic()
        uid = await asyncio.to_thread(dovecot_account.append, raw)
        await until(lambda: stored(), "the pushed message is stored", timeout=10)
        assert time.monotonic() - started < 10     # poll_seconds is an hour
        await until(lambda: taken_flags(dovecot_account) == {uid: True}, "it is flagged")
        await settled(door)

    run_door(door_settings(settings, dovecot_account, poll_seconds=3600), store, scenario)
    [row] = stored()
    assert row.raw == raw and row.channel == "imap"


def test_done_folder_receives_each_taken_message_once(store, settings, dovecot_account):
    waiting = [customer_mail(f"Frage {n}") for n in (1, 2)]
    for raw in waiting:
        dovecot_account.append(raw)
    later = customer_mail("Frage 3")

    async def scenario(door):
        await settled(door)
        await asyncio.to_thread(dovecot_account.append, later)
        await until(lambda: len(stored()) == 3, "the third message is stored")
        await until(lambda: not dovecot_account.list_messages("INBOX"), "INBOX is empty")

    run_door(door_settings(settings, dovecot_account, done_folder="Erledigt"), store, scenario)
    assert [row.raw for row in stored()] == [*waiting, later]
    assert sorted(m.raw for m in dovecot_account.list_messages("Erledigt")) == sorted([*waiting, later])


def test_without_idle_and_move_it_polls_and_copies(store, settings, dovecot_account, monkeypatch):
    real = aioimaplib.IMAP4.has_capability
    monkeypatch.setattr(aioimaplib.IMAP4, "has_capability",
                        lambda client, name: name not in ("IDLE", "MOVE") and real(client, name))
    dovecot_account.append(customer_mail("Vorher"))

    async def scenario(door):
        await settled(door)
        assert door.state == "polling"
        await asyncio.to_thread(dovecot_account.append, customer_mail("Nachher"))
        await until(lambda: len(stored()) == 2, "the polled message is stored", timeout=10)
        await until(lambda: not dovecot_account.list_messages("INBOX"), "INBOX is expunged")

    run_door(door_settings(settings, dovecot_account, done_folder="Done", poll_seconds=1), store, scenario)
    done = dovecot_account.list_messages("Done")
    assert sorted(m.raw for m in done) == sorted(row.raw for row in stored())
    assert all("\\Deleted" not in m.flags for m in done)


# ---- never marked before it is stored; never taken twice -----------------------------

def rename_inbound_table(settings, old: str, new: str) -> None:
    """Rename the table behind the store's back, with a connection of our own."""
    url = settings.database.url
    if url.startswith("sqlite"):
        conn = sqlite3.connect(urlsplit(url).path[1:], timeout=10)
        conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        conn.commit()
    else:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        conn.cursor().execute(f"ALTER TABLE {old} RENAME TO {new}")
    conn.close()


def test_message_is_not_flagged_while_the_store_refuses_it(store, settings, dovecot_account):
    raw = customer_mail("Bitte nicht verlieren")
    uid = dovecot_account.append(raw)
    rename_inbound_table(settings, "inbound_message", "inbound_message_away")

    async def scenario(door):
        try:
            await until(lambda: door.state == "backoff", "the door backs off")
            await asyncio.sleep(1.5)          # a retry or two against the missing table
            assert taken_flags(dovecot_account) == {uid: False}
        finally:
            rename_inbound_table(settings, "inbound_message_away", "inbound_message")
        await until(lambda: taken_flags(dovecot_account) == {uid: True}, "taken on a later round")
        await settled(door)

    run_door(door_settings(settings, dovecot_account), store, scenario)
    [row] = stored()
    assert row.raw == raw


def test_restart_takes_nothing_twice(store, settings, dovecot_account):
    door = door_settings(settings, dovecot_account)
    first = [customer_mail(f"Erste {n}") for n in (1, 2)]
    for raw in first:
        dovecot_account.append(raw)
    run_door(door, store)
    assert len(stored()) == 2

    third = customer_mail("Nach dem Neustart")
    dovecot_account.append(third)
    run_door(door, store)
    run_door(door, store)

    assert [row.raw for row in stored()] == [*first, third]
    assert set(taken_flags(dovecot_account).values()) == {True}


def test_dropped_connection_reconnects_and_takes_what_came_meanwhile(store, settings, dovecot_account, dovecot):
    raw = customer_mail("Nach der Unterbrechung")

    async def scenario(door):
        await settled(door)
        kicked = await asyncio.to_thread(
            subprocess.run, ["doveadm", "-c", str(dovecot.config_path), "kick", dovecot_account.user],
            capture_output=True, text=True, timeout=15)
        assert kicked.returncode == 0, kicked.stderr
        await until(lambda: door.state != "idle", "the door notices")
        await asyncio.to_thread(dovecot_account.append, raw)
        await until(lambda: stored(), "taken after reconnecting")
        await settled(door)

    run_door(door_settings(settings, dovecot_account, poll_seconds=3600), store, scenario)
    [row] = stored()
    assert row.raw == raw


# ---- addresses and size ----------------------------------------------------------------

def test_plus_address_token_is_found_via_delivered_to_and_x_original_to(store, settings, dovecot_account):
    order = orders.create_order(store, settings, sample_order())
    token = token_address(settings, order, tokens.CUSTOMER_REPLY, utcnow().date())
    assert "+" in token
    by_delivered_to = customer_mail("Re: Ihre Bestellung 1042", Delivered_To=token)
    by_original_to = customer_mail("Re: Ihre Bestellung 1042 (2)", to="erika@example.org",
                                   X_Original_To=token, Delivered_To="shop@mailhost.example")
    forged = customer_mail("Re: gefälscht", Delivered_To="orders+AAAAAAAAAAAA@shop.example")
    for raw in (by_delivered_to, by_original_to, forged):
        dovecot_account.append(raw)

    run_door(door_settings(settings, dovecot_account), store)

    assert [row.recipients for row in stored()] == [
        [token, "orders@shop.example"],
        [token],
        ["orders@shop.example"],        # a token that does not verify is not ours
    ]


def test_oversize_message_is_stored_as_a_stand_in_and_not_fetched_again(store, settings, dovecot_account):
    big = mail(to="orders@shop.example", subject="Fotos vom Paket", body=("A" * 70 + "\n") * 100,
               headers={"Delivered-To": "orders@shop.example"})
    uid = dovecot_account.append(big)
    limited = door_settings(settings, dovecot_account, max_message_bytes=4096)

    run_door(limited, store)
    run_door(limited, store)

    [row] = stored()
    assert row.size < 4096 and row.raw != big
    assert b"X-Ordermail-Too-Large: " in row.raw
    assert b"Subject: Fotos vom Paket" in row.raw and b"AAAA" not in row.raw
    assert b"max_message_bytes (4096)" in row.raw
    assert row.recipients == ["orders@shop.example"]
    assert row.message_id and row.message_id in big.decode()
    [kept] = dovecot_account.list_messages()
    assert kept.uid == uid and kept.raw == big and TAKEN in kept.flags


# ---- TLS with the shop's own certificate ------------------------------------------------

def test_over_tls_with_ca_file_a_message_is_flagged_only_after_it_is_stored(
        store, settings, dovecot, dovecot_account):
    account = dovecot_account
    waiting = customer_mail("Über TLS")
    uid = account.append(waiting)
    later = customer_mail("Über TLS, während IDLE")
    rename_inbound_table(settings, "inbound_message", "inbound_message_away")

    async def scenario(door):
        try:
            await until(lambda: door.state == "backoff", "the door backs off")
            await asyncio.sleep(1.5)          # a TLS session or two against the missing table
            assert taken_flags(account) == {uid: False}
        finally:
            rename_inbound_table(settings, "inbound_message_away", "inbound_message")
        await until(lambda: taken_flags(account) == {uid: True}, "taken on a later round")
        await settled(door)
        assert door.state == "idle"
        later_uid = await asyncio.to_thread(account.append, later)
        await until(lambda: taken_flags(account) == {uid: True, later_uid: True}, "the pushed one is taken")

    run_door(door_settings(settings, account, tls=True, ca_file=account.ca_file, poll_seconds=3600),
             store, scenario)
    assert [row.raw for row in stored()] == [waiting, later]
    # the helpers log in on the plain port ("secured": loopback); the door's sessions were TLS
    tls_logins = [line for line in dovecot.log_path.read_text().splitlines()
                  if f"Login: user=<{account.user}>" in line and ", TLS," in line]
    assert len(tls_logins) >= 2          # refused by the store, then taken


def test_over_tls_without_ca_file_the_certificate_is_refused_and_nothing_taken(
        store, settings, dovecot_account, caplog):
    account = dovecot_account
    uid = account.append(customer_mail("Nicht über eine unsichere Leitung"))
    caplog.set_level(logging.INFO, logger="ordermail.imap")

    def refusals():
        return [r for r in caplog.records if r.name == "ordermail.imap" and r.levelno == logging.WARNING]

    async def scenario(door):
        await until(lambda: len(refusals()) >= 2, "a second session is refused too", timeout=10)
        assert door.state in ("backoff", "connecting")

    run_door(door_settings(settings, account, tls=True), store, scenario)   # the system's CA store
    first, second = (r.getMessage() for r in refusals()[:2])
    assert first.startswith(f"IMAP {account.user}@127.0.0.1:{account.tls_port}: TLS: the server's "
                            "certificate is not trusted (self")   # self-signed / self signed
    assert "set [inbound.imap] ca_file" in first and first.endswith("again in 1 s")
    assert second.endswith("again in 2 s")                        # backing off
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in refusals())
    assert not any("selected" in r.getMessage() for r in caplog.records)   # never logged in
    assert stored() == []
    assert taken_flags(account) == {uid: False}


# ---- inside `ordermail serve` ---------------------------------------------------------------

def serve_with_imap(settings, tmp_path, account) -> Daemon:
    imap = (f"[inbound.imap]\nhost = {json.dumps(account.host)}\nport = {account.port}\ntls = false\n"
            f"user = {json.dumps(account.user)}\npassword = {json.dumps(account.password)}\n"
            "poll_seconds = 3600\n")
    daemon = Daemon(tmp_path, settings.database.url, extra=imap).start()
    wait_until(lambda: "folder INBOX selected (IDLE)" in daemon.log_text(), 30)
    return daemon


def test_one_mail_taken_by_smtp_and_from_the_mailbox_is_handled_once(store, settings, tmp_path, dovecot_account):
    """The same message by two ways — SMTP, and a copy in the hosted mailbox
    with transport headers of its own: the owner hears of it once."""
    raw = mail(to="orders@shop.example", sender="neu@kunde.example", subject="Haben Sie Tassen?",
               message_id="<twice@kunde.example>")
    daemon = serve_with_imap(settings, tmp_path, dovecot_account)
    try:
        with smtplib.SMTP("127.0.0.1", daemon.smtp_port, timeout=10) as client:
            client.sendmail("neu@kunde.example", ["orders@shop.example"], raw)
        wait_until(lambda: [m.state for m in stored()] == ["done"], 30)
        copy = (b"Delivered-To: orders@shop.example\r\n"
                b"Received: from mx2.kunde.example by imap.shop.example; Fri, 27 Nov 2026 10:00:09 +0000\r\n" + raw)
        uid = dovecot_account.append(copy)
        wait_until(lambda: [m.state for m in stored()] == ["done", "duplicate"], 30)
        wait_until(lambda: TAKEN in dovecot_account.flags(uid), 15)
    finally:
        assert daemon.stop() == 0, daemon.log_text()
    assert [m.channel for m in stored()] == ["smtp", "imap"]
    assert OutboxMessage.select().where(OutboxMessage.kind == "unmatched_forward").count() == 1
    assert "Traceback" not in daemon.log_text()


def test_ordermail_serve_takes_a_customer_reply_from_the_mailbox_onto_its_order(
        store, settings, tmp_path, dovecot_account):
    account = dovecot_account
    order = orders.create_order(store, settings, sample_order())
    reply_to = token_address(settings, order, tokens.CUSTOMER_REPLY, utcnow().date())
    daemon = serve_with_imap(settings, tmp_path, account)
    try:
        uid = account.append(mail(to=reply_to, body="Bitte an die Packstation liefern.",
                                  headers={"Delivered-To": reply_to}))
        [reply] = wait_until(lambda: list(Event.select().where(
            (Event.order == Order.get(Order.number == "1042")) & (Event.kind == "customer_reply"))), 30)
        assert reply.body_text == "Bitte an die Packstation liefern."
        wait_until(lambda: TAKEN in account.flags(uid), 15)
    finally:
        assert daemon.stop() == 0, daemon.log_text()
    [row] = stored()
    assert row.channel == "imap" and row.recipients == [reply_to]
    assert [m.uid for m in account.list_messages()] == [uid]    # left in INBOX, marked taken
    log = daemon.log_text()
    assert f"IMAP UID {uid} taken as message {row.id}" in log
    assert "Traceback" not in log
