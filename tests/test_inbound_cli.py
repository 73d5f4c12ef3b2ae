"""`ordermail inbound list|show|retry` through the real command line (a subprocess).

A message is quarantined the way test_replies does it (the router broken
in-process while `pipe.deliver` handles it), or for real: a trigger refuses
the reply's event under `ordermail deliver`, so handling fails until it is
dropped.
"""
from __future__ import annotations

import json

import pytest

from daemon.handling import inbound, routing
from daemon.store.models import InboundMessage
from mailbuilder import mail
from test_replies import deliver, order, reply_to  # noqa: F401  (helper and fixtures)


def listed(ordermail, *args) -> list[dict]:
    result = ordermail("inbound", "list", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["messages"]


def one_line_error(result, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ordermail: "), result.stderr
    return lines[0]


@pytest.fixture
def quarantined(store, settings, reply_to, monkeypatch):  # noqa: F811
    """A customer reply quarantined because handling blew up (the router broken in-process)."""
    def broken(ctx):
        raise RuntimeError("handler exploded")
    with monkeypatch.context() as patch:
        patch.setattr(routing, "route", broken)
        patch.setattr(inbound, "route", broken)
        message = deliver(store, settings, mail(to=reply_to, body="Bitte in Blau."), [reply_to])
    assert message.state == "quarantined"
    return message


@pytest.fixture
def done(ordermail):
    result = ordermail("deliver", "--recipient", "orders@shop.example",
                       stdin=mail(to="orders@shop.example", sender="neu@kunde.example", subject="Tassen?"))
    assert result.returncode == 0, result.stderr
    [message] = [m for m in listed(ordermail) if m["envelope_from"] == "neu@kunde.example"]
    assert message["state"] == "done"
    return message


def test_list_by_state_shows_only_messages_in_that_state(ordermail, quarantined, done):
    duplicate = ordermail("deliver", "--recipient", "orders@shop.example",
                          stdin=InboundMessage.get_by_id(done["id"]).raw)    # the same bytes again
    assert duplicate.returncode == 0
    assert {m["state"] for m in listed(ordermail)} == {"quarantined", "done", "duplicate"}

    only_quarantined = listed(ordermail, "--state", "quarantined")
    assert [(m["id"], m["state"]) for m in only_quarantined] == [(quarantined.id, "quarantined")]
    assert only_quarantined[0]["reason"] == "RuntimeError: handler exploded"
    assert [(m["id"], m["state"]) for m in listed(ordermail, "--state", "done")] == [(done["id"], "done")]

    table = ordermail("inbound", "list", "--state", "quarantined")
    assert table.returncode == 0
    rows = table.stdout.strip().splitlines()[1:]                     # under the heading
    assert len(rows) == 1 and rows[0].split()[0] == str(quarantined.id) and "quarantined" in rows[0]
    assert "handler exploded" in rows[0]
    assert listed(ordermail, "--state", "new") == []


def test_an_unknown_state_is_a_one_line_error(ordermail, done):
    result = ordermail("inbound", "list", "--state", "stuck")
    line = one_line_error(result)
    assert "stuck" in line and "quarantined" in line                  # names the word and the choices
    assert result.stdout == ""


def test_show_gives_the_reason_and_the_raw_text(ordermail, quarantined):
    shown = ordermail("inbound", "show", str(quarantined.id))
    assert shown.returncode == 0, shown.stderr
    assert "quarantined" in shown.stdout.splitlines()[0]
    assert "Reason:   RuntimeError: handler exploded" in shown.stdout
    assert "Bitte in Blau." in shown.stdout
    document = json.loads(ordermail("inbound", "show", str(quarantined.id), "--format", "json").stdout)
    assert (document["state"], document["reason"], document["order"]) == (
        "quarantined", "RuntimeError: handler exploded", None)


def test_retry_of_a_quarantined_message_lands_it_once_the_cause_is_gone(ordermail, quarantined):
    retried = ordermail("inbound", "retry", str(quarantined.id))     # a fresh process: the router works
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip().startswith(f"message {quarantined.id}: done: customer reply")
    [message] = listed(ordermail, "--state", "done")
    assert message["id"] == quarantined.id and message["order"] == "1042"
    assert listed(ordermail, "--state", "quarantined") == []
    events = json.loads(ordermail("order", "show", "1042", "--format", "json").stdout)["events"]
    assert [(e["kind"], e["body"]) for e in events if e["kind"] == "customer_reply"] == [
        ("customer_reply", "Bitte in Blau.")]


REFUSE_EVENTS = {
    "sqlite": ["CREATE TRIGGER refuse_events BEFORE INSERT ON event "
               "BEGIN SELECT RAISE(ABORT, 'events refused for the test'); END"],
    "postgresql": ["CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql "
                   "AS $$ BEGIN RAISE EXCEPTION 'events refused for the test'; END $$",
                   "CREATE TRIGGER refuse_events BEFORE INSERT ON event FOR EACH ROW EXECUTE FUNCTION refuse_events()"],
}


def test_retry_keeps_a_message_quarantined_while_the_cause_lasts(ordermail, store, reply_to):  # noqa: F811
    """A cause in the data (a trigger refusing the reply's event), not the store being down."""
    for sql in REFUSE_EVENTS[store.backend]:
        store.db.execute_sql(sql)
    try:
        taken = ordermail("deliver", "--recipient", reply_to, stdin=mail(to=reply_to, body="Wann kommt es?"))
        assert taken.returncode == 0                                     # stored: the sender is done
        [warning, receipt] = taken.stderr.strip().splitlines()           # one line each, no traceback
        assert warning.startswith("ordermail: message ") and " quarantined (" in warning
        assert receipt.startswith("taken as ")
        [message] = listed(ordermail, "--state", "quarantined")
        assert "events refused for the test" in message["reason"] and "\n" not in message["reason"]
        again = ordermail("inbound", "retry", str(message["id"]))
        assert again.returncode == 1                                     # not done: a script can tell
        assert again.stdout.strip().startswith(f"message {message['id']}: quarantined: ")
        [still] = listed(ordermail, "--state", "quarantined")
        assert still["id"] == message["id"] and still["attempts"] == 2
    finally:
        store.db.execute_sql("DROP TRIGGER refuse_events" + (" ON event" if store.backend == "postgresql" else ""))
    retried = ordermail("inbound", "retry", str(message["id"]))
    assert retried.returncode == 0 and f"message {message['id']}: done: customer reply" in retried.stdout
    assert listed(ordermail, "--state", "quarantined") == []
    events = json.loads(ordermail("order", "show", "1042", "--format", "json").stdout)["events"]
    assert [e["body"] for e in events if e["kind"] == "customer_reply"] == ["Wann kommt es?"]


def test_retry_of_an_unknown_id_is_a_one_line_error(ordermail, done):
    result = ordermail("inbound", "retry", "999999")
    assert one_line_error(result) == "ordermail: no received message 999999"
    assert [m["state"] for m in listed(ordermail)] == ["done"]         # nothing else touched


def test_retry_leaves_alone_only_a_message_a_live_process_holds(ordermail, store, done):
    import os
    import socket
    held_by = f"{socket.gethostname()}:{os.getpid()}"               # this test process: alive
    InboundMessage.update(state="processing", claimed_by=held_by).where(InboundMessage.id == done["id"]).execute()
    line = one_line_error(ordermail("inbound", "retry", str(done["id"])), code=1)
    assert f"is being handled now (by {held_by})" in line
    assert InboundMessage.get_by_id(done["id"]).state == "processing"   # untouched
    # a claim whose process is gone (a pipe killed mid-way, no daemon), or one left waiting: handled now
    for state, claimed_by in (("processing", f"{socket.gethostname()}:{2**22 + 17}"), ("new", "")):
        InboundMessage.update(state=state, claimed_by=claimed_by).where(InboundMessage.id == done["id"]).execute()
        retried = ordermail("inbound", "retry", str(done["id"]))
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout.startswith(f"message {done['id']}: done: ")
