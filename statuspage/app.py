"""The web application: built by `make_app(settings, store)`, nothing global.

Routes live in two modules, registered here: `pages` (customers' status
pages, sign-in by mail, the owner's dashboard) and `api` (order intake,
shop webhooks, health and metrics). Every response carries the security
headers below; routes call query functions and render templates, no SQL.
"""
from __future__ import annotations

from dataclasses import dataclass

import bottle

from daemon.config import Settings
from daemon.store import Store

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",          # tokens are in our URLs
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class WebContext:
    """What every route needs, passed in rather than imported."""
    settings: Settings
    store: Store


def make_app(settings: Settings, store: Store) -> bottle.Bottle:
    from statuspage import api, pages   # the route modules import this one for WebContext
    app = bottle.Bottle(catchall=True)
    context = WebContext(settings, store)
    app.add_hook("after_request", _security_headers)
    pages.register(app, context)
    api.register(app, context)
    return app


def _security_headers() -> None:
    for name, value in SECURITY_HEADERS.items():
        bottle.response.set_header(name, value)
