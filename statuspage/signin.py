"""Sign-in by mail, without passwords: single-use links, sessions, CSRF tokens.

1. `request_link`: someone types an address. A row is written whatever the
   address (so asking costs the same either way); a link is mailed only if
   the address has orders or is an owner's, and at most
   `[web] signins_per_hour` times an hour per address.
2. The link opens a page with one button (mail scanners that follow links
   must not use the link up); `redeem` takes the link once, within
   SIGNIN_MINUTES, and opens a session.
3. The session cookie's SHA-256 finds the session; its CSRF token goes into
   every form and is compared in constant time.

Tokens are 256 random bits; the database keeps only their SHA-256, so a
copy of it signs nobody in.
"""
from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass

from daemon.orders import service as orders
from daemon.config import Settings
from daemon.orders.as_json import EMAIL_RE
from daemon.store.models import Order
from daemon.store.database import Store
from statuspage.web_store import SigninToken, WebSession, token_hash

SIGNIN_MINUTES = 15
KEEP_ROWS = dt.timedelta(days=2)      # old sign-in rows are kept this long (for the hourly count)


@dataclass(frozen=True)
class Visitor:
    """Who a signed-in browser belongs to."""
    email: str
    csrf: str
    is_owner: bool
    session_id: int


def normal_address(text: str) -> str | None:
    """The address as orders store it (lower case), or None if it is not one."""
    address = text.strip()
    if len(address) > 254 or not EMAIL_RE.fullmatch(address):
        return None
    return address.lower()


def is_owner(settings: Settings, email: str) -> bool:
    return settings.owner.is_owner_address(email)


def safe_next(path: str) -> str:
    """Only a path of ours to return to after signing in; never another site."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path or len(path) > 500:
        return ""
    return path if all(32 < ord(c) < 127 for c in path) else ""


def request_link(store: Store, settings: Settings, email: str, *, lang: str, next_path: str,
                 now: dt.datetime) -> bool:
    """Write a sign-in row and mail its link if the address may sign in; True if mailed."""
    token = secrets.token_urlsafe(32)
    owner = is_owner(settings, email)
    with store.atomic():
        recent = (SigninToken.select()
                  .where((SigninToken.email == email) & (SigninToken.created_at > now - dt.timedelta(hours=1)))
                  .count())
        known = owner or Order.select().where(Order.customer_email == email).exists()
        SigninToken.create(token_hash=token_hash(token), email=email, next_path=safe_next(next_path) if owner else "",
                           created_at=now, expires_at=now + dt.timedelta(minutes=SIGNIN_MINUTES))
        if not known or recent >= settings.web.signins_per_hour:
            return False
        orders.queue_mail(settings, "signin_link", email, now=now, data={
            "url": f"{settings.shop.base_url.rstrip('/')}/signin/{token}",
            "minutes": SIGNIN_MINUTES, "lang": lang, "owner": owner})
    return True


def redeem(store: Store, settings: Settings, token: str, now: dt.datetime) -> tuple[str, str, str] | None:
    """Use a sign-in link up: (session cookie value, email, where to go), or None."""
    wanted = token_hash(token)
    with store.atomic():
        row = SigninToken.get_or_none(SigninToken.token_hash == wanted)
        if row is None or not hmac.compare_digest(row.token_hash, wanted):
            return None
        taken = (SigninToken.update(used_at=now)
                 .where((SigninToken.id == row.id) & SigninToken.used_at.is_null() & (SigninToken.expires_at > now))
                 .execute())
        if taken != 1:
            return None
        cookie = secrets.token_urlsafe(32)
        WebSession.create(token_hash=token_hash(cookie), email=row.email, csrf_token=secrets.token_urlsafe(32),
                          created_at=now, expires_at=now + dt.timedelta(hours=settings.web.session_hours))
        _forget_old(now)
    target = row.next_path if is_owner(settings, row.email) and row.next_path else ""
    return cookie, row.email, target


def visitor(settings: Settings, cookie: str | None, now: dt.datetime) -> Visitor | None:
    if not cookie or len(cookie) > 100:
        return None
    wanted = token_hash(cookie)
    session = WebSession.get_or_none(WebSession.token_hash == wanted)
    if session is None or not hmac.compare_digest(session.token_hash, wanted) or session.expires_at <= now:
        return None
    return Visitor(session.email, session.csrf_token, is_owner(settings, session.email), session.id)


def sign_out(store: Store, who: Visitor) -> None:
    with store.atomic():
        WebSession.delete().where(WebSession.id == who.session_id).execute()


def same_token(given: str | None, expected: str | None) -> bool:
    """A CSRF check: both present and equal, compared in constant time."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


def _forget_old(now: dt.datetime) -> None:
    SigninToken.delete().where(SigninToken.created_at < now - KEEP_ROWS).execute()
    WebSession.delete().where(WebSession.expires_at < now).execute()
