"""Notifications: one outbox row becomes one mail, from templates, in the reader's language.

Templates are Jinja2 files in `templates/mail/`, one pair per kind:
`<kind>.txt` (its first line is `Subject: …`, then a blank line, then the
text part) and `<kind>.html` (autoescaped). Their sentences are English
inside `_()`/`ngettext()` (Jinja2's i18n extension, newstyle gettext); the
words of each language come from its catalog (`daemon.translations`), so a
phrase is fixed once and a new language is one catalog. A shop overrides
any template — or the shared `_layout.html` and `_footer.*` — by putting a
file of the same name into `[outbound] templates_dir`; a file named
`<kind>.<lang>.txt`/`.html` there overrides for that language only (the
layout of the three-language templates before the catalogs, still honoured).
Single messages are overridden by a catalog in that folder. Babel formats
money ("24,90 €", "€24.90") and dates; plurals follow the catalog's rule.

Customer mails (any kind about an order that is not an owner kind) use the
order's language, owner mails the shop's. If a shop's template fails to
render, the built-in one is used (and the error logged): a typo in an
override must not stop the shop's mail. Templates are read once per process.

Headers: From the shop, Reply-To the order's token address (customer reply
or owner answer), Message-ID fixed at queue time, In-Reply-To/References
chaining the earlier mails of the order to the same reader (and the
customer's own replies) so clients show one thread; Auto-Submitted and
X-Auto-Response-Suppress (RFC 3834). `daemon.mail.mime` writes the bytes.
"""
from __future__ import annotations

import datetime as dt
import decimal
import email
import email.policy
import functools
import logging
import re
import secrets
import string
from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace as View
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

import jinja2
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from markupsafe import Markup

from daemon import translations
from daemon.mail import mime, tokens
from daemon.payments import girocode
from daemon.mail.addresses import token_address
from daemon.config import Settings
from daemon.mail.parsing import HEADER_END
from daemon.orders.as_json import items_total
from daemon.translations import N_
from daemon.mail.richtext import quotes_styled_for_mail, sanitize_html, text_to_html
from daemon.store.models import Attachment, Blob, Event, Order, OrderItem, OutboxMessage, load_raw
from daemon.mail.trimming import html_to_text

log = logging.getLogger("ordermail.notify")

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "templates" / "mail"
CUSTOMER_KINDS = frozenset({"created", "paid", "shipped", "cancelled", "refunded", "message",
                            "payment_reminder", "files_refused"})
OWNER_KINDS = frozenset({"reply_forward", "unmatched_forward", "receipt", "owner_alert",
                         "owner_digest", "new_order"})
GIROCODE_KINDS = frozenset({"created", "payment_reminder"})   # mails that ask for the payment
WEB_KINDS = frozenset({"signin_link"})   # to whoever asked on a page; data["lang"] is that page's language
KINDS = CUSTOMER_KINDS | OWNER_KINDS | WEB_KINDS
MAX_REFERENCES = 20
_BLANK_RUNS = re.compile(r"\n{3,}")
_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")

# Tracking pages of common carriers; the code is URL-quoted into {code}.
CARRIERS = {
    "dhl": ("DHL", "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode={code}"),
    "deutschepost": ("Deutsche Post", "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode={code}"),
    "dpd": ("DPD", "https://tracking.dpd.de/status/de_DE/parcel/{code}"),
    "hermes": ("Hermes", "https://www.myhermes.de/empfangen/sendungsverfolgung/sendungsinformation#{code}"),
    "evri": ("Evri", "https://www.evri.com/track/parcel/{code}"),
    "gls": ("GLS", "https://gls-group.com/DE/de/paketverfolgung?match={code}"),
    "ups": ("UPS", "https://www.ups.com/track?tracknum={code}"),
    "fedex": ("FedEx", "https://www.fedex.com/fedextrack/?trknbr={code}"),
    "laposte": ("La Poste", "https://www.laposte.fr/outils/suivre-vos-envois?code={code}"),
    "colissimo": ("Colissimo", "https://www.laposte.fr/outils/suivre-vos-envois?code={code}"),
    "chronopost": ("Chronopost", "https://www.chronopost.fr/tracking-no-cms/suivi-page?listeNumerosLT={code}"),
    "royalmail": ("Royal Mail", "https://www.royalmail.com/track-your-item#/tracking-results/{code}"),
    "postat": ("Österreichische Post", "https://www.post.at/s/sendungsdetails?snr={code}"),
    "swisspost": ("Swiss Post", "https://service.post.ch/ekp-web/ui/entry/search/{code}"),
    "usps": ("USPS", "https://tools.usps.com/go/TrackConfirmAction?tLabels={code}"),
}
CARRIER_ALIASES = {"lapostecolissimo": "colissimo", "post": "deutschepost", "österreichischepost": "postat",
                   "osterreichischepost": "postat", "diepost": "postat", "postch": "swisspost",
                   "dieschweizerischepost": "swisspost", "dhlexpress": "dhl", "dhlparcel": "dhl"}


