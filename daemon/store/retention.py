"""Retention: what the shop keeps no longer (the daily `retention` job).

    cancelled orders   deleted for good (the seed's "endgültig löschen") once
                       their log has been quiet for `[shop]
                       delete_cancelled_after_days`: the order, its items, its
                       whole log, its files and its mails. Kept — and named in
                       the result — while a payment is left to refund or a mail
                       about it still waits in the outbox.
    raw received mail  the bytes of mail received more than `[inbound]
                       keep_raw_days` ago are removed (table inbound_raw). The
                       message's row stays — sender, recipients, Message-ID,
                       hash, state, reason, order — so `inbound list|show` still
                       tell what came and what became of it, a copy arriving
                       again is still known as a duplicate, and every event it
                       made stays in its order's log. The files an owner sent
                       with a command are kept with their events (they were
                       stored apart), so pruning loses nothing an order shows.
                       Not pruned: mail not yet handled, quarantined mail (a
                       failure keeps its raw message until the owner retries
                       it), and mail whose forward to the owner is still to be
                       sent (it goes with the original attached).

0 keeps for ever. Days here are periods of 24 hours before the run: nothing
is promised to a customer for a date. Raw mail goes in small batches, each
its own transaction, so mail arriving meanwhile does not wait for the whole
prune (SQLite has one writer).
"""
from __future__ import annotations

import datetime as dt

import peewee as pw

from daemon.orders import service as orders
from daemon.store import job_runs as job_store
from daemon.config import Settings
from daemon.errors import OrderNotFound
from daemon.store.job_runs import Outcome
from daemon.store.models import CANCELLED, InboundMessage, InboundRaw, Order, OutboxMessage
from daemon.store.database import Store

PRUNE_BATCH = 200
PRUNABLE_STATES = ("done", "duplicate")
JOB_LOG_DAYS = 400          # the jobs' log, read by the digest since its last run: a year is plenty


def run(settings: Settings, store: Store, now: dt.datetime) -> Outcome:
    outcome = Outcome()
    days = settings.shop.delete_cancelled_after_days
    if days:
        delete_cancelled(store, now - dt.timedelta(days=days), outcome)
    days = settings.inbound.keep_raw_days
    if days:
        outcome.done["raw_pruned"] = prune_raw(store, now - dt.timedelta(days=days), now)
    with store.atomic():
        job_store.forget_logs_before(now - dt.timedelta(days=JOB_LOG_DAYS))
    return outcome


def delete_cancelled(store: Store, quiet_since: dt.datetime, outcome: Outcome) -> None:
    statuses = [s for s in range(16) if s & CANCELLED]
    due = (Order.select(Order.number).where(Order.status.in_(statuses) & (Order.updated_at < quiet_since))
           .order_by(Order.updated_at, Order.id).tuples())
    for (number,) in list(due):
        try:
            change = orders.delete_cancelled(store, number, quiet_since=quiet_since)
        except OrderNotFound:       # another daemon (or the owner) was quicker
            continue
        outcome.add("deleted" if change.done else "kept", number)


def prune_raw(store: Store, received_before: dt.datetime, now: dt.datetime) -> int:
    """Remove the raw bytes of handled mail received before the cutoff; how many."""
    # from the oldest bytes still kept: the rows pruned by earlier runs are not walked again
    pruned, after = 0, (InboundRaw.select(pw.fn.MIN(InboundRaw.inbound)).scalar() or 1) - 1
    while True:
        ids = _prunable(received_before, after)
        if not ids:
            return pruned
        with store.atomic():
            # Marked first, and only while still handled: `inbound retry` of
            # one of them in the meantime keeps its bytes.
            (InboundMessage.update(raw_pruned_at=now)
             .where(InboundMessage.id.in_(ids) & InboundMessage.state.in_(PRUNABLE_STATES)
                    & InboundMessage.raw_pruned_at.is_null())
             .execute())
            marked = [i for (i,) in InboundMessage.select(InboundMessage.id)
                      .where(InboundMessage.id.in_(ids) & (InboundMessage.raw_pruned_at == now)).tuples()]
            pruned += InboundRaw.delete().where(InboundRaw.inbound.in_(marked)).execute() if marked else 0
        after = ids[-1]


def _prunable(received_before: dt.datetime, after: int) -> list[int]:
    """The next batch of ids whose bytes may go, in id order from `after`.

    On the index of (state, id) from `after` on, each id checked in inbound_raw
    by its key; mail waiting to be forwarded is left out.
    """
    forwarding = (OutboxMessage.select(OutboxMessage.inbound)
                  .where(OutboxMessage.state.in_(("pending", "sending")) & OutboxMessage.inbound.is_null(False)))
    query = (InboundRaw.select(InboundRaw.inbound).join(InboundMessage)
             .where((InboundRaw.inbound > after) & (InboundMessage.received_at < received_before)
                    & InboundMessage.state.in_(PRUNABLE_STATES) & InboundMessage.id.not_in(forwarding))
             .order_by(InboundRaw.inbound).limit(PRUNE_BATCH).tuples())
    return [i for (i,) in query]
