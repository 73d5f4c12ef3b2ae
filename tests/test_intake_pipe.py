"""`ordermail deliver` as an MTA's pipe runs it, and `ordermail inbound` to look after it."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conftest import sample_order
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from mailbuilder import mail

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"


@pytest.fixture
def reply_to(store, settings):
    order = orders.create_order(store, settings, sample_order())
    return token_address(settings, order, tokens.CUSTOMER_REPLY, dt.date.today())


def deliver(ordermail, raw: bytes, *args):
    return ordermail("deliver", *args, stdin=raw)


def test_a_piped_reply_exits_0_and_lands_on_its_order(ordermail, reply_to):
    result = deliver(ordermail, mail(to=reply_to, body="Per Pipe."), "--recipient", reply_to)
    assert result.returncode == 0, result.stderr
    shown = ordermail("order", "show", "1042", "--format", "json")
    assert json.loads(shown.stdout)["events"][-1]["body"] == "Per Pipe."


def test_recipients_come_from_delivered_to_without_arguments(ordermail, reply_to):
    raw = b"Delivered-To: " + reply_to.encode() + b"\r\n" + mail(to="orders@shop.example", body="Ohne Argumente")
    assert deliver(ordermail, raw).returncode == 0
    assert "Ohne Argumente" in ordermail("order", "show", "1042").stdout


@pytest.mark.parametrize("args, raw, code", [
    (("--recipient", "nobody@shop.example"), mail(to="nobody@shop.example"), 67),
    (("--recipient", "someone@other.example"), mail(to="someone@other.example"), 67),
    ((), mail(to="stranger@other.example"), 67),
])
def test_refusals_use_sysexits(ordermail, args, raw, code):
    result = deliver(ordermail, raw, *args)
    assert result.returncode == code and "Traceback" not in result.stderr
    assert json.loads(ordermail("inbound", "list", "--format", "json").stdout)["messages"] == []


def test_too_large_exits_65(ordermail, tmp_path, config_file):
    small = tmp_path / "small.toml"
    small.write_text(config_file.read_text() + "[inbound]\nmax_message_bytes = 2048\n", encoding="utf-8")
    result = ordermail("deliver", "--recipient", "orders@shop.example",
                       stdin=mail(to="orders@shop.example", body="x" * 5000), config=small)
    assert result.returncode == 65


def test_an_unreachable_database_exits_75(ordermail, tmp_path):
    config = tmp_path / "down.toml"
    config.write_text('[database]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n', encoding="utf-8")
    result = ordermail("deliver", "--recipient", "orders@shop.example",
                       stdin=mail(to="orders@shop.example"), config=config)
    assert result.returncode == 75 and "Traceback" not in result.stderr


@pytest.mark.parametrize("mistake", ["config", "option", "ca_file"])
def test_a_mistake_in_the_set_up_keeps_the_mail_queued_with_75(ordermail, tmp_path, config_file, mistake):
    """Not the mail's fault: the MTA must keep it and try again once mended,
    not bounce it (any code but 75 would)."""
    config, args = config_file, ["--recipient", "orders@shop.example"]
    if mistake == "config":
        config = tmp_path / "typo.toml"
        config.write_text(config_file.read_text() + "[inbound]\nmax_mesage_bytes = 2048\n", encoding="utf-8")
    elif mistake == "option":
        args.append("--recipeint")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        config = tmp_path / "ca.toml"
        config.write_text(config_file.read_text() + f'[inbound.imap]\nca_file = "{locked}/ca.pem"\n',
                          encoding="utf-8")
    result = deliver(ordermail, mail(to="orders@shop.example"), *args) if mistake == "option" else \
        ordermail("deliver", *args, stdin=mail(to="orders@shop.example"), config=config)
    assert result.returncode == 75, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.strip()


def test_a_store_failure_after_the_commit_still_takes_the_message(store, settings, reply_to, monkeypatch, capsys):
    """Committed is taken: exit 0 (a 75 would have the MTA deliver it again),
    and the message waits, unclaimed, for the daemon's worker."""
    import io
    import peewee as pw
    from daemon.handling import inbound
    from daemon.intake import pipe
    from daemon.store.models import InboundMessage

    def store_gone(*args, **kwargs):
        raise pw.OperationalError("server closed the connection unexpectedly")
    monkeypatch.setattr(inbound, "process_claimed", store_gone)
    raw = mail(to=reply_to, body="Trotzdem angekommen?")
    assert pipe.deliver(store, settings, io.BytesIO(raw), [reply_to], "erika@example.org") == 0
    assert "is taken; handling it failed (server closed the connection" in capsys.readouterr().err
    [message] = InboundMessage.select()
    assert (message.state, message.claimed_by) == ("new", "")
    monkeypatch.undo()
    assert inbound.process_pending(store, settings) == 1
    assert orders.order_events(orders.find_order("1042"))[-1].body_text.strip() == "Trotzdem angekommen?"


def test_inbound_list_show_and_retry(ordermail, reply_to):
    deliver(ordermail, mail(to="orders@shop.example", sender="new@customer.example", subject="Tassen?"),
            "--recipient", "orders@shop.example")
    [message] = json.loads(ordermail("inbound", "list", "--format", "json").stdout)["messages"]
    assert message["state"] == "done" and "forwarded to the owner" in message["reason"]
    shown = ordermail("inbound", "show", str(message["id"]))
    assert "Subject:  Tassen?" in shown.stdout and "new@customer.example" in shown.stdout
    retried = ordermail("inbound", "retry", str(message["id"]))
    assert retried.returncode == 0 and "duplicate" not in retried.stdout
    missing = ordermail("inbound", "show", "999")
    assert missing.returncode == 2 and missing.stderr.strip() == "ordermail: no received message 999"


def test_every_corpus_message_is_taken_cleanly_by_the_pipe(ordermail, database_url):
    if database_url.startswith("postgresql"):
        pytest.skip("one backend is enough for 124 processes; SMTP covers both")
    files = sorted(p for p in CORPORA.rglob("*") if p.is_file() and p.suffix != ".json" and "LICENSE" not in p.name)
    if not files:
        pytest.skip(f"mail corpora not found at {CORPORA} (they come with the project's shared folder)")
    codes = {str(p.relative_to(CORPORA)): ordermail("deliver", "--recipient", "orders@shop.example",
                                                    stdin=p.read_bytes())
             for p in files}
    assert {k: (r.returncode, r.stderr) for k, r in codes.items() if r.returncode != 0 or "Traceback" in r.stderr} == {}
    states = {m["state"] for m in json.loads(
        ordermail("inbound", "list", "--limit", "1000", "--format", "json").stdout)["messages"]}
    assert states <= {"done", "duplicate"}
