"""Settings: the TOML configuration, loaded once into a frozen value.

Every default lives here. `load_settings` reads a file, rejects unknown keys
and wrongly typed values with one line naming the key, and returns a
`Settings` that callers pass on explicitly (no module-level config).
"""
from __future__ import annotations

import codecs
import dataclasses
import functools
import ipaddress
import os
import re
import string
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from daemon import translations
from daemon.errors import ConfigError

SUPPORTED_LOCALES = translations.languages()   # the languages with a catalog (a new catalog, a new language)
PLACEHOLDERS = frozenset({"total", "number", "name", "iban", "bic", "account_holder"})
ACCOUNT_KEYS = ("iban", "bic", "account_holder")
PLAUSIBLE_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")   # one @, a dot in the domain, no spaces
LOG_LEVELS = ("debug", "info", "warning", "error")


def _at_least_one(section: str, values, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(values, key) < 1:
            raise ConfigError(f"[{section}] {key} must be at least 1, not {getattr(values, key)}")


def _not_negative(section: str, values, keys: tuple[str, ...], zero: str = "never") -> None:
    """`zero`: what 0 means for these keys, said in the error."""
    for key in keys:
        if getattr(values, key) < 0:
            raise ConfigError(f"[{section}] {key} must be 0 ({zero}) or more, not {getattr(values, key)}")


def _check_time(section: str, key: str, value: str) -> None:
    """A local time of day "HH:MM", or "" for none."""
    hour, sep, minute = value.partition(":")
    if value and not (sep and hour.isdigit() and minute.isdigit() and len(minute) == 2
                      and int(hour) < 24 and int(minute) < 60):
        raise ConfigError(f'[{section}] {key} must be HH:MM like "07:00" (or "" for none), not {value!r}')


def _check_ca_file(section: str, key: str, path: str, tls: bool) -> None:
    """A CA certificate for a TLS peer: only with TLS on, and a file that is there."""
    if not path:
        return
    if not tls:
        raise ConfigError(f"[{section}] {key} is set but TLS is off: the certificate would not be checked")
    try:
        is_file = Path(path).is_file()
    except OSError as exc:          # a folder we may not look into
        raise ConfigError(f"[{section}] {key} {path!r} cannot be read: {exc.strerror}") from None
    if not is_file:
        raise ConfigError(f"[{section}] {key} {path!r} is not a file "
                          "(a CA certificate in PEM; \"\" for the system's CA store)")


@dataclass(frozen=True)
class ShopSettings:
    name: str = "Beispiel-Shop"
    address: str = "orders@shop.example"
    base_url: str = "http://127.0.0.1:8080"
    locale: str = "de"
    files_address: str = ""
    delete_cancelled_after_days: int = 0    # cancelled orders, quiet this long, are deleted for good; 0: never
    jobs_time: str = "06:00"            # payment reminders, auto-cancel and retention run daily then; "": never

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def __post_init__(self):
        _not_negative("shop", self, ("delete_cancelled_after_days",))
        _check_time("shop", "jobs_time", self.jobs_time)


@dataclass(frozen=True)
class OwnerSettings:
    addresses: tuple[str, ...] = ()
    secret: str = ""
    trusted_authserv_id: str = ""
    digest_time: str = "07:00"          # the daily digest, server's local time; "" disables it
    verify_dkim: bool = False
    dkim_keys_file: str = ""

    def is_owner_address(self, address: str) -> bool:
        """Whether `address` is one of the owner's (case does not matter)."""
        return address.lower() in self._lowercase_addresses

    @functools.cached_property
    def _lowercase_addresses(self) -> frozenset[str]:
        return frozenset(a.lower() for a in self.addresses)

    def __post_init__(self):
        _check_time("owner", "digest_time", self.digest_time)


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite:///var/ordermail.db"


@dataclass(frozen=True)
class ImapSettings:
    host: str = ""
    port: int = 993
    tls: bool = True
    user: str = ""
    password: str = ""
    folder: str = "INBOX"
    done_folder: str = ""
    poll_seconds: int = 60
    ca_file: str = ""                   # CA bundle (PEM) for the server's certificate; "": the system's

    def __post_init__(self):
        _at_least_one("inbound.imap", self, ("poll_seconds",))
        _check_ca_file("inbound.imap", "ca_file", self.ca_file, self.tls)


@dataclass(frozen=True)
class InboundSettings:
    smtp_listen: str = "127.0.0.1:2525"
    lmtp_listen: str = ""
    max_message_bytes: int = 26214400
    reply_token_days: int = 730
    workers: int = 2                    # processes handling stored mail (one also sends the outbox)
    max_connections: int = 100          # SMTP/LMTP sessions per listener; more get 421 4.7.0
    max_connections_per_client: int = 20   # per client address, outside the exempt networks
    connection_limit_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1")   # counted in the total only
    messages_per_sender_per_hour: int = 100    # SMTP/LMTP, by envelope sender; more hear 450 4.7.1
    messages_per_client_per_hour: int = 1000   # by client address, outside connection_limit_exempt
    keep_raw_days: int = 0              # received mail's raw bytes are pruned after this many days; 0: kept
    command_timeout_seconds: int = 300  # SMTP/LMTP: waiting for the next command (RFC 5321 4.5.3.2.7)
    data_timeout_seconds: int = 600     # waiting for more of a message in DATA: idle time, not the total
    imap: ImapSettings = field(default_factory=ImapSettings)

    def __post_init__(self):
        _not_negative("inbound", self, ("keep_raw_days",))
        _at_least_one("inbound", self, ("max_connections", "max_connections_per_client",
                                        "messages_per_sender_per_hour", "messages_per_client_per_hour",
                                        "command_timeout_seconds", "data_timeout_seconds"))
        for network in self.connection_limit_exempt:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ConfigError(f"[inbound] connection_limit_exempt: {network!r} is not a network "
                                  "like \"127.0.0.0/8\" or an address") from None


@dataclass(frozen=True)
class OutboundSettings:
    mode: str = "maildir"
    maildir: str = "var/outbox"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    retry_base_seconds: int = 60
    give_up_after_hours: int = 120
    smtp_tls: str = "none"              # "starttls", "tls" (implicit, port 465) or "none"
    smtp_user: str = ""                 # AUTH when set
    smtp_password: str = ""
    smtp_ca_file: str = ""              # CA bundle for the smarthost's certificate; "": the system's
    smtp_connections: int = 4           # sent over at most this many connections at once
    per_recipient_per_hour: int = 30    # more mails to one address wait for the next hour
    owner_per_hour: int = 300           # the same for the owner's addresses (every reply is forwarded)
    attachments_max_bytes: int = 10 * 1024 * 1024   # files beyond it are linked, not attached
    templates_dir: str = ""             # the shop's own mail templates, tried first

    def __post_init__(self):
        if self.smtp_tls not in ("starttls", "tls", "none"):
            raise ConfigError(f'[outbound] smtp_tls must be "starttls", "tls" or "none", not {self.smtp_tls!r}')
        _at_least_one("outbound", self, ("retry_base_seconds", "give_up_after_hours", "smtp_connections",
                                         "per_recipient_per_hour", "owner_per_hour"))
        if self.smtp_password and not self.smtp_user:
            raise ConfigError("[outbound] smtp_password is set but smtp_user is empty")
        if self.smtp_user and self.smtp_tls == "none" and self.smtp_host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError('[outbound] smtp_user is set but smtp_tls is "none": the password would cross '
                              'the network in clear; use "starttls" or "tls"')
        _check_ca_file("outbound", "smtp_ca_file", self.smtp_ca_file, self.smtp_tls != "none")
        if self.templates_dir and not Path(self.templates_dir).is_dir():
            raise ConfigError(f"[outbound] templates_dir {self.templates_dir!r} is not a folder")


@dataclass(frozen=True)
class WebSettings:
    listen: str = "127.0.0.1:8080"
    status_link_days: int = 0           # a status link dies this long after the order's last change; 0: never
    session_hours: int = 12             # how long a mailed sign-in keeps a browser signed in
    misses_per_hour: int = 30           # unknown status links one client may try before 429
    signins_per_hour: int = 5           # sign-in mails per address (more are silently not sent)
    signins_per_client_per_hour: int = 20   # sign-in requests per client address before 429
    trust_forwarded_for: bool = False   # behind a proxy: the client is X-Forwarded-For's last address
    timezone: str = ""                  # times on the pages, e.g. "Europe/Berlin"; "": the server's
    templates_dir: str = ""             # the shop's own page templates, tried first

    def __post_init__(self):
        for key in ("status_link_days",):
            if getattr(self, key) < 0:
                raise ConfigError(f"[web] {key} must be 0 (never) or more, not {getattr(self, key)}")
        _at_least_one("web", self, ("session_hours", "misses_per_hour", "signins_per_hour",
                                    "signins_per_client_per_hour"))
        if self.timezone:
            import zoneinfo
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f'[web] timezone must be a zone like "Europe/Berlin", not {self.timezone!r}') from None
        if self.templates_dir and not Path(self.templates_dir).is_dir():
            raise ConfigError(f"[web] templates_dir {self.templates_dir!r} is not a folder")


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"                 # debug, info, warning or error
    format: str = "text"                # "text": one line per event; "json": one JSON object per line
    file: str = ""                      # "": standard error (the journal under systemd)

    def __post_init__(self):
        if self.level not in LOG_LEVELS:
            raise ConfigError(f"[log] level must be one of {', '.join(LOG_LEVELS)}, not {self.level!r}")
        if self.format not in ("text", "json"):
            raise ConfigError(f'[log] format must be "text" or "json", not {self.format!r}')


