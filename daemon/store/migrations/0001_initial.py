"""The first schema: orders, items, the log, files, inbound mail, the outbox."""
import datetime

from peewee import (BigIntegerField, BlobField, BooleanField, CharField, DateTimeField,
                    DecimalField, ForeignKeyField, IntegerField, Model, SmallIntegerField,
                    TextField)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    def money(**kw):
        return DecimalField(max_digits=14, decimal_places=2, **kw)

    now = datetime.datetime.utcnow

    class Order(Base):
        number = CharField(max_length=32, unique=True)
        customer_name = CharField(max_length=200)
        customer_email = CharField(max_length=254, index=True)
        customer_key = CharField(max_length=200)
        surname_key = CharField(max_length=200)
        total = money()
        currency = CharField(max_length=3)
        payment_method = CharField(max_length=40)
        locale = CharField(max_length=5)
        status = SmallIntegerField(default=0)
        created_at = DateTimeField(default=now)
        updated_at = DateTimeField(default=now)
        paid_at = DateTimeField(null=True)
        shipped_at = DateTimeField(null=True)
        cancelled_at = DateTimeField(null=True)
        refunded_at = DateTimeField(null=True)
        refunded_amount = money(null=True)
        tracking_code = CharField(max_length=100, null=True)
        carrier = CharField(max_length=60, null=True)
        status_token = CharField(max_length=64, unique=True)
        reply_secret = CharField(max_length=64)

        class Meta:
            table_name = "orders"

    class OrderItem(Base):
        order = ForeignKeyField(Order, on_delete="CASCADE")
        position = SmallIntegerField()
        sku = CharField(max_length=64, default="")
        name = CharField(max_length=300)
        quantity = IntegerField()
        unit_price = money()

        class Meta:
            indexes = ((("order", "position"), True),)

    class Event(Base):
        order = ForeignKeyField(Order, on_delete="CASCADE")
        kind = CharField(max_length=20)
        author = CharField(max_length=10)
        subject = CharField(max_length=300, default="")
        body_text = TextField(default="")
        body_html = TextField(default="")
        data = TextField(default="{}")
        notified = BooleanField(default=False)
        message_id = CharField(max_length=255, null=True)
        created_at = DateTimeField(default=now)

    class Blob(Base):
        sha256 = CharField(max_length=64, primary_key=True)
        size = IntegerField()
        data = BlobField()

    class Attachment(Base):
        event = ForeignKeyField(Event, on_delete="CASCADE")
        blob = ForeignKeyField(Blob, on_delete="RESTRICT")
        filename = CharField(max_length=255)
        content_type = CharField(max_length=127)
        content_id = CharField(max_length=255, null=True)
        size = IntegerField()

    class InboundMessage(Base):
        received_at = DateTimeField(default=now)
        channel = CharField(max_length=10)
        envelope_from = CharField(max_length=320, default="")
        recipients = TextField(default="[]")
        message_id = CharField(max_length=998, null=True)
        sha256 = CharField(max_length=64, index=True)
        size = IntegerField()
        raw = BlobField()
        state = CharField(max_length=12, default="new")
        reason = TextField(default="")
        attempts = SmallIntegerField(default=0)
        processed_at = DateTimeField(null=True)

        class Meta:
            indexes = ((("state", "id"), False),)

    class OutboxMessage(Base):
        order = ForeignKeyField(Order, null=True, on_delete="CASCADE")
        event = ForeignKeyField(Event, null=True, on_delete="CASCADE")
        kind = CharField(max_length=30)
        recipient = CharField(max_length=320)
        message_id = CharField(max_length=255, unique=True)
        state = CharField(max_length=12, default="pending")
        attempts = SmallIntegerField(default=0)
        next_attempt_at = DateTimeField(default=now)
        last_error = TextField(default="")
        created_at = DateTimeField(default=now)
        sent_at = DateTimeField(null=True)

        class Meta:
            indexes = ((("state", "next_attempt_at"), False),)

    class Counter(Base):
        name = CharField(max_length=40, primary_key=True)
        value = BigIntegerField()

    db.create_tables([Order, OrderItem, Event, Blob, Attachment, InboundMessage,
                      OutboxMessage, Counter])
    # Foreign keys are not indexed automatically on PostgreSQL; the log of one
    # order is read by (order_id, id) everywhere.
    db.execute_sql("CREATE INDEX IF NOT EXISTS event_order_id_id ON event (order_id, id)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS attachment_event_id ON attachment (event_id)")
    db.execute_sql("CREATE INDEX IF NOT EXISTS outbox_message_order_id ON outbox_message (order_id)")
    # A received mail (customer reply, bounce, auto-reply) makes at most one
    # event of a kind on an order, so a mail handled twice cannot log twice.
    # Owner command mails are kept once by their own table instead, since one
    # of them may rightly add two notes to one order.
    db.execute_sql("CREATE UNIQUE INDEX IF NOT EXISTS event_mail_once ON event (order_id, kind, message_id)"
                   " WHERE message_id IS NOT NULL AND author <> 'owner'")