class TemplateMissing(LookupError):
    """No template for this kind and language — neither the shop's nor built in."""


@dataclass(frozen=True)
class OutgoingMail:
    """A composed mail: the envelope and the bytes (CRLF line endings)."""
    envelope_from: str
    recipient: str
    message_id: str
    subject: str
    raw: bytes

    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)


def compose(settings: Settings, row: OutboxMessage, now: dt.datetime) -> email.message.EmailMessage:
    """The mail for one outbox row, as an EmailMessage (for tests and tools)."""
    return render(settings, row, now).message()


def render(settings: Settings, row: OutboxMessage, now: dt.datetime, batch: "Batch | None" = None) -> OutgoingMail:
    """The mail for one outbox row; `now` (naive UTC) dates it and its tokens.

    `batch` holds what the row's mail reads from the store (its order, items,
    event, files, earlier mails); the outbox loads it once for a whole batch.
    """
    batch = batch or Batch([row])
    lang = language(settings, row)
    context = build_context(settings, row, lang, now, batch)
    subject, text, html = _render_templates(settings, row.kind, lang, context)
    headers = _headers(settings, row, subject, now, context, batch)
    body = _body(settings, row, text, html, context)
    return OutgoingMail(envelope_from(settings, row, now), row.recipient, row.message_id, subject,
                        mime.document(headers, body))


def for_customer(row: OutboxMessage) -> bool:
    """A mail about an order to anyone but the owner is the customer's (any kind not the owner's)."""
    return row.order_id is not None and row.kind not in OWNER_KINDS


def language(settings: Settings, row: OutboxMessage) -> str:
    if for_customer(row):
        return order_language(settings, row.order)
    asked = (row.data or {}).get("lang")
    if row.kind in WEB_KINDS and asked in translations.languages():
        return asked
    return settings.shop.locale


def order_language(settings: Settings, order) -> str:
    """The customer's language: the order's, where we speak it; else the shop's."""
    code = (order.locale or "")[:2].lower()
    return code if code in translations.languages() else settings.shop.locale


def envelope_from(settings: Settings, row: OutboxMessage, now: dt.datetime) -> str:
    """The order's bounce address (VERP), so a bounce finds its order; else the shop's."""
    if row.order_id is None:
        return settings.shop.address
    return token_address(settings, row.order, tokens.BOUNCE, now.date())


# ---- templates --------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def environment(templates_dir: str = "", lang: str = translations.FALLBACK) -> jinja2.Environment:
    """Jinja2 speaking `lang` (its catalog, the shop's over ours), with the shop's
    folder first (if any), then the built-in templates. One per language: the
    i18n extension binds its gettext to the environment."""
    folders = [templates_dir, str(BUILTIN_DIR)] if templates_dir else [str(BUILTIN_DIR)]
    # Templates are read once per process (auto_reload off: a stat per template per mail
    # costs more than rendering); SIGHUP clears this cache (daemon.reload).
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(folders), extensions=["jinja2.ext.i18n"],
                             autoescape=jinja2.select_autoescape(["html"], default_for_string=False),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             auto_reload=False, cache_size=1000)
    env.install_gettext_translations(translations.get(lang, templates_dir), newstyle=True)
    env.filters["one_line"] = mime.clean
    return env


def reload_templates() -> None:
    """SIGHUP: the templates and the catalogs are read again when next used."""
    translations.reload()
    environment.cache_clear()


