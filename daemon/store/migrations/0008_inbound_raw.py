"""A received mail's bytes in a table of their own, written once.

SQLite keeps all of a row's columns in one record: with the bytes inside
inbound_message, every change of state (claimed, done, quarantined)
rewrote the whole mail — a 25 MB mail copied twice in memory and written to
the WAL again, and a 2 KB reply's row rewritten with it on each step.
inbound_raw(inbound_id, raw) is written once when the mail is taken and
never updated; the bytes are its last column, so SQLite's blob API can
write them in slices without a copy. Existing mail moves over.
"""
from peewee import BlobField, ForeignKeyField, Model


def up(migrator, db):
    class InboundMessage(Model):
        class Meta:
            database = db
            table_name = "inbound_message"

    class InboundRaw(Model):
        inbound = ForeignKeyField(InboundMessage, primary_key=True, on_delete="CASCADE")
        raw = BlobField()

        class Meta:
            database = db
            table_name = "inbound_raw"

    db.create_tables([InboundRaw])
    db.execute_sql("INSERT INTO inbound_raw (inbound_id, raw) SELECT id, raw FROM inbound_message")
    migrator.migrate(migrator.drop_column("inbound_message", "raw"))
