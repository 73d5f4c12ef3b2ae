"""Customers' status pages, sign-in by mail, and the owner's dashboard: the routes.

    GET  /o/<token>                 the order page (ETag; 404 for every kind of miss; 429 after many)
    GET  /o/<token>/files/<id>      a file of the order's public log
    GET  /o/<token>/girocode.svg    the GiroCode (EPC QR) of an unpaid transfer; 404 once paid
    GET  /account · POST /account   one's orders · ask for a sign-in link by mail
    GET  /signin/<token> · POST /signin   confirm and use a sign-in link
    POST /account/link              a signed-in customer's new status link (mailed too)
    POST /signout
    GET  /admin?q=&sort=&page=      the owner's orders by filter
    GET  /admin/orders.csv?q=       the same filter as CSV
    GET  /admin/orders/<number>     one order's whole log, internal entries marked
    GET  /admin/files/<id>
    GET  /static/<name>, /favicon.ico

Thin on purpose: each route checks who asks, calls a query function of
`customer_views`, `dashboard`, `signin` or `links`, and renders a template.
"""
from __future__ import annotations

import collections
import re
import secrets
import threading
from urllib.parse import quote

import bottle
from bottle import request, response

from daemon import user_numbers
from daemon.errors import FilterSyntaxError, OrderNotFound
from daemon.store.models import utcnow
from statuspage import customer_views, dashboard, i18n, links, signin, web_store
from statuspage.render import Renderer
from statuspage.throttle import Throttle, client_address
from statuspage.views import INLINE_IMAGES

_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_STATIC = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VISITOR = "ordermail.visitor"


def register(app: bottle.Bottle, context) -> "Pages":
    web_store.bind(context.store)
    pages = Pages(context)
    pages.install(app)
    return pages