def _render_templates(settings: Settings, kind: str, lang: str, context: dict) -> tuple[str, str, str]:
    folder = settings.outbound.templates_dir
    try:
        return _render_with(environment(folder, lang), kind, lang, context)
    except jinja2.TemplateNotFound as missing:
        raise TemplateMissing(f"no mail template {missing.name}") from None
    except jinja2.TemplateError as exc:
        if not folder:
            raise
        log.error("shop template for %s.%s failed (%s: %s); using the built-in one",
                  kind, lang, type(exc).__name__, exc)
        return _render_with(environment("", lang), kind, lang, context)


def _render_with(env: jinja2.Environment, kind: str, lang: str, context: dict) -> tuple[str, str, str]:
    text_template = env.select_template([f"{kind}.{lang}.txt", f"{kind}.txt"])
    subject, text = _split_subject(text_template.render(context), text_template.name)
    html = env.select_template([f"{kind}.{lang}.html", f"{kind}.html"]).render({**context, "subject": subject})
    return subject, text, html


def _split_subject(rendered: str, name: str) -> tuple[str, str]:
    first, _, rest = rendered.lstrip("\n").partition("\n")
    if not first.startswith("Subject:"):
        raise jinja2.TemplateError(f"{name} must begin with a line 'Subject: …'")
    return mime.clean(first[len("Subject:"):]), tidy_text(rest)


