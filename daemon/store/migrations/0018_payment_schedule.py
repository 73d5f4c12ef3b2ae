"""The schedule for unpaid orders and for retention (daemon/payments/schedule.py, daemon/store/retention.py).

- orders.on_payment_schedule: whether the reminder and auto-cancel jobs
  handle the order. Orders from before this migration get false: a shop
  that upgrades must not have years-old unpaid orders reminded or cancelled
  (and their customers mailed) on the first morning. New orders get true.
- orders.payment_reminded_at: when the payment reminder went out — at
  most one per order, whichever daemon's run sends it (checked under the
  order's lock).
- inbound_message.raw_pruned_at: when `retention` removed the mail's raw
  bytes (inbound_raw); the row, its state and reason, and the events it
  made stay.
- job_run.last_due_at: the due time the last scheduled run claimed, so that
  of several daemons on one database one runs a daily job per due time.
- job_log: what each run of the daily jobs did (the orders it touched), for
  the owner's digest ("since the last digest").
"""
import datetime

from peewee import AutoField, BooleanField, CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class JobLog(Model):
        id = AutoField()
        name = CharField(max_length=60)
        ran_at = DateTimeField(default=datetime.datetime.utcnow)   # the run's `now`
        result = TextField(default="")
        details = TextField(default="{}")                         # JSON

        class Meta:
            database = db
            table_name = "job_log"

    migrator.migrate(
        migrator.add_column("orders", "on_payment_schedule", BooleanField(default=False)),
        migrator.add_column("orders", "payment_reminded_at", DateTimeField(null=True)),
        migrator.add_column("inbound_message", "raw_pruned_at", DateTimeField(null=True)),
        migrator.add_column("job_run", "last_due_at", DateTimeField(null=True)),
    )
    db.create_tables([JobLog])
    db.execute_sql("CREATE INDEX IF NOT EXISTS job_log_ran_at ON job_log (ran_at)")


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS job_log")
    migrator.migrate(
        migrator.drop_column("orders", "on_payment_schedule"),
        migrator.drop_column("orders", "payment_reminded_at"),
        migrator.drop_column("inbound_message", "raw_pruned_at"),
        migrator.drop_column("job_run", "last_due_at"),
    )