@dataclass(frozen=True)
class PaymentMethod:
    label: str = ""
    instructions: str | dict = ""       # one text, or {"de": …, "en": …, "fr": …}
    remind_after_days: int = 0          # 0: never
    cancel_after_days: int = 0          # 0: never
    iban: str = ""                      # with bic and account_holder: a GiroCode (EPC QR) for the transfer
    bic: str = ""
    account_holder: str = ""

    def instructions_for(self, lang: str, fallback: str) -> str:
        """The text in `lang`; else in `fallback` (the shop's language); else the first one given."""
        if isinstance(self.instructions, str):
            return self.instructions
        texts = self.instructions
        return texts.get(lang) or texts.get(fallback) or next(iter(texts.values()), "")

    @property
    def iban_formatted(self) -> str:
        """The IBAN in groups of four, as people read and type it."""
        return " ".join(self.iban[i:i + 4] for i in range(0, len(self.iban), 4))

    def check(self, name: str) -> "PaymentMethod":
        """Validated, with the account details in their compact form."""
        where = f"payment.{name}"
        _not_negative(where, self, ("remind_after_days", "cancel_after_days"))
        if 0 < self.cancel_after_days <= self.remind_after_days:
            raise ConfigError(f"[{where}] cancel_after_days ({self.cancel_after_days}) must be more than "
                              f"remind_after_days ({self.remind_after_days}): the reminder comes first")
        texts = self.instructions.items() if isinstance(self.instructions, dict) else (("", self.instructions),)
        for lang, text in texts:
            key = f"[{where}] instructions" + (f".{lang}" if lang else "")
            used = _check_placeholders(text, key)
            unset = sorted(name for name in used & set(ACCOUNT_KEYS) if not getattr(self, name).strip())
            if unset:
                raise ConfigError(f"{key} uses {{{unset[0]}}} but [{where}] {unset[0]} is not set")
        return _checked_account(self, where)