def tidy_text(text: str) -> str:
    """No trailing spaces (but the "-- " signature line), at most one blank line in a row."""
    lines = [line if line == "-- " else line.rstrip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"


def check_templates(settings: Settings) -> list[str]:
    """Compile every mail template (the shop's and the built-in ones); returns the problems."""
    env, problems = environment(settings.outbound.templates_dir), []
    names = set(env.list_templates(extensions=["txt", "html"]))
    names |= {f"{kind}.{ext}" for kind in KINDS for ext in ("txt", "html")}
    for name in sorted(names):
        try:
            env.get_template(name)
        except jinja2.TemplateError as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return problems


# ---- what the templates see ----------------------------------------------------------

def build_context(settings: Settings, row: OutboxMessage, lang: str, now: dt.datetime, batch: "Batch") -> dict:
    order = row.order if row.order_id is not None else None
    event = row.event if row.event_id is not None else None
    context = {
        "lang": lang, "kind": row.kind, "recipient": row.recipient, "data": row.data or {},
        "shop": {"name": mime.clean(settings.shop.name), "address": settings.shop.address,
                 "url": settings.shop.base_url, "files_address": settings.shop.files_address},
        "order": order_view(settings, order, lang, batch.items[order.id]) if order is not None else None,
        "event": event_view(event, lang) if event is not None else no_event(row.kind, now, lang),
        "files": View(attached=[], linked=[], inline=[]),
        "money": functools.partial(money, lang=lang),
        "date": functools.partial(day, lang=lang),
        "plural": functools.partial(plural, lang=lang),   # for shops' templates written before the catalogs
        "today": day(now, lang=lang),
        "girocode": (girocode_view(settings, order, lang)
                     if order is not None and row.kind in GIROCODE_KINDS else None),
    }
    extra = KIND_CONTEXT.get(row.kind)
    if extra is not None:
        context.update(extra(settings, row, lang, context, batch))
    return context


def order_view(settings: Settings, order, lang: str, items=None) -> View:
    currency = order.currency
    method = settings.payment.get(order.payment_method)
    total = money(order.total, currency, lang=lang)
    name = mime.clean(order.customer_name)
    carrier_name, tracking_url = tracking_link(order.carrier, order.tracking_code)
    items = sorted(order.items if items is None else items, key=lambda i: i.position)
    difference = order.total - items_total(items)
    return View(
        number=order.number, name=name, email=order.customer_email,
        items=[View(name=mime.clean(i.name), sku=i.sku, quantity=i.quantity,
                    price=money(i.unit_price, currency, lang=lang),
                    line_total=money(i.unit_price * i.quantity, currency, lang=lang))
               for i in items],
        total=total, amount=order.total, currency=currency, created=day(order.created_at, lang=lang),
        adjustment=money(difference, currency, lang=lang) if difference else None,
        adjustment_label=translations.get(lang, settings.outbound.templates_dir).gettext(ADJUSTMENT_LABEL),
        status_url=settings.status_url(order.status_token),
        admin_url=dashboard_url(settings, f"number:{order.number}"),
        payment_method=order.payment_method,
        payment_label=(method.label if method and method.label else order.payment_method),
        instructions=instructions(settings, method, lang, total=total, number=order.number, name=name),
        tracking_code=mime.clean(order.tracking_code) or None,
        carrier=carrier_name, tracking_url=tracking_url,
        refunded=money(order.refunded_amount, currency, lang=lang) if order.refunded_amount else None,
        paid=bool(order.paid_at), shipped=bool(order.shipped_at), cancelled=bool(order.cancelled_at),
    )


def no_event(kind: str, now: dt.datetime, lang: str) -> View:
    """What a template sees as `event` for a row queued without one (reminders, digests)."""
    return View(kind=kind, author="system", subject="", text="", html=Markup(""), data={},
                created=day(now, lang=lang), reason=None, is_update=False)


def dashboard_url(settings: Settings, expr: str) -> str:
    """The owner's dashboard showing what a filter expression finds."""
    return f"{settings.shop.base_url.rstrip('/')}/admin?q={quote(expr, safe='')}"


def event_view(event: Event, lang: str) -> dict:
    text, html = event_bodies(event)
    data = event.data or {}
    return View(kind=event.kind, author=event.author, subject=mime.clean(event.subject),
                text=text, html=Markup(html), data=data, created=day(event.created_at, lang=lang),
                reason=mime.clean(data.get("reason") or "") or None, is_update=bool(data.get("update")))


def event_bodies(event: Event) -> tuple[str, str]:
    """The event's text as (plain, safe HTML); the plain one is rendered from the HTML
    when the owner wrote HTML, so lists, links and quotes read the same in both."""
    html = sanitize_html(event.body_html) if event.body_html.strip() else ""
    text = event.body_text.strip("\n")
    if html and (not text or html != text_to_html(event.body_text)):
        text = html_to_text(html)
    if not html and text:
        html = text_to_html(text)
    return text, html


def instructions(settings: Settings, method, lang: str, *, total: str, number: str, name: str) -> str:
    """The payment method's instructions in the reader's language, placeholders filled in
    ({total}, {number}, {name}, and the account's {iban}, {bic}, {account_holder})."""
    template = method.instructions_for(lang, settings.shop.locale) if method else ""
    if not template:
        return ""
    return string.Formatter().vformat(template, (), {
        "total": total, "number": number, "name": name, "iban": method.iban_formatted,
        "bic": method.bic, "account_holder": method.account_holder})


def girocode_view(settings: Settings, order, lang: str) -> View | None:
    """The GiroCode of an unpaid transfer, with its data as text, or None (daemon.payments.girocode says when)."""
    code = girocode.for_order(settings, order)
    if code is None:
        return None
    method = settings.payment[order.payment_method]
    return View(code=code, holder=code.holder, iban=method.iban_formatted, bic=code.bic,
                amount=money(code.amount, order.currency, lang=lang), reference=code.reference,
                content_id=f"girocode-{secrets.token_hex(8)}@{settings.shop.domain}")


def tracking_link(carrier: str | None, code: str | None) -> tuple[str | None, str | None]:
    """(the carrier's name as shown, its tracking URL for this code or None)."""
    carrier = mime.clean(carrier) or None
    if not carrier:
        return None, None
    key = re.sub(r"[^a-zà-ÿ]", "", carrier.lower())
    key = CARRIER_ALIASES.get(key, key)
    known = CARRIERS.get(key)
    if known is None:
        return carrier, None
    name, url = known
    code = mime.clean(code)
    return name, url.format(code=quote(code, safe="")) if code else None


# The line between the items and the total where they differ (order_json.items_total says why).
ADJUSTMENT_LABEL = N_("Shipping, fees and discounts")


def money(amount, currency: str = "EUR", *, lang: str) -> str:
    if amount is None:
        return ""
    return _money(str(amount), currency, lang)


@functools.lru_cache(maxsize=4096)
def _money(amount: str, currency: str, lang: str) -> str:
    """Babel's formatting is slow (~0.3 ms) and shop prices repeat: cached by value."""
    return format_currency(decimal.Decimal(amount), currency, locale=_locale(lang))


def day(moment, *, lang: str) -> str:
    if not moment:
        return ""
    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return _day(moment.date() if isinstance(moment, dt.datetime) else moment, lang)


@functools.lru_cache(maxsize=1024)
def _day(date: dt.date, lang: str) -> str:
    return format_date(date, "long", locale=_locale(lang))


@functools.lru_cache(maxsize=16)
def _locale(lang: str) -> Locale:
    return Locale.parse(lang)


def plural(n: int, one: str, other: str, *, lang: str) -> str:
    """`one` or `other` by the language's plural rule, with {n} filled in."""
    form = _locale(lang).plural_form(n)
    return (one if form == "one" else other).replace("{n}", str(n))


# ---- per kind ------------------------------------------------------------------------

def _message_files(settings: Settings, row: OutboxMessage, lang: str, context: dict, batch: "Batch") -> dict:
    """The owner's files: attached (inline images first) up to the cap, linked beyond it."""
    if row.event_id is None:
        return {}
    found = sorted(batch.files[row.event_id], key=lambda a: (a.content_id is None, a.id))
    budget, files = settings.outbound.attachments_max_bytes, {"attached": [], "linked": [], "inline": []}
    for attachment in found:
        view = View(filename=mime.safe_filename(attachment.filename), size=_size(attachment.size, lang),
                    id=attachment.id, content_type=attachment.content_type,
                    content_id=(attachment.content_id or "").strip("<> ") or None)
        if attachment.size <= budget:
            budget -= attachment.size
            files["inline" if view.content_id else "attached"].append(view)
        else:
            files["linked"].append(view)
    if files["linked"]:
        context["event"].html = Markup(_unlink_images(str(context["event"].html), files["linked"]))
    return {"files": View(**files)}


def _unlink_images(html: str, linked: list[dict]) -> str:
    """An inline image left out (over the cap) becomes its name instead of a broken image."""
    for view in linked:
        if view.content_id:
            pattern = re.compile(r'<img\b[^>]*\bsrc="cid:' + re.escape(view.content_id) + r'"[^>]*>')
            html = pattern.sub(lambda _: f"[{Markup.escape(view.filename)}]", html)
    return html


def _reply_forward(settings: Settings, row: OutboxMessage, lang: str, context: dict, batch: "Batch") -> dict:
    event, order = context["event"], context["order"]
    data = event.data
    return {"reply": View(
        from_customer=bool(context["data"].get("from_customer", True)),
        sender=mime.clean(data.get("from") or (order.email if order is not None else "")),
        text=event.text, html=Markup(quotes_styled_for_mail(str(event.html))),
        files_left_out=int(data.get("files_left_out") or 0),
        attached=row.inbound_id is not None)}


def _unmatched_forward(settings: Settings, row: OutboxMessage, lang: str, context: dict, batch: "Batch") -> dict:
    from daemon.mail.parsing import parse_mail   # the parser is only needed here
    if row.inbound_id is None or row.inbound.raw_pruned_at is not None:   # pruned: a failed forward sent again
        return {"original": View(sender="", to="", subject="", date="", text="", cut=False, files=0,
                                 address=None)}
    inbound = row.inbound
    mail = parse_mail(inbound.raw, envelope_from=inbound.envelope_from)
    text = mail.text or (html_to_text(mail.html) if mail.html else "")
    sender = f"{mail.from_name} <{mail.from_address}>" if mail.from_name else (mail.from_address or "")
    return {"original": View(
        sender=mime.clean(sender), to=mime.clean(", ".join(mail.to)),
        subject=mime.clean(mail.subject), date=day(mail.date, lang=lang) if mail.date else "",
        text=text[:5000], cut=len(text) > 5000, files=len(mail.attachments),
        address=mail.from_address)}


def _digest(settings: Settings, row: OutboxMessage, lang: str, context: dict, batch: "Batch") -> dict:
    sections = []
    for section in context["data"].get("sections", []):
        entries = [View(**{**entry, "total": money(entry["total"], entry["currency"], lang=lang),
                           "created": day(entry["created"], lang=lang), "name": mime.clean(entry["name"])})
                   for entry in section.get("orders", [])]
        sections.append(View(**{**section, "orders": entries}))
    activity = [View(**entry) for entry in context["data"].get("activity", [])]
    return {"sections": sections, "open_total": sum(s.count for s in sections), "activity": activity}


KIND_CONTEXT = {"created": _message_files, "paid": _message_files, "shipped": _message_files,
                "cancelled": _message_files, "refunded": _message_files, "message": _message_files,
                "reply_forward": _reply_forward, "unmatched_forward": _unmatched_forward,
                "owner_digest": _digest}


def _size(n: int, lang: str) -> str:
    unit, value = ("MB", n / 1_048_576) if n >= 1_048_576 else ("KB", max(n / 1024, 0.1))
    return format_decimal(round(value, 1), format="0.0", locale=_locale(lang)) + f"\u00a0{unit}"   # 1,5 or 1.5


# ---- headers --------------------------------------------------------------------------

def _headers(settings: Settings, row: OutboxMessage, subject: str, now: dt.datetime,
             context: dict, batch: "Batch") -> list[str]:
    shop = settings.shop
    headers = [
        mime.raw_header("From", mime.address(shop.address, shop.name)),
        mime.raw_header("To", mime.address(row.recipient, _recipient_name(row))),
        mime.header("Subject", subject),
        "Date: " + format_datetime(now.replace(tzinfo=dt.timezone.utc)),
        mime.raw_header("Message-ID", row.message_id),
    ]
    reply_to = _reply_to(settings, row, now, context)
    if reply_to:
        headers.append(mime.raw_header("Reply-To", reply_to))
    chain = thread_ids(row, batch)
    if chain:
        headers.append(mime.raw_header("In-Reply-To", chain[-1]))
        headers.append(mime.raw_header("References", " ".join(chain)))
    headers += ["Auto-Submitted: auto-generated", "X-Auto-Response-Suppress: All"]
    if row.order_id is not None:
        headers.append(mime.header("X-Ordermail-Order", row.order.number))
    return headers


def _recipient_name(row: OutboxMessage) -> str:
    if for_customer(row) and row.recipient == row.order.customer_email:
        return row.order.customer_name
    return ""


def _reply_to(settings: Settings, row: OutboxMessage, now: dt.datetime, context: dict) -> str | None:
    """Where an answer goes: customers into their order, the owner's answer to a
    forwarded reply into its order, an answer to unmatched mail to its sender, an
    answer to a receipt to the command address — never back into our own inbox."""
    shop = settings.shop
    if for_customer(row):
        return mime.address(token_address(settings, row.order, tokens.CUSTOMER_REPLY, now.date()), shop.name)
    if row.order_id is not None and row.kind == "reply_forward":
        return mime.address(token_address(settings, row.order, tokens.OWNER_ANSWER, now.date()), shop.name)
    if row.kind == "unmatched_forward" and context["original"].address:
        try:
            return mime.address(context["original"].address)
        except mime.BadAddress:
            return None
    if row.kind == "receipt" and settings.owner.secret:
        return mime.address(settings.command_address, shop.name)
    return None


def thread_ids(row: OutboxMessage, batch: "Batch | None" = None) -> list[str]:
    """Message-IDs this mail follows: earlier mails of the order to the same reader
    (sent or still to be sent: a client threads on ids it has not seen yet too),
    and for the customer her own replies — oldest first, at most MAX_REFERENCES."""
    batch = batch or Batch([row])
    found: list[tuple] = []
    if row.order_id is not None:
        found += [(m.created_at, 1, m.id, m.message_id) for m in batch.mails[row.order_id]
                  if m.id < row.id and m.recipient == row.recipient and m.state != "failed"]
        if for_customer(row):
            found += [(e.created_at, 0, e.id, e.message_id) for e in batch.replies[row.order_id]
                      if e.created_at <= row.created_at]
    answered = (row.data or {}).get("in_reply_to")
    if isinstance(answered, str):
        found.append((row.created_at, 2, 0, answered))
    ids = list(dict.fromkeys(i.strip() for *_, i in sorted(found) if i and _MESSAGE_ID.match(i.strip())))
    if len(ids) > MAX_REFERENCES:
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    return ids


class Batch:
    """What the mails of some outbox rows read from the store, in six queries for all of them."""

    def __init__(self, rows: list[OutboxMessage]):
        order_ids = list({r.order_id for r in rows if r.order_id is not None})
        event_ids = list({r.event_id for r in rows if r.event_id is not None})
        self.orders = {o.id: o for o in _where_in(Order.select(), Order.id, order_ids)}
        self.events = {e.id: e for e in _where_in(Event.select(), Event.id, event_ids)}
        self.items, self.files = defaultdict(list), defaultdict(list)
        self.mails, self.replies = defaultdict(list), defaultdict(list)
        for item in _where_in(OrderItem.select(), OrderItem.order, order_ids):
            self.items[item.order_id].append(item)
        for attachment in _where_in(Attachment.select().order_by(Attachment.id), Attachment.event, event_ids):
            self.files[attachment.event_id].append(attachment)
        mails = OutboxMessage.select(OutboxMessage.id, OutboxMessage.order, OutboxMessage.recipient,
                                     OutboxMessage.message_id, OutboxMessage.created_at, OutboxMessage.state)
        for mail_ in _where_in(mails, OutboxMessage.order, order_ids):
            self.mails[mail_.order_id].append(mail_)
        replies = (Event.select(Event.id, Event.order, Event.message_id, Event.created_at)
                   .where((Event.kind == "customer_reply") & Event.message_id.is_null(False)))
        for reply in _where_in(replies, Event.order, order_ids):
            self.replies[reply.order_id].append(reply)
        for row in rows:   # the rows read their order and event from here, not from the store
            if row.order_id in self.orders:
                row.order = self.orders[row.order_id]
            if row.event_id in self.events:
                row.event = self.events[row.event_id]


def _where_in(query, column, ids: list):
    return list(query.where(column.in_(ids))) if ids else []


# ---- body -----------------------------------------------------------------------------

def _body(settings: Settings, row: OutboxMessage, text: str, html: str, context: dict) -> mime.Part:
    alternative = mime.multipart("alternative", [mime.text(text), mime.text(html, "html")])
    files, code = context["files"], context["girocode"]
    inline = []
    if files.inline:
        blobs = _blobs(files.inline)
        inline += [mime.binary(blobs[f.id], f.content_type, f.filename, inline_id=f.content_id) for f in files.inline]
    if code is not None:
        inline.append(mime.binary(code.code.png(), "image/png", "girocode.png", inline_id=code.content_id))
    if inline:
        alternative = mime.multipart("related", [alternative] + inline)
    parts = [alternative]
    if files.attached:
        blobs = _blobs(files.attached)
        parts += [mime.binary(blobs[f.id], f.content_type, f.filename) for f in files.attached]
    if (row.kind in ("reply_forward", "unmatched_forward") and row.inbound_id is not None
            and row.inbound.raw_pruned_at is None):
        parts.append(_original(settings, row.inbound))
    return mime.multipart("mixed", parts)


def _original(settings: Settings, inbound) -> mime.Part:
    """The received mail attached whole — unless it is bigger than [outbound] attaches.

    Then only its header block goes with the forward, and where the whole is
    kept: a 25 MB photo would fill the owner's mailbox (customers cannot
    send files), and rendering it would cost the worker several times its size.
    """
    limit = settings.outbound.attachments_max_bytes
    if inbound.size <= limit:
        return mime.message(inbound.raw)
    head = load_raw(inbound.id, limit=HEADERS_READ) or b""
    end = HEADER_END.search(head)
    head = head[:end.start()] + b"\r\n" if end else head
    note = (f"The original mail is {inbound.size / 2**20:.1f} MB, over the {limit / 2**20:.1f} MB "
            f"attached to mail at most, so only its headers are attached. It is kept whole: "
            f"ordermail inbound show {inbound.id}")
    return mime.multipart("mixed", [mime.text(note), mime.binary(head, "text/rfc822-headers", "original-headers.txt")])


HEADERS_READ = 256 * 1024   # enough for any real header block


def _blobs(views: list[dict]) -> dict[int, bytes]:
    query = (Attachment.select(Attachment.id, Blob.data).join(Blob)
             .where(Attachment.id.in_([v.id for v in views])))
    return {a.id: a.blob.data for a in query}
