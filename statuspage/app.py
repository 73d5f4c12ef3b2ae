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
from daemon.store.database import Store

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",          # tokens are in our URLs
    "X-Frame-Options": "DENY",
}
RELOAD_TEMPLATES = "ordermail.reload_templates"


@dataclass(frozen=True)
class WebContext:
    """What every route needs, passed in rather than imported."""
    settings: Settings
    store: Store
    doors: object = None      # the mail doors' probes (daemon/intake/health.py) inside `ordermail serve`


def make_app(settings: Settings, store: Store, doors=None) -> bottle.Bottle:
    from statuspage import api, pages   # the route modules import this one for WebContext
    app = bottle.Bottle(catchall=True)
    context = WebContext(settings, store, doors)
    app.add_hook("after_request", _security_headers)
    app.default_error_handler = _plain_error
    app.config[RELOAD_TEMPLATES] = pages.register(app, context).reload_templates
    api.register(app, context)
    return app


def reload_templates(app: bottle.Bottle) -> None:
    """SIGHUP in `ordermail serve`: the page templates and words read again.
    (Under gunicorn, its own HUP starts fresh workers, which read them anyway.)"""
    app.config[RELOAD_TEMPLATES]()


def _security_headers() -> None:
    for name, value in SECURITY_HEADERS.items():
        bottle.response.set_header(name, value)


def _plain_error(error: bottle.HTTPError) -> str:
    """Errors as one line of text: bottle's own error page carries inline style
    (which the CSP blocks), and an uncaught exception's 500 skips the hook above."""
    _security_headers()
    bottle.response.content_type = "text/plain; charset=utf-8"
    detail = error.body if isinstance(error.body, str) and error.body != error.status_line[4:] else ""
    return f"{error.status_line}\n{detail}\n" if detail else f"{error.status_line}\n"