@dataclass(frozen=True)
class PaypalSettings:
    ipn_verify_url: str = "https://ipnpb.paypal.com/cgi-bin/webscr"
    receiver_email: str = ""            # our PayPal account's primary address; "" disables /hooks/paypal-ipn
    retry_base_seconds: int = 60        # PayPal unreachable: verify again after this, doubling
    give_up_after_hours: int = 72       # then the message is left unverified and the owner told

    def __post_init__(self):
        _at_least_one("paypal", self, ("retry_base_seconds", "give_up_after_hours"))
        url = urlsplit(self.ipn_verify_url)
        if not url.hostname or url.scheme not in ("https", "http"):
            raise ConfigError(f"[paypal] ipn_verify_url must be an https:// URL, not {self.ipn_verify_url!r}")
        if url.scheme == "http" and not _is_loopback(url.hostname):
            raise ConfigError("[paypal] ipn_verify_url must use https:// (http:// only to this machine, "
                              f"for tests), not {self.ipn_verify_url!r}")
        if self.receiver_email and not PLAUSIBLE_ADDRESS.fullmatch(self.receiver_email):
            raise ConfigError(f"[paypal] receiver_email must be a mail address like pay@shop.example "
                              f"(or \"\" to turn IPN off), not {self.receiver_email!r}")


