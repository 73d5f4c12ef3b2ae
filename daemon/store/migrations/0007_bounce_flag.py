"""Bounces flag the customer's address on the order, so the owner sees it."""
from peewee import CharField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("orders", "email_bounced_at", DateTimeField(null=True)),
        migrator.add_column("orders", "email_bounce", CharField(max_length=300, default="")),
    )
