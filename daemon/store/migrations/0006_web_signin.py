"""The web side: sign-in by mail, browser sessions, re-issued status links.

- web_signin_token: a mailed sign-in link, kept as the SHA-256 of its token
  only (a leaked table signs nobody in); single use (used_at), valid until
  expires_at. Rows are written for unknown addresses too, so asking costs the
  same whether the address has orders or not, and "per address per hour"
  can be counted here across processes. (email, created_at) serves that count.
- web_session: a signed-in browser, again by the SHA-256 of its cookie, with
  the CSRF token its forms carry.
- orders.status_token_issued_at: when the status link was last re-issued;
  an expired link is judged from it and the order's last change.
"""
import datetime

from peewee import CharField, DateTimeField, Model


def up(migrator, db):
    now = datetime.datetime.utcnow

    class SigninToken(Model):
        token_hash = CharField(max_length=64, unique=True)
        email = CharField(max_length=254)
        next_path = CharField(max_length=500, default="")
        created_at = DateTimeField(default=now)
        expires_at = DateTimeField()
        used_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "web_signin_token"
            indexes = ((("email", "created_at"), False),)

    class WebSession(Model):
        token_hash = CharField(max_length=64, unique=True)
        email = CharField(max_length=254)
        csrf_token = CharField(max_length=64)
        created_at = DateTimeField(default=now)
        expires_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "web_session"

    db.create_tables([SigninToken, WebSession])
    migrator.migrate(migrator.add_column("orders", "status_token_issued_at", DateTimeField(null=True)))


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS web_session")
    db.execute_sql("DROP TABLE IF EXISTS web_signin_token")
    migrator.migrate(migrator.drop_column("orders", "status_token_issued_at"))