class Pages:
    def __init__(self, context):
        self.settings, self.store = context.settings, context.store
        self.renderer = Renderer(self.settings)
        web = self.settings.web
        self.misses = Throttle(web.misses_per_hour)
        self.pages = PageCache()     # rendered order pages by ETag: the same tag, the same page
        self.signin_requests = Throttle(web.signins_per_client_per_hour)
        https = self.renderer.secure
        self.session_cookie = ("__Secure-" if https else "") + "om_session"
        self.csrf_cookie = ("__Secure-" if https else "") + "om_csrf"

    def install(self, app: bottle.Bottle) -> None:
        for method, path, callback in (
            ("GET", "/o/<token>", self.order), ("GET", "/o/<token>/files/<file_id>", self.order_file),
            ("GET", "/o/<token>/girocode.svg", self.order_girocode),
            ("GET", "/account", self.account), ("POST", "/account", self.ask_for_link),
            ("GET", "/signin/<token>", self.confirm_signin), ("POST", "/signin", self.use_signin),
            ("POST", "/account/link", self.new_status_link), ("POST", "/signout", self.sign_out),
            ("GET", "/admin", self.admin), ("GET", "/admin/orders.csv", self.admin_csv),
            ("GET", "/admin/orders/<number>", self.admin_order), ("GET", "/admin/files/<file_id>", self.admin_file),
            ("GET", "/static/<name>", self.static), ("GET", "/favicon.ico", self.favicon),
        ):
            app.route(path, method, callback)

    def reload_templates(self) -> None:
        """SIGHUP: the templates and words read again; pages rendered before are forgotten
        (their ETags carry the templates' fingerprint, so browsers fetch them anew)."""
        i18n.reload()
        self.renderer, self.pages = Renderer(self.settings), PageCache()

    # ---- the customer's order ----------------------------------------------------------

    def order(self, token):
        link, miss = self._link_or_miss(token)
        if miss is not None:
            return miss
        renderer, pages = self.renderer, self.pages     # one set for the whole request, whatever a reload does
        tag = customer_views.etag(link, renderer)
        response.set_header("ETag", tag)
        response.set_header("Cache-Control", "private, no-cache")
        if _matches(tag):
            response.status = 304
            return ""
        lang, html = pages.get(tag) or self._render_order(link, tag, renderer, pages)
        response.set_header("Content-Language", lang)
        return html

    def _render_order(self, link, tag: str, renderer: Renderer, pages: "PageCache") -> tuple[str, bytes]:
        order = customer_views.load_order(link.id)
        lang, page = customer_views.order_page(self.settings, order, renderer)
        rendered = lang, renderer.render("order.html", lang, page=page).encode("utf-8")
        pages.put(tag, rendered)
        return rendered

    def order_file(self, token, file_id):
        link, miss = self._link_or_miss(token)
        if miss is not None:
            return miss
        file_id = user_numbers.whole_number(file_id, 1)
        found = customer_views.public_file(link.id, file_id) if file_id is not None else None
        return self._file(*found) if found else self._not_found()

    def order_girocode(self, token):
        link, miss = self._link_or_miss(token)
        if miss is not None:
            return miss
        svg = customer_views.girocode_svg(self.settings, customer_views.load_order(link.id))
        if svg is None:
            return self._not_found()
        response.content_type = "image/svg+xml"
        response.set_header("Cache-Control", "private, no-cache")   # gone the moment the order is paid
        return svg

    def _link_or_miss(self, token):
        """(a live link, None); else (None, the same 404 for every kind of miss, or 429 after many)."""
        client = self._client()
        if self.misses.blocked(client):
            return None, self._too_many(self.misses, client)
        link = links.find_by_token(token, self.settings, utcnow())
        if link is None:
            self.misses.hit(client)
            return None, self._not_found()
        return link, None

    # ---- signing in by mail -------------------------------------------------------------

    def account(self):
        who = self._visitor()
        if who is None:
            return self._refresh_or(lambda: self._signin_page(i18n.translator(self._lang())("Your orders")))
        lang = self._lang()
        found = customer_views.customer_orders(self.settings, who.email, lang, self.renderer, utcnow())
        return self._html("account.html", lang, visitor=who, orders=found)

    def ask_for_link(self):
        lang, client = self._lang(request.forms.lang), self._client()
        if not self._csrf_ok():
            return self._expired_form(lang)
        if self.signin_requests.blocked(client):
            return self._too_many(self.signin_requests, client)
        self.signin_requests.hit(client)
        typed, next_path = request.forms.email[:300], request.forms.next
        address = signin.normal_address(typed)
        _ = i18n.translator(lang)
        for_owner = _for_owner(next_path)
        if address is None:
            heading = _("Sign in to the dashboard") if for_owner else _("Your orders")
            return self._signin_page(heading, status=400, address=typed, next_path=next_path,
                                     error=_("Please enter an e-mail address like name@example.org."))
        signin.request_link(self.store, self.settings, address, lang=lang, next_path=next_path, now=utcnow())
        sent = (_("If {email} may sign in to the dashboard, we have just sent a sign-in link to that address.",
                  email=address) if for_owner else
                _("If there are orders for {email}, we have just sent a sign-in link to that address.", email=address))
        again = _("The link works once, for 15 minutes. Nothing there? Look in the spam folder, or try again in a few minutes.")
        return self._html("message.html", lang, heading=_("Check your mail"), link=None, lines=[sent, again])

    def confirm_signin(self, token):
        """A page with one button: a link scanner that follows the mail's link does not use it up."""
        return self._html("signin_confirm.html", self._lang(), token=token[:100], csrf=self._csrf_token())

    def use_signin(self):
        lang = self._lang()
        if not self._csrf_ok():
            return self._expired_form(lang)
        used = signin.redeem(self.store, self.settings, request.forms.token[:100], utcnow())
        if used is None:
            _ = i18n.translator(lang)
            return self._html("message.html", lang, status=400, heading=_("This sign-in link does not work"),
                              lines=[_("It has expired or was used already. Ask for a new one.")],
                              link={"url": self.renderer.url("/account"), "label": _("Send me a sign-in link")})
        cookie, email, target = used
        self._set_cookie(self.session_cookie, cookie, max_age=self.settings.web.session_hours * 3600)
        default = "/admin" if signin.is_owner(self.settings, email) else "/account"
        return self._see_other(target or default)

    def new_status_link(self):
        who = self._visitor()
        if who is None or not self._csrf_ok(who):
            return self._expired_form(self._lang())
        order = customer_views.customer_order(who.email, request.forms.number)
        if order is None:
            return self._not_found()
        if links.is_expired(order, self.settings, utcnow()):
            order = links.relink(self.store, self.settings, order.number, author="customer", mail=True)
        return self._see_other(f"/o/{order.status_token}")

    def sign_out(self):
        who = self._visitor()
        if who is not None:
            if not self._csrf_ok(who):
                return self._expired_form(self._lang())
            signin.sign_out(self.store, who)
        self._set_cookie(self.session_cookie, "", max_age=0)
        return self._see_other("/account")

    # ---- the owner's dashboard ------------------------------------------------------------

    def admin(self):
        refused = self._unless_owner()
        if refused is not None:
            return refused
        q, sort = request.query.q, self._sort()
        try:
            view = dashboard.dashboard(self.settings, q, sort, _page(request.query.page), self.renderer)
            status = 200
        except FilterSyntaxError as exc:
            view, status = dashboard.failed(q, sort, str(exc)), 400
        return self._html("admin.html", self.settings.shop.locale, status=status, visitor=self._visitor(), dash=view)

    def admin_csv(self):
        refused = self._unless_owner()
        if refused is not None:
            return refused
        q, sort = request.query.q, self._sort()
        try:
            dashboard.check_filter(q)
        except FilterSyntaxError as exc:
            return self._plain(400, f"the filter does not work: {exc}")
        response.content_type = "text/csv; charset=utf-8"
        response.set_header("Content-Disposition", 'attachment; filename="orders.csv"')
        response.set_header("Cache-Control", "no-store")
        return dashboard.csv_chunks(self.settings, q, sort)

    def admin_order(self, number):
        refused = self._unless_owner()
        if refused is not None:
            return refused
        try:
            page = dashboard.order_detail(self.settings, number, self.renderer, utcnow())
        except OrderNotFound:
            return self._not_found()
        return self._html("admin_order.html", self.settings.shop.locale, visitor=self._visitor(), page=page)

    def admin_file(self, file_id):
        refused = self._unless_owner()
        if refused is not None:
            return refused
        file_id = user_numbers.whole_number(file_id, 1)
        found = dashboard.any_file(file_id) if file_id is not None else None
        return self._file(*found, cache="private, no-store") if found else self._not_found()

    def _unless_owner(self):
        """None for a signed-in owner; else the page to show instead (sign in, or 403)."""
        lang = self.settings.shop.locale
        who = self._visitor()
        if who is not None and who.is_owner:
            return None
        _ = i18n.translator(lang)
        if who is not None:
            return self._html("message.html", lang, status=403, heading=_("Not for this address"), link=None,
                              lines=[_("{email} may not see the dashboard.", email=who.email)])
        next_path = request.path + (f"?{request.query_string}" if request.query_string else "")
        return self._refresh_or(lambda: self._signin_page(_("Sign in to the dashboard"), next_path=next_path,
                                                          lang=lang))

    def _sort(self) -> str:
        sort = request.query.sort
        return sort if sort in dashboard.SORTS else "newest"

    # ---- files and static ---------------------------------------------------------------

    def _file(self, attachment, data: bytes, cache: str = "private, max-age=3600"):
        ctype = attachment.content_type.strip().lower()
        ctype = ctype if _MIME.fullmatch(ctype) else "application/octet-stream"
        tag = f'"{attachment.blob_id}"'
        response.set_header("ETag", tag)
        response.set_header("Cache-Control", cache)
        response.content_type = ctype
        response.set_header("Content-Disposition",
                            _disposition("inline" if ctype in INLINE_IMAGES else "attachment", attachment.filename))
        if _matches(tag):
            response.status = 304
            return b""
        return data

    def static(self, name):
        if not _STATIC.fullmatch(name):
            return self._not_found()
        for folder in self.renderer.static_dirs:
            if (folder / name).is_file():
                found = bottle.static_file(name, root=str(folder))
                found.set_header("Cache-Control", "public, max-age=86400")
                return found
        return self._not_found()

    def favicon(self):
        return self.static("icon.svg")

    # ---- answers ---------------------------------------------------------------------------

    def _html(self, name: str, lang: str, *, status: int = 200, cache: str = "no-store", **context) -> str:
        response.status = status
        response.set_header("Content-Language", lang)
        response.set_header("Cache-Control", cache)
        return self.renderer.render(name, lang, **context)

    def _not_found(self) -> str:
        """The one 404 of every miss: nothing in it depends on what was asked."""
        return self._html("not_found.html", self._lang(), status=404)

    def _too_many(self, throttle: Throttle, client: str) -> str:
        response.set_header("Retry-After", str(throttle.retry_after(client)))
        return self._plain(429, "Too many requests from your address; please wait a while.")

    def _plain(self, status: int, text: str) -> str:
        response.status = status
        response.content_type = "text/plain; charset=utf-8"
        response.set_header("Cache-Control", "no-store")
        return text + "\n"

    def _signin_page(self, heading: str, *, status: int = 200, next_path: str = "", address: str = "",
                     error: str = "", lang: str | None = None) -> str:
        return self._html("signin.html", lang or self._lang(), status=status, heading=heading,
                          csrf=self._csrf_token(), next_path=signin.safe_next(next_path), address=address, error=error,
                          for_owner=_for_owner(next_path))

    def _expired_form(self, lang: str) -> str:
        _ = i18n.translator(lang)
        return self._html("message.html", lang, status=400, heading=_("Please try again"),
                          lines=[_("The form was too old, or your browser does not keep cookies for this site.")],
                          link={"url": self.renderer.url("/account"), "label": _("Back")})

    def _refresh_or(self, page):
        """Coming from another site (a link in webmail), the browser withholds our SameSite=Strict
        session cookie; one reload from our own page brings it along."""
        if (request.get_header("Sec-Fetch-Site") == "cross-site" and request.method == "GET"
                and not request.get_cookie(self.session_cookie)):
            return self._html("refresh.html", self._lang())
        return page()

    def _see_other(self, path: str) -> str:
        """303 to a path of ours (set on `response`, so cookies set before go along)."""
        response.status = 303
        response.set_header("Location", self.renderer.url(path))
        response.set_header("Cache-Control", "no-store")
        return ""

    # ---- who asks ----------------------------------------------------------------------------

    def _client(self) -> str:
        return client_address(self.settings, request.environ)

    def _lang(self, chosen: str = "") -> str:
        """The language a form was shown in, else the browser's choice, else the shop's."""
        if chosen in i18n.languages():
            return chosen
        return i18n.negotiate(request.get_header("Accept-Language", ""), self.settings.shop.locale)

    def _visitor(self):
        if _VISITOR not in request.environ:
            request.environ[_VISITOR] = signin.visitor(self.settings, request.get_cookie(self.session_cookie), utcnow())
        return request.environ[_VISITOR]

    def _csrf_token(self) -> str:
        """The session's token when signed in; else a random one in a cookie (double submit)."""
        who = self._visitor()
        if who is not None:
            return who.csrf
        token = request.get_cookie(self.csrf_cookie) or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{43}", token):
            token = secrets.token_urlsafe(32)
            self._set_cookie(self.csrf_cookie, token)
        return token

    def _csrf_ok(self, who=None) -> bool:
        who = who or self._visitor()
        expected = who.csrf if who is not None else request.get_cookie(self.csrf_cookie)
        return signin.same_token(request.forms.csrf, expected)

    def _set_cookie(self, name: str, value: str, max_age: int | None = None) -> None:
        options = {"path": self.renderer.url("/"), "httponly": True, "samesite": "strict",
                   "secure": self.renderer.secure}
        if max_age is not None:
            options["max_age"] = max_age
        response.set_cookie(name, value, **options)


class PageCache:
    """The last few hundred rendered order pages, by ETag (which changes with anything on the page)."""

    def __init__(self, size: int = 256):
        self.size, self._pages, self._lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, tag: str):
        with self._lock:
            found = self._pages.get(tag)
            if found is not None:
                self._pages.move_to_end(tag)
            return found

    def put(self, tag: str, page) -> None:
        with self._lock:
            self._pages[tag] = page
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)


def _matches(tag: str) -> bool:
    wanted = request.get_header("If-None-Match", "")
    return any(part.strip().removeprefix("W/") == tag for part in wanted.split(",")) or wanted.strip() == "*"


def _for_owner(next_path: str) -> bool:
    """Whether a sign-in form leads to the owner's dashboard (its words differ from a customer's)."""
    path = signin.safe_next(next_path)
    return path == "/admin" or path.startswith(("/admin/", "/admin?"))


def _page(text: str) -> int:
    return user_numbers.whole_number(text, 1, 999_999) or 1


def _disposition(kind: str, filename: str) -> str:
    """RFC 6266: an ASCII fallback name and the real one, UTF-8, percent-encoded."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename) or "file"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