def _is_loopback(host: str) -> bool:
    """Whether `host` is this machine (a host name other than localhost: where it points is not ours to know)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ApiSettings:
    secret: str = ""                    # HMAC key of POST /api/orders; "" disables it
    woocommerce_secret: str = ""        # the WooCommerce webhook's secret; "" disables /hooks/woocommerce
    shopify_secret: str = ""            # the Shopify app's client secret; "" disables /hooks/shopify
    payment_methods: tuple[str, ...] = ()   # "theirs=ours" for the shops' payment ids; "*=ours" for any other
    metrics_token: str = ""             # if set, GET /metrics wants "Authorization: Bearer <token>"

    def __post_init__(self):
        for entry in self.payment_methods:
            theirs, sep, ours = (part.strip() for part in entry.partition("="))
            if not (sep and theirs and ours):
                raise ConfigError(f'[api] payment_methods: {entry!r} must look like "bacs=bank_transfer"')


@dataclass(frozen=True)
class StatementCsvSettings:
    """A bank's CSV export that the built-in layouts do not know: which
    column holds what (by its header text, any case), and how it is written."""
    delimiter: str = ""                 # "": found from the header line (; , or tab)
    encoding: str = ""                  # "": UTF-8 (with or without BOM), else Windows-1252
    decimal_separator: str = ""         # "," or "."; "": read from each amount
    date_format: str = ""               # strptime format; "": DD.MM.YYYY, DD.MM.YY, YYYY-MM-DD, DD/MM/YYYY
    date_column: str = ""
    amount_column: str = ""             # signed: a debit is negative
    currency_column: str = ""           # "": every row is in `currency`
    currency: str = "EUR"
    remittance_columns: tuple[str, ...] = ()   # joined, where the order number is looked for
    reference_column: str = ""          # the bank's or payer's reference of the entry
    payer_column: str = ""

    def __post_init__(self):
        if self.delimiter not in ("", ";", ",", "\t", "|"):
            raise ConfigError(f'[statements.csv] delimiter must be ";", ",", "\\t" or "|", not {self.delimiter!r}')
        if self.decimal_separator not in ("", ",", "."):
            raise ConfigError(f'[statements.csv] decimal_separator must be "," or ".", not {self.decimal_separator!r}')
        if self.encoding:
            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ConfigError(f"[statements.csv] encoding {self.encoding!r} is not an encoding Python knows "
                                  '(e.g. "utf-8", "cp1252", "latin-1")') from None
        if not (len(self.currency) == 3 and self.currency.isalpha() and self.currency.isupper()):
            raise ConfigError(f'[statements.csv] currency must be a code like "EUR", not {self.currency!r}')
        named = [key for key in ("date_column", "amount_column", "currency_column", "reference_column",
                                 "payer_column", "remittance_columns") if getattr(self, key)]
        if named and not (self.amount_column and self.remittance_columns):
            raise ConfigError("[statements.csv] a layout of your own needs amount_column and remittance_columns")

    @property
    def custom(self) -> bool:
        """Whether the owner named the columns (else the built-in layouts are used)."""
        return bool(self.amount_column)


@dataclass(frozen=True)
class StatementSettings:
    """Bank statements (`ordermail payments import`, or mailed to the command address)."""
    max_bytes: int = 50 * 1024 * 1024   # one statement file, unpacked (every file of a .zip together)
    max_entries: int = 50_000           # entries of one import
    csv: StatementCsvSettings = field(default_factory=StatementCsvSettings)

    def __post_init__(self):
        _at_least_one("statements", self, ("max_bytes", "max_entries"))


@dataclass(frozen=True)
class LimitSettings:
    """Bounds that keep one order or one mail from swamping the store."""
    attachment_max_bytes: int = 10 * 1024 * 1024
    event_body_max_chars: int = 100_000
    items_per_order_max: int = 500
    list_default_limit: int = 100

    # What each bound may be: below the least, every order, file or message
    # would be refused; above the most, the database's column cannot hold it
    # (an item's position is a SMALLINT, a file's size an INTEGER).
    RANGES = {"attachment_max_bytes": (1, 2**31 - 1), "event_body_max_chars": (1, 10**9),
              "items_per_order_max": (1, 32_767), "list_default_limit": (0, 10**9)}

    def __post_init__(self):
        for key, (least, most) in self.RANGES.items():
            value = getattr(self, key)
            if not least <= value <= most:
                raise ConfigError(f"[limits] {key} must be from {least} to {most}, not {value}"
                                  + (" (0: all)" if key == "list_default_limit" else ""))


DEFAULT_PAYMENT_METHODS = {
    "bank_transfer": PaymentMethod(
        label="Überweisung",
        instructions={"de": "Bitte überweisen Sie {total} mit dem Verwendungszweck {number}.",
                      "en": "Please transfer {total} with the reference {number}.",
                      "fr": "Veuillez virer {total} avec la référence {number}."},
        remind_after_days=7, cancel_after_days=21),
    "paypal": PaymentMethod(label="PayPal"),
}


@dataclass(frozen=True)
class Settings:
    shop: ShopSettings = field(default_factory=ShopSettings)
    owner: OwnerSettings = field(default_factory=OwnerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    web: WebSettings = field(default_factory=WebSettings)
    payment: dict = field(default_factory=lambda: dict(DEFAULT_PAYMENT_METHODS))
    paypal: PaypalSettings = field(default_factory=PaypalSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    log: LogSettings = field(default_factory=LogSettings)
    statements: StatementSettings = field(default_factory=StatementSettings)

    @property
    def command_address(self) -> str:
        """orders+cmd-SECRET@shop.example; "" when commands by mail are off (no secret)."""
        if not self.owner.secret:
            return ""
        local, _, domain = self.shop.address.partition("@")
        return f"{local}+cmd-{self.owner.secret}@{domain}"

    def command_address_text(self) -> str:
        """The command address as the owner is told it (check, demo, the daemon's start)."""
        return self.command_address or "none (commands by mail are off: [owner] secret is empty)"

    def status_url(self, token: str) -> str:
        return f"{self.shop.base_url.rstrip('/')}/o/{token}"


def load_settings(path: str | os.PathLike) -> Settings:
    """Read and validate a TOML file; raise ConfigError naming the bad key."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return settings_from_dict(raw)


def settings_from_dict(raw: dict, **overrides) -> Settings:
    """Build Settings from parsed TOML (tests use this with overrides)."""
    raw = dict(raw)
    payment = raw.pop("payment", None)
    settings = _build(Settings, raw, "")
    if payment is not None:
        settings = dataclasses.replace(settings, payment=_payment_methods(payment))
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    settings = dataclasses.replace(settings, payment=_checked_methods(settings.payment))
    validate(settings)
    return settings


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "payment"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {_key(where, key)}")
    values = {name: _convert(hints[name], raw[name], _key(where, name))
              for name in known if name in raw}
    return cls(**values)


def _convert(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key.strip("[]").replace("] ", "."))
    if hint is bool:
        return _checked(value, bool, key, "true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a whole number, not {value!r}")
        return _checked(value, int, key, "a whole number")
    if hint is str:
        return _checked(value, str, key, "a string")
    if typing.get_origin(hint) is tuple:
        _checked(value, list, key, "a list of strings")
        return tuple(_checked(item, str, key, "a list of strings") for item in value)
    raise AssertionError(f"no converter for {hint}")


def _checked(value, kind, key: str, wanted: str):
    if not isinstance(value, kind):
        raise ConfigError(f"{key} must be {wanted}, not {value!r}")
    return value


def _payment_methods(raw) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError("[payment] must hold tables like [payment.bank_transfer]")
    return {name: _payment_method(name, table) for name, table in raw.items()}


def _payment_method(name: str, table) -> PaymentMethod:
    where = f"payment.{name}"
    table = dict(table) if isinstance(table, dict) else table
    texts = table.pop("instructions", "") if isinstance(table, dict) else ""
    method = _build(PaymentMethod, table, where)
    return dataclasses.replace(method, instructions=_instructions(texts, f"[{where}] instructions"))


def _checked_methods(methods: dict) -> dict:
    return {name: method.check(name) for name, method in methods.items()}


def _instructions(value, key: str) -> str | dict:
    """One string, or a table of strings by language."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a string or a table like {{ de = \"…\", en = \"…\" }}, not {value!r}")
    for lang, text in value.items():
        if lang not in SUPPORTED_LOCALES:
            raise ConfigError(f"{key}: unknown language {lang!r} (known: {', '.join(SUPPORTED_LOCALES)})")
        _checked(text, str, f"{key}.{lang}", "a string")
    return dict(value)


