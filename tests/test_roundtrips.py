"""What a customer reply costs the database: counted statements, not timings.

On PostgreSQL every statement is a round trip (across a network 0.2–1 ms
each), so the path from a reply arriving to its event committed is held to
six per reply, for a burst the door commits together and a worker claims
together (bench/pg_roundtrips.py measures the same with the SMTP door's
spool, on both backends). And the cheap way (a group in one transaction, no
savepoints) must end as the careful one would when a mail in the group fails.
"""
from __future__ import annotations

import pytest

from conftest import sample_order
from daemon.handling import inbound
from daemon.mail import tokens
from daemon.orders import service as orders
from daemon.mail.addresses import token_address
from daemon.intake.spool import _Pending, store_messages
from daemon.store.models import Event, InboundMessage, OutboxMessage
from mailbuilder import mail
from roundtrips import StatementCount

GOAL_PER_REPLY = 6
TODAY = __import__("datetime").date.today()


def _reply_addresses(store, settings, count: int) -> list[str]:
    made = [orders.create_order(store, settings, sample_order(str(4000 + n))) for n in range(count)]
    return [token_address(settings, order, tokens.CUSTOMER_REPLY, TODAY) for order in made]


def _arrive(store, raws_and_recipients) -> list[int]:
    """A burst as the door commits it: one group commit."""
    with store.atomic(urgent=True):
        return store_messages(store, [_Pending(raw, "smtp", "erika@example.org", [to])
                                      for raw, to in raws_and_recipients])


def test_a_burst_of_replies_costs_at_most_six_round_trips_each_on_postgresql(store, settings):
    if store.backend != "postgresql":
        pytest.skip("SQLite answers in-process: its statements are no round trips")
    addresses = _reply_addresses(store, settings, 5)
    replies = [(mail(to=to, body=f"Danke, Nummer {n}!"), to) for n in range(4) for to in addresses]
    count = StatementCount(store.db)
    with count.counting():
        _arrive(store, replies)
        while inbound.process_pending(store, settings):
            pass
    assert Event.select().where(Event.kind == "customer_reply").count() == len(replies)
    assert OutboxMessage.select().where(OutboxMessage.kind == "reply_forward").count() == len(replies)
    per_reply = count.total / len(replies)
    assert per_reply <= GOAL_PER_REPLY, f"{per_reply:.2f} per reply: {count.kinds()}"


def test_a_failing_mail_in_a_group_is_handled_as_alone_and_the_others_land(store, settings):
    """An owner's command for an order that does not exist is refused inside
    the group's transaction (caught, answered in the receipt): the group is
    undone and handled one by one, and ends as if each came alone."""
    addresses = _reply_addresses(store, settings, 2)
    command = mail(to=settings.command_address, sender="Olga <owner@shop.example>", subject="x",
                   body="paid 9999\npaid 4000\n")
    ids = _arrive(store, [(mail(to=addresses[0], body="Erste"), addresses[0]),
                          (command, settings.command_address),
                          (mail(to=addresses[1], body="Zweite"), addresses[1]),
                          (mail(to=addresses[1], body="Zweite"), addresses[1])])
    while inbound.process_pending(store, settings):
        pass
    states = [InboundMessage.get_by_id(i).state for i in ids]
    assert states[:3] == ["done", "done", "done"] and states[3] in ("done", "duplicate")
    assert [e.kind for e in orders.order_events(orders.find_order("4000"))] == ["created", "customer_reply", "paid"]
    [receipt] = OutboxMessage.select().where(OutboxMessage.kind == "receipt")
    assert "9999" in receipt.data["text"] and "4000 als bezahlt vermerkt" in receipt.data["text"]   # the German shop's receipt
