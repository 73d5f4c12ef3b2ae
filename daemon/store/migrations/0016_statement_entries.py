"""Bank statements: the credits imported, and order numbers found in free text.

statement_entry keeps each imported credit once, by a hash of its identity
at the bank (`entry_key`), so importing a statement again, or the next
export that overlaps the last one, passes over what was done before.

orders_number_key indexes the order number as a payer's bank writes it back:
upper case, without '-' and '_' ("a-1042" and "A1042" find "A-1042"). The
matcher (daemon/payments/statements/matching.py, NUMBER_KEY_SQL) asks with exactly
this expression, written out with literals: SQLite uses an index on an
expression only for the same expression, and a bound parameter in place of
'-' would not be the same.
"""
import datetime

from peewee import CharField, DateField, DateTimeField, DecimalField, ForeignKeyField, Model


def up(migrator, db):
    class Order(Model):
        class Meta:
            database = db
            table_name = "orders"

    class StatementEntry(Model):
        entry_key = CharField(max_length=64, unique=True)
        imported_at = DateTimeField(default=datetime.datetime.utcnow)
        source = CharField(max_length=20)
        booked_on = DateField(null=True)
        amount = DecimalField(max_digits=18, decimal_places=3)
        currency = CharField(max_length=3)
        reference = CharField(max_length=200, default="")
        payer = CharField(max_length=200, default="")
        remittance = CharField(max_length=500, default="")
        outcome = CharField(max_length=20)
        detail = CharField(max_length=300, default="")
        order = ForeignKeyField(Order, null=True, on_delete="SET NULL")

        class Meta:
            database = db
            table_name = "statement_entry"

    db.create_tables([StatementEntry])
    db.execute_sql("CREATE INDEX IF NOT EXISTS orders_number_key "
                   "ON orders (upper(replace(replace(number, '-', ''), '_', '')))")
