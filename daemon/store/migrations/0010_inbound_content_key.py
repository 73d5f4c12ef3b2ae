"""inbound_message.content_key: which received mails count as one message
(and store_failures, below).

The worker recognised a mail it had handled by the hash of its raw bytes
alone. The same message reaching us twice by different ways (Postfix and a
hosted mailbox, a retry through another MX) differs in its transport headers
(Received, Delivered-To, Return-Path), so it was handled twice: an unmatched
mail forwarded to the owner twice, a bounce recorded twice. The key is the
Message-ID with the body and the recipients; without a Message-ID, the raw
bytes with the recipients (`inbound.content_key`). Rows taken before this
migration keep no key (their events still stand unique per Message-ID).

The index is partial: a row is taken without a key (the worker sets it), so
the door's insert, which the sender waits for, writes no entry in it. The
hash of the raw bytes was looked up for this before; its index goes.
"""
from peewee import CharField, SmallIntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("inbound_message", "content_key", CharField(max_length=64, null=True)),
        # How often the store failed while this message was in hand (a lost
        # connection, a lock held too long): counted apart from `attempts`,
        # and back to 0 on `inbound retry` (inbound._count_store_trouble).
        migrator.add_column("inbound_message", "store_failures", SmallIntegerField(default=0)),
    )
    db.execute_sql("CREATE INDEX IF NOT EXISTS inbound_message_content_key ON inbound_message (content_key) "
                   "WHERE content_key IS NOT NULL")
    db.execute_sql("DROP INDEX IF EXISTS inbound_message_sha256")
