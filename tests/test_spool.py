"""The spool's group commit: what arrives while a commit is under way is
committed together, and each sender is answered only after its own message's
transaction — "taken" if it committed, "try again later" if it did not.

The writer thread is held after its first commit (inside `on_commit`, which
it calls between transactions), so what queues meanwhile is known exactly.
Both backends.
"""
from __future__ import annotations

import asyncio
import threading

from daemon.errors import StoreUnavailable
from daemon.intake.spool import Spool
from daemon.store.models import InboundMessage

REFUSE_INSERTS = {
    "sqlite": ["CREATE TRIGGER refuse_mail BEFORE INSERT ON inbound_message "
               "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"],
    "postgresql": ["CREATE FUNCTION refuse_mail() RETURNS trigger LANGUAGE plpgsql "
                   "AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$",
                   "CREATE TRIGGER refuse_mail BEFORE INSERT ON inbound_message "
                   "FOR EACH ROW EXECUTE FUNCTION refuse_mail()"],
}


class HeldWriter:
    """on_commit that records each committed group and holds the writer after the first."""

    def __init__(self):
        self.groups: list[list[int]] = []
        self.holding, self.release = threading.Event(), threading.Event()

    def __call__(self, ids):
        self.groups.append(list(ids))
        if len(self.groups) == 1:
            self.holding.set()
            self.release.wait(10)


def mail(n: int) -> bytes:
    return f"From: erika@example.org\r\nSubject: {n}\r\nMessage-ID: <m{n}@example.org>\r\n\r\nHallo {n}\r\n".encode()


async def put(spool: Spool, n: int) -> int:
    return await spool.put(mail(n), channel="smtp", envelope_from="erika@example.org",
                           recipients=["orders@shop.example"])


async def queue_behind_the_first(spool: Spool, writer: HeldWriter, count: int) -> list[asyncio.Future]:
    """One message committed alone, then `count` more queued while the writer is held."""
    await put(spool, 0)
    await asyncio.get_running_loop().run_in_executor(None, writer.holding.wait, 10)
    waiting = [asyncio.ensure_future(put(spool, n)) for n in range(1, count + 1)]
    await asyncio.sleep(0.2)
    return waiting


def test_messages_arriving_during_a_commit_are_committed_together(store):
    writer = HeldWriter()
    spool = Spool(store, on_commit=writer)

    async def scenario():
        waiting = await queue_behind_the_first(spool, writer, 30)
        assert not any(f.done() for f in waiting)          # nobody is told "taken" before the commit
        assert InboundMessage.select().count() == 1
        writer.release.set()
        return await asyncio.gather(*waiting)

    try:
        ids = asyncio.run(scenario())
    finally:
        writer.release.set()
        spool.close()
    assert writer.groups[1:] == [ids]                       # thirty messages, one transaction
    assert InboundMessage.select().where(InboundMessage.id.in_(ids)).count() == 30


def test_a_group_that_cannot_be_committed_is_refused_to_every_sender_in_it(store):
    writer = HeldWriter()
    spool = Spool(store, on_commit=writer)

    async def scenario():
        waiting = await queue_behind_the_first(spool, writer, 5)
        for sql in REFUSE_INSERTS[store.backend]:
            store.db.execute_sql(sql)
        writer.release.set()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        store.db.execute_sql("DROP TRIGGER refuse_mail" + (" ON inbound_message" if store.backend == "postgresql"
                                                           else ""))
        return outcomes, await put(spool, 99)

    try:
        outcomes, later = asyncio.run(scenario())
    finally:
        writer.release.set()
        spool.close()
    assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
    assert "disk on fire" in str(outcomes[0])
    assert InboundMessage.select().count() == 2              # the first and the later one; none of the five
    assert InboundMessage.get_by_id(later).message_id == "<m99@example.org>"


def test_an_idle_spool_commits_a_message_at_once(store):
    writer = HeldWriter()
    writer.release.set()
    spool = Spool(store, on_commit=writer)
    try:
        ids = [asyncio.run(put(spool, n)) for n in range(3)]
    finally:
        spool.close()
    assert writer.groups == [[i] for i in ids]              # no waiting for company
