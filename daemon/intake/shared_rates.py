"""The doors' message counts in the database, shared by all daemons on it
(table message_rate, migration 0021).

Each daemon counts in memory, so MAIL FROM costs no query
(daemon/intake/rates.py). Every few seconds `exchange` adds what it took
since to the shared rows — one upsert per key and 5-minute bucket, in one
statement for all of them — and reads back, from every daemon's rows, the
hour's counts of the keys that have come near a limit: those are the only
ones a daemon's own count could leave wrongly under it. A quiet shop
exchanges nothing but an empty read; a busy one a row per sender and
client it saw, every few seconds, whatever the number of messages.
"""
from __future__ import annotations

import peewee as pw

from daemon.store.models import BaseModel, CharField
from daemon.store.database import Store

UPSERT_ROWS = 500      # rows per INSERT … ON CONFLICT statement


class MessageRate(BaseModel):
    key = CharField(max_length=400)         # "sender erika@example.org", "client 192.0.2.7"
    bucket = pw.IntegerField()              # seconds since the epoch // 300
    n = pw.IntegerField()

    class Meta:
        table_name = "message_rate"
        primary_key = pw.CompositeKey("key", "bucket")


def bind(store: Store) -> None:
    store.db.bind([MessageRate])


def exchange(store: Store, taken: dict[tuple[str, int], int], since_bucket: int,
             near: dict[str, int], *, forget: bool = False) -> dict[str, dict[int, int]]:
    """Add `taken` ({(key, bucket): messages}) to the shared counts; return
    {key: {bucket: messages}} after `since_bucket` for each key whose sum
    there is at least `near[kind]` (kind: "sender" or "client").
    `forget`: delete the counts of `since_bucket` and before too (they have
    left the hour) — in the same transaction: all of it is done, or none."""
    if taken or forget:
        rows = [{"key": key, "bucket": bucket, "n": n} for (key, bucket), n in sorted(taken.items())]
        with store.atomic():    # sorted: two daemons adding to the same keys lock them in the same order
            for start in range(0, len(rows), UPSERT_ROWS):
                (MessageRate.insert_many(rows[start:start + UPSERT_ROWS])
                 .on_conflict(conflict_target=[MessageRate.key, MessageRate.bucket],
                              update={MessageRate.n: MessageRate.n + pw.EXCLUDED.n})
                 .execute())
            if forget:
                MessageRate.delete().where(MessageRate.bucket <= since_bucket).execute()
    in_window = MessageRate.bucket > since_bucket
    kind = pw.fn.SUBSTR(MessageRate.key, 1, 7)
    busy = (MessageRate.select(MessageRate.key).where(in_window).group_by(MessageRate.key)
            .having(pw.fn.SUM(MessageRate.n) >= pw.Case(kind, [("sender ", near["sender"])], near["client"])))
    counts: dict[str, dict[int, int]] = {}
    query = (MessageRate.select(MessageRate.key, MessageRate.bucket, MessageRate.n)
             .where(in_window & MessageRate.key.in_(busy)))
    for key, bucket, n in query.tuples():
        counts.setdefault(key, {})[bucket] = n
    return counts
