"""An index on outbox_message (recipient, sent_at) for the hourly rate limit.

Counting what went to an address within the hour walked every mail ever
sent to it (the (recipient, kind, created_at) index narrows by address
only), inside the claim's write transaction: the owner's address, which
gets every customer reply forwarded, made each claim slower by the month.
"""


def up(migrator, db):
    db.execute_sql("CREATE INDEX IF NOT EXISTS outbox_message_recipient_sent_at "
                   "ON outbox_message (recipient, sent_at)")
