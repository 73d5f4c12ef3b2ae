"""What the web side remembers (migration 0006): mailed sign-ins and browser sessions.

Kept beside `daemon/store/database.py` rather than in it, as `daemon/store/job_runs.py`
is: only the web pages read these tables. Tokens are stored as SHA-256
hashes; the secret itself lives only in the mail or the cookie.
"""
from __future__ import annotations

import hashlib

import peewee as pw

from daemon.store.models import BaseModel, utcnow
from daemon.store.database import Store


class SigninToken(BaseModel):
    """A single-use sign-in link, mailed to `email`."""
    token_hash = pw.CharField(max_length=64, unique=True)
    email = pw.CharField(max_length=254)
    next_path = pw.CharField(max_length=500, default="")   # where the owner was headed
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField()
    used_at = pw.DateTimeField(null=True)

    class Meta:
        table_name = "web_signin_token"


class WebSession(BaseModel):
    """A signed-in browser."""
    token_hash = pw.CharField(max_length=64, unique=True)
    email = pw.CharField(max_length=254)
    csrf_token = pw.CharField(max_length=64)
    created_at = pw.DateTimeField(default=utcnow)
    expires_at = pw.DateTimeField(index=True)

    class Meta:
        table_name = "web_session"


MODELS = (SigninToken, WebSession)


def bind(store: Store) -> None:
    store.db.bind(MODELS)


def token_hash(token: str) -> str:
    """What is stored of a token: looking a row up by it reveals nothing of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
