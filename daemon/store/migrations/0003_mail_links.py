"""Mail intake: outbox rows that forward a received mail, and what they carry.

- outbox_message.inbound_id: the received mail a forward to the owner is made
  of (customer replies, unmatched mail); deleted with it.
- outbox_message.data: what the mail needs beyond its event (JSON text).
- an index on (recipient, kind, created_at) for "at most once a day" limits.
- inbound_message.order_id: the order a received mail landed on, if any.
- inbound_message.claimed_by: host:pid of the process handling it, so a
  restarted daemon can take back the claims of its dead predecessor at once.
"""
from peewee import CharField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class InboundMessage(Model):
        class Meta:
            database = db
            table_name = "inbound_message"

    class Order(Model):
        class Meta:
            database = db
            table_name = "orders"

    migrator.migrate(
        migrator.add_column("outbox_message", "inbound_id",
                            ForeignKeyField(InboundMessage, null=True, field=InboundMessage.id,
                                            on_delete="CASCADE")),
        migrator.add_column("outbox_message", "data", TextField(default="{}")),
        migrator.add_column("inbound_message", "order_id",
                            ForeignKeyField(Order, null=True, field=Order.id, on_delete="SET NULL")),
        migrator.add_column("inbound_message", "claimed_by", CharField(max_length=100, default="")),
    )
    db.execute_sql("CREATE INDEX IF NOT EXISTS outbox_message_recipient_kind_created_at "
                   "ON outbox_message (recipient, kind, created_at)")
