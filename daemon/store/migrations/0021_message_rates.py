"""message_rate: the SMTP/LMTP doors' message counts, shared by every daemon
on the database (daemon/intake/rates.py, daemon/intake/shared_rates.py).

One row per counted key ("sender erika@example.org", "client 192.0.2.7")
and 5-minute bucket (seconds since the epoch // 300): how many messages of
that key the doors of all daemons took in it. Rows older than the hour
are deleted as the hour moves on.
"""
from peewee import CharField, CompositeKey, IntegerField, Model


def up(migrator, db):
    class MessageRate(Model):
        key = CharField(max_length=400)
        bucket = IntegerField()
        n = IntegerField()

        class Meta:
            database = db
            table_name = "message_rate"
            primary_key = CompositeKey("key", "bucket")

    db.create_tables([MessageRate])
    db.execute_sql("CREATE INDEX IF NOT EXISTS message_rate_bucket ON message_rate (bucket)")


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS message_rate")
