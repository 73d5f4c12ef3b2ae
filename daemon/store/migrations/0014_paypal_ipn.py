"""paypal_ipn: PayPal's IPN messages, stored before PayPal hears 200, verified later.

- One row per message, with the body exactly as PayPal posted it (`raw`,
  what is posted back for verification) and its state in the verification
  queue: pending → verifying (claimed, with a lease in next_attempt_at) →
  done (with an outcome) | failed (PayPal could not be reached in time).
- sha256 is unique: the same message posted twice is stored once.
- The partial unique index paypal_ipn_paid_txn holds the rule "a txn_id
  makes an order paid once": the row's outcome becomes 'paid' in the
  transaction that marks the order paid, so of two verifiers racing with
  the same payment one commits and the other rolls back.
"""
import datetime

from peewee import (BlobField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model,
                    SmallIntegerField, TextField)


def up(migrator, db):
    class Orders(Model):
        class Meta:
            database = db
            table_name = "orders"

    class PaypalIpn(Model):
        received_at = DateTimeField(default=datetime.datetime.utcnow)
        raw = BlobField()
        sha256 = CharField(max_length=64, unique=True)
        size = IntegerField()
        txn_id = CharField(max_length=64, null=True, index=True)
        invoice = CharField(max_length=127, default="")
        payment_status = CharField(max_length=40, default="")
        state = CharField(max_length=12, default="pending")
        verdict = CharField(max_length=10, default="")
        outcome = CharField(max_length=20, default="")
        reason = TextField(default="")
        attempts = SmallIntegerField(default=0)
        next_attempt_at = DateTimeField(default=datetime.datetime.utcnow)
        give_up_at = DateTimeField()
        last_error = TextField(default="")
        settled_at = DateTimeField(null=True)
        order = ForeignKeyField(Orders, null=True, on_delete="SET NULL")

        class Meta:
            database = db
            table_name = "paypal_ipn"
            indexes = ((("state", "next_attempt_at"), False),)

    db.create_tables([PaypalIpn])
    db.execute_sql("CREATE UNIQUE INDEX IF NOT EXISTS paypal_ipn_paid_txn ON paypal_ipn (txn_id) "
                   "WHERE outcome = 'paid'")


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS paypal_ipn")