def _checked_account(method: PaymentMethod, where: str) -> PaymentMethod:
    """IBAN, BIC and holder: all three or none; IBAN and BIC as schwifty checks them."""
    given = [key for key in ACCOUNT_KEYS if getattr(method, key).strip()]
    if not given:
        return method
    if len(given) < len(ACCOUNT_KEYS):
        missing = next(key for key in ACCOUNT_KEYS if key not in given)
        raise ConfigError(f"[{where}] {missing} is missing: iban, bic and account_holder go together")
    from schwifty import BIC, IBAN   # only a shop with an account needs the bank registry
    from schwifty.exceptions import SchwiftyException
    try:
        iban = IBAN(method.iban)
    except SchwiftyException as exc:
        raise ConfigError(f"[{where}] iban {method.iban!r} is not a valid IBAN: {exc}") from None
    if not iban.in_sepa_zone:
        raise ConfigError(f"[{where}] iban {method.iban!r} is outside the SEPA zone: a GiroCode is a SEPA transfer")
    try:
        bic = BIC(method.bic)
    except SchwiftyException as exc:
        raise ConfigError(f"[{where}] bic {method.bic!r} is not a valid BIC: {exc}") from None
    holder = " ".join(method.account_holder.split())
    if len(holder) > EPC_NAME_MAX:
        raise ConfigError(f"[{where}] account_holder must be at most {EPC_NAME_MAX} characters "
                          f"(the GiroCode's limit), not {len(holder)}")
    return dataclasses.replace(method, iban=iban.compact, bic=bic.compact, account_holder=holder)


