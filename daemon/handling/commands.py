"""The owner's command grammar, shared by `ordermail command` and command mails.

One command per line: a verb (English or German), the order number(s), then
the verb's arguments. The word `quiet` anywhere on a line means "do not mail
the customer", `preview` means "say what would happen, change nothing". Each line gives one `Outcome` per order it names: done, not
changed (already so), or not done with the reason. A failing line never stops
the lines after it, and nothing of a failed change is written.

    paid N…                        bezahlt
    shipped N… [tracking CODE] [carrier NAME]   versandt
    cancelled N… [reason]          storniert
    refunded N [amount|full] [reason]   erstattet
    message N text                 nachricht
    note N text                    vermerk (internal)
    delete N… confirm              löschen … bestätigen
    show N…  ·  list FILTER  ·  help
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from daemon.orders import filters, service as orders
from daemon.config import Settings
from daemon.errors import InputError, OrdermailError
from daemon.orders.as_json import is_order_number, parse_amount
from daemon.orders.as_text import order_detail, order_table
from daemon.orders.service import Content, Via
from daemon.store.models import Order
from daemon.store.database import Store
from daemon.translations import N_, Said, said

VERBS = {
    "paid": "paid", "bezahlt": "paid",
    "shipped": "shipped", "versandt": "shipped", "versendet": "shipped", "verschickt": "shipped",
    "cancelled": "cancelled", "canceled": "cancelled", "storniert": "cancelled",
    "refunded": "refunded", "erstattet": "refunded",
    "message": "message", "nachricht": "message",
    "note": "note", "vermerk": "note", "notiz": "note",
    "delete": "delete", "löschen": "delete", "loeschen": "delete",
    "show": "show", "zeige": "show", "zeigen": "show",
    "list": "list", "liste": "list",
    "help": "help", "hilfe": "help",
}
QUIET_WORDS = frozenset({"quiet"})
PREVIEW_WORDS = frozenset({"preview", "vorschau"})
CONFIRM_WORDS = frozenset({"confirm", "bestätigen", "bestaetigen"})
TRACKING_WORDS = frozenset({"tracking", "sendungsnummer", "trackingnummer"})
CARRIER_WORDS = frozenset({"carrier", "versanddienst", "paketdienst"})
SHIPPING_LIMITS = {"tracking": Order.tracking_code.max_length, "carrier": Order.carrier.max_length}
TOO_LONG = {"tracking": N_("a tracking code has at most %(most)s characters; this one has %(length)s"),
            "carrier": N_("a carrier name has at most %(most)s characters; this one has %(length)s")}
FULL_WORDS = frozenset({"full", "voll", "komplett"})
AMOUNT_RE = re.compile(r"[€$£]?\d[\d.,]*(?:€|\$|£)?")
MANY_ORDER_VERBS = frozenset({"paid", "shipped", "cancelled", "delete", "show"})


@dataclass(frozen=True)
class Outcome:
    """What one line did to one order (or the answer to show/list/help)."""
    line: str
    ok: bool
    changed: bool
    text: str
    number: str | None = None
    event_id: int | None = None


@dataclass(frozen=True)
class Parsed:
    verb: str
    numbers: tuple[str, ...]
    words: tuple[str, ...]   # the arguments after the numbers, `quiet` removed
    rest: str                # the same arguments as typed (message text)
    quiet: bool
    preview: bool = False    # show what would happen, change nothing


def run_text(store: Store, settings: Settings, text: str, *, via: Via = Via()) -> list[Outcome]:
    """Run every non-empty line; lines starting with '#' are comments."""
    outcomes: list[Outcome] = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            outcomes.extend(run_line(store, settings, line, via=via))
    return outcomes


def run_line(store: Store, settings: Settings, line: str, *, via: Via = Via(),
             content: Content | None = None) -> list[Outcome]:
    line = line.strip()
    try:
        parsed = parse_line(line)
    except InputError as exc:
        return [Outcome(line, False, False, said(exc))]
    via = replace(via, quiet=via.quiet or parsed.quiet)
    if not parsed.numbers:
        return [_answer(line, None, lambda: _run_whole_line(settings, parsed))]
    content = content or Content()
    if parsed.preview:
        return _preview(store, lambda: _run_numbers(store, settings, line, parsed, via, content))
    return _run_numbers(store, settings, line, parsed, via, content)


def _run_numbers(store, settings, line, parsed, via, content) -> list[Outcome]:
    return [_answer(line, number, lambda n=number: _run_for_order(store, settings, parsed, n, via, content))
            for number in parsed.numbers]


def _preview(store: Store, run) -> list[Outcome]:
    """Run the line inside a transaction that is always rolled back."""
    with store.atomic() as transaction:
        outcomes = run()
        transaction.rollback()
    return [replace(o, changed=False, event_id=None, text=Said("preview, nothing done: %(text)s", text=o.text)) for o in outcomes]


def parse_line(line: str) -> Parsed:
    tokens = [(m.group(), m.start()) for m in re.finditer(r"\S+", line)]
    if not tokens:
        raise InputError("empty command")
    verb = VERBS.get(tokens[0][0].lower().rstrip(":"))
    if verb is None:
        raise InputError(Said("unknown command '%(word)s' (try 'help')", word=tokens[0][0]))
    quiet = any(word.lower() in QUIET_WORDS for word, _ in tokens[1:])
    preview = any(word.lower() in PREVIEW_WORDS for word, _ in tokens[1:])
    args = [(w, pos) for w, pos in tokens[1:] if w.lower() not in QUIET_WORDS | PREVIEW_WORDS]
    numbers = _leading_numbers(verb, args)
    rest_tokens = args[len(numbers):]
    rest = " ".join(w for w, _ in rest_tokens)
    if rest_tokens and verb in ("message", "note"):
        rest = _text_from(line, rest_tokens[0][1])
    return Parsed(verb, tuple(numbers), tuple(w for w, _ in rest_tokens), rest, quiet, preview)


def _leading_numbers(verb: str, args) -> list[str]:
    numbers = []
    for word, _ in args:
        candidate = word.lstrip("#").rstrip(",")
        if verb in ("list", "help") or not is_order_number(candidate):
            break
        numbers.append(candidate)
        if verb not in MANY_ORDER_VERBS:
            break
    return numbers


def _text_from(line: str, start: int) -> str:
    """The rest of the line as typed, with the words quiet and preview taken out."""
    return re.sub(r"(?i)(?<!\S)(?:quiet|preview|vorschau)(?!\S)", "", line[start:]).strip()


def _run_whole_line(settings: Settings, parsed: Parsed):
    if parsed.verb == "help":
        return False, help_text(), None
    if parsed.verb == "list":
        return False, _list(settings, parsed.rest), None
    raise InputError(Said("'%(verb)s' needs an order number", verb=parsed.verb))


def _run_for_order(store, settings, parsed: Parsed, number: str, via: Via, content: Content):
    """Do what the line says to one order; returns (changed, text, event id)."""
    verb = parsed.verb
    if verb == "show":
        return False, _show(settings, number), None
    if verb == "delete":
        confirm = any(w.lower() in CONFIRM_WORDS for w in parsed.words)
        change = orders.delete_order(store, number, confirm=confirm)
    elif verb == "paid":
        _no_words(parsed)
        change = orders.mark_paid(store, settings, number, content=content, via=via)
    elif verb == "shipped":
        tracking, carrier = _shipping_words(parsed)
        change = orders.mark_shipped(store, settings, number, tracking=tracking, carrier=carrier,
                                     content=content, via=via)
    elif verb == "cancelled":
        change = orders.mark_cancelled(store, settings, number, reason=parsed.rest, content=content, via=via)
    elif verb == "refunded":
        amount, reason = _refund_words(parsed)
        change = orders.mark_refunded(store, settings, number, amount=amount, reason=reason,
                                      content=content, via=via)
    else:
        add = orders.add_message if verb == "message" else orders.add_note
        text = replace(content, text=_join(parsed.rest, content.text))
        change = add(store, settings, number, text, via=via)
    return change.done, change.summary, change.event_id


def _answer(line: str, number: str | None, run) -> Outcome:
    try:
        changed, text, event_id = run()
        return Outcome(line, True, changed, text, number, event_id)
    except OrdermailError as exc:
        return Outcome(line, False, False, said(exc), number)


def _no_words(parsed: Parsed) -> None:
    if parsed.words:
        raise InputError(Said("unexpected '%(word)s' after the order numbers", word=parsed.words[0]))


def _shipping_words(parsed: Parsed) -> tuple[str | None, str | None]:
    found = {"tracking": None, "carrier": None}
    words = list(parsed.words)
    while words:
        word = words.pop(0)
        key = ("tracking" if word.lower() in TRACKING_WORDS
               else "carrier" if word.lower() in CARRIER_WORDS else None)
        if key is None:
            raise InputError(Said("unexpected '%(word)s': write 'tracking CODE' or 'carrier NAME'", word=word))
        if not words:
            raise InputError(Said("'%(word)s' needs a value", word=word))
        value, longest = words.pop(0), SHIPPING_LIMITS[key]
        if len(value) > longest:       # never cut: a cut tracking code tracks another parcel, or none
            raise InputError(Said(TOO_LONG[key], most=longest, length=len(value)))
        found[key] = value
    if found["tracking"] and len(parsed.numbers) > 1:
        raise InputError(Said("a tracking code goes with one order; give one 'shipped' line per order"))
    return found["tracking"], found["carrier"]


def _refund_words(parsed: Parsed):
    if not parsed.words:
        return None, ""
    first, reason = parsed.words[0], " ".join(parsed.words[1:])
    if first.lower() in FULL_WORDS:
        return None, reason
    if not AMOUNT_RE.fullmatch(first):
        raise InputError(Said("'%(word)s' is not an amount; write 'refunded %(number)s 12.50 reason' "
                              "or 'refunded %(number)s full reason'", word=first, number=parsed.numbers[0]))
    return parse_amount(first.strip("€$£"), "the amount"), reason


def _join(*texts: str) -> str:
    return "\n\n".join(t.strip() for t in texts if t and t.strip())


def _show(settings: Settings, number: str) -> str:
    order = orders.find_order(number)
    return order_detail(order, orders.order_events(order), settings)


def _list(settings: Settings, expression: str) -> str:
    limit = settings.limits.list_default_limit
    found = filters.find_orders(expression, limit=limit + 1)
    return order_table(found[:limit], more=len(found) > limit)


def help_text() -> Said:
    """The commands, said in the shop's language where shown (the catalogs hold each language's words)."""
    return Said("""\
Commands, one per line (German words work too):
  paid 1042 1043                    mark orders paid (bezahlt)
  shipped 1042 tracking XYZ carrier DHL   mark shipped (versandt)
  cancelled 1042 out of stock       cancel, with a reason (storniert)
  refunded 1042 12.50 broken lid    refund an amount, or 'full' (erstattet)
  message 1042 Your teapot is ready   a message to the customer (nachricht)
  note 1042 supplier ref A77        an internal note, never sent (vermerk)
  delete 1042 confirm               delete the order and its log for good
  show 1042                         the order and its whole log
  list not paid and not cancelled   orders matching a filter
  help                              this text
Add the word 'quiet' to a line to change the order without mailing the customer,
or 'preview' to see what the line would do without doing it.
Reply 'undo' to a receipt within 24 hours to take back what that mail did.
Filters: paid shipped cancelled refunded, and/or/not, ( ), customer:NAME email:ADDR
since:YYYY-MM-DD until:YYYY-MM-DD method:NAME number:N""")
