"""Owner command mails: applied once, answered by a receipt, undoable for a day.

command_mail remembers each command mail by its Message-ID (so a resent mail
applies nothing twice), the receipt's Message-ID (so a reply `undo` finds
it), and what it changed with each order's state before (so undo can put
it back).
"""
import datetime

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class InboundMessage(Model):
        class Meta:
            database = db
            table_name = "inbound_message"

    class CommandMail(Model):
        message_id = CharField(max_length=998, unique=True)
        inbound = ForeignKeyField(InboundMessage, null=True, on_delete="SET NULL")
        sender = CharField(max_length=320)
        receipt_message_id = CharField(max_length=255, null=True, unique=True)
        created_at = DateTimeField(default=datetime.datetime.utcnow)
        undo_until = DateTimeField()
        undone_at = DateTimeField(null=True)
        changes = TextField(default="[]")

        class Meta:
            database = db
            table_name = "command_mail"

    db.create_tables([CommandMail])