EPC_NAME_MAX = 70


def _key(where: str, name: str) -> str:
    return f"[{where}] {name}" if where else name


def validate(settings: Settings) -> None:
    """Checks across values that a type alone cannot express."""
    shop = settings.shop
    if shop.locale not in SUPPORTED_LOCALES:
        raise ConfigError(f"[shop] locale must be one of {', '.join(SUPPORTED_LOCALES)}, not {shop.locale!r}")
    if shop.address.count("@") != 1 or "+" in shop.address.partition("@")[0]:
        raise ConfigError(f"[shop] address must be a plain address like orders@shop.example, not {shop.address!r}")
    if urlsplit(shop.base_url).scheme not in ("http", "https"):
        raise ConfigError(f"[shop] base_url must start with http:// or https://, not {shop.base_url!r}")
    if settings.owner.secret and len(settings.owner.secret) < 16:
        raise ConfigError("[owner] secret must be at least 16 characters")
    if not settings.owner.secret.replace("-", "").replace("_", "").isalnum() and settings.owner.secret:
        raise ConfigError("[owner] secret may hold only letters, digits, '-' and '_' (it is part of an address)")
    for address in settings.owner.addresses:
        if address.count("@") != 1:
            raise ConfigError(f"[owner] addresses: {address!r} is not a mail address")
        if _is_shop_address(settings, address):
            raise ConfigError(f"[owner] addresses: {address} is the shop's own address ([shop] address): "
                              "mail forwarded to the owner would come back to the shop")
    if settings.outbound.mode not in ("smtp", "maildir"):
        raise ConfigError(f"[outbound] mode must be \"smtp\" or \"maildir\", not {settings.outbound.mode!r}")
    for key in ("smtp_listen", "lmtp_listen"):
        _check_listen(getattr(settings.inbound, key), f"[inbound] {key}")
    _check_listen(settings.web.listen, "[web] listen")
    if settings.inbound.max_message_bytes < 1024:
        raise ConfigError("[inbound] max_message_bytes must be at least 1024")
    if not 1 <= settings.inbound.workers <= 32:
        raise ConfigError(f"[inbound] workers must be from 1 to 32, not {settings.inbound.workers}")
    _not_negative("inbound", settings.inbound, ("reply_token_days",))
    _not_negative("outbound", settings.outbound, ("attachments_max_bytes",), zero="nothing attached")
    for section, values, key in (("inbound.imap", settings.inbound.imap, "port"),
                                 ("outbound", settings.outbound, "smtp_port")):
        if not 0 < getattr(values, key) < 65536:
            raise ConfigError(f"[{section}] {key} must be from 1 to 65535, not {getattr(values, key)}")
    for entry in settings.api.payment_methods:
        ours = entry.partition("=")[2].strip()
        if ours and ours not in settings.payment:
            raise ConfigError(f"[api] payment_methods: {entry!r} names no [payment.{ours}] table")
    _check_database_url(settings.database.url)


def _is_shop_address(settings: Settings, address: str) -> bool:
    """orders@shop.example itself, or one of its plus addresses (orders+anything@), in any case."""
    local, _, domain = address.lower().rpartition("@")
    shop_local, _, shop_domain = settings.shop.address.lower().rpartition("@")
    return domain == shop_domain and local.partition("+")[0] == shop_local


def warnings(settings: Settings) -> list[str]:
    """Set-ups that start but may not do what was meant, one line each naming the key.

    `ordermail check` prints them and the daemon logs them at start. Chiefly:
    where a command mail's proof of origin can be forged, or can never hold.
    """
    owner, inbound = settings.owner, settings.inbound
    found = []
    if owner.secret and not owner.addresses:
        found.append("[owner] addresses is empty: nobody can give commands by mail, "
                     "and unmatched mail and alerts reach nobody")
    if owner.secret and not (owner.trusted_authserv_id or owner.verify_dkim):
        found.append("[owner] secret: command mails are obeyed on the secret address and the From header "
                     "alone, which anyone can write; set [owner] verify_dkim or trusted_authserv_id so a "
                     "leaked address is not enough")
    lmtp_host = inbound.lmtp_listen.rpartition(":")[0].strip("[]")
    if owner.trusted_authserv_id and inbound.lmtp_listen and not _is_loopback(lmtp_host):
        found.append(f"[owner] trusted_authserv_id: anyone who reaches [inbound] lmtp_listen "
                     f"{inbound.lmtp_listen} can write an Authentication-Results header as if your mail "
                     "server had; listen on 127.0.0.1, or firewall it to that server")
    if owner.trusted_authserv_id and inbound.smtp_listen and not owner.verify_dkim:
        found.append("[owner] trusted_authserv_id: command mails taken by [inbound] smtp_listen are never "
                     "vouched for by an Authentication-Results header (ordermail receives them itself, so "
                     "the sender wrote every header); send them through LMTP, the pipe or IMAP behind a "
                     "server that checks DKIM, or set [owner] verify_dkim")
    return found


def _check_listen(value: str, key: str) -> None:
    if not value:
        return
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key} must be HOST:PORT, not {value!r}")


def _check_placeholders(text: str, key: str) -> set[str]:
    """The placeholders `text` uses; an unknown one is an error naming `key`."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise ConfigError(f"{key}: unknown placeholder {{{sorted(unknown)[0]}}} "
                          f"(known: {', '.join('{%s}' % p for p in sorted(PLACEHOLDERS))})")
    return names


def _check_database_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if not parts.path.lstrip("/") and parts.path != "/:memory:":
            raise ConfigError(f"[database] url {url!r} names no file (sqlite:///var/ordermail.db)")
        return
    if parts.scheme in ("postgresql", "postgres"):
        if not parts.path.lstrip("/"):
            raise ConfigError(f"[database] url {url!r} names no database (postgresql://user@host/db)")
        return
    raise ConfigError(f"[database] url must start with sqlite:/// or postgresql://, not {url!r}")
