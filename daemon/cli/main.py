"""The `ordermail` command line.

Every subcommand exits 0 on success, 2 on a usage or configuration error and
1 on any other failure, with one line on stderr; `--format json` prints
exactly one JSON document on stdout. Errors are turned into that answer here,
in `main`, and nowhere else.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from daemon import app, errors, user_numbers
from daemon.cli import (backup as cli_backup, demo, inbound as inbound_views, mail as cli_mail,
                        payments as cli_payments, paypal as cli_paypal, web as cli_web)
from daemon.handling import commands, inbound
from daemon.orders import filters, service as orders
from daemon.outbound import notify
from daemon.intake import pipe
from daemon.config import Settings, load_settings
from daemon.errors import EXIT_FAILURE, EXIT_USAGE, ConfigError, InputError, OrdermailError
from daemon.orders.as_json import order_to_json
from daemon.orders.as_text import order_detail, order_table
from daemon.orders.service import Via
from daemon.store.database import first_line, open_store
from daemon.translations import Said, say


class UsageError(InputError):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2, like every other error."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> Parser:
    common = Parser(add_help=False)
    common.add_argument("--config", metavar="PATH",
                        help="configuration file (default: $ORDERMAIL_CONFIG)")
    parser = Parser(prog="ordermail", parents=[common],
                    description="Order-tracking mail daemon for small web shops.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    sub.add_parser("serve", parents=[common], help="run the daemon in the foreground")
    sub.add_parser("check", parents=[common], help="validate the configuration and the database")
    init = sub.add_parser("init", parents=[common], help="write a working configuration if none exists")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    sub.add_parser("demo", parents=[common], help="add demo orders (once) and print their status pages")

    order = sub.add_parser("order", parents=[common], help="one order").add_subparsers(
        dest="order_command", required=True, parser_class=Parser)
    create = order.add_parser("create", parents=[common], help="create an order from JSON")
    create.add_argument("--json", required=True, metavar="FILE", help="the order JSON, or - for stdin")
    create.add_argument("--quiet", action="store_true", help="do not mail the customer")
    create.add_argument("--format", choices=("text", "json"), default="text")
    show = order.add_parser("show", parents=[common], help="an order and its whole log")
    show.add_argument("number")
    show.add_argument("--format", choices=("text", "json"), default="text")
    cli_web.add_order_parsers(order, common, Parser)

    listing = sub.add_parser("orders", parents=[common], help="many orders").add_subparsers(
        dest="orders_command", required=True, parser_class=Parser)
    lst = listing.add_parser("list", parents=[common], help="orders matching a filter, newest first")
    lst.add_argument("--filter", default="", metavar="EXPR", help="e.g. 'not paid and not cancelled'")
    lst.add_argument("--limit", type=user_numbers.argument(0, user_numbers.MAX_COUNT), default=None,
                     help="at most this many (0: all)")
    lst.add_argument("--format", choices=("table", "json"), default="table")

    deliver = sub.add_parser("deliver", parents=[common], help="take one message from stdin (pipe delivery)")
    deliver.add_argument("--recipient", action="append", default=[], metavar="ADDR",
                         help="envelope recipient (repeatable; default: Delivered-To/X-Original-To/To/Cc)")
    deliver.add_argument("--sender", default=None, metavar="ADDR",
                         help="envelope sender, '' for a bounce (default: the Return-Path header, else From)")

    inbound = sub.add_parser("inbound", parents=[common], help="received mail").add_subparsers(
        dest="inbound_command", required=True, parser_class=Parser)
    inlist = inbound.add_parser("list", parents=[common], help="received messages, newest first")
    inlist.add_argument("--state", choices=("new", "processing", "done", "duplicate", "quarantined"))
    inlist.add_argument("--limit", type=user_numbers.argument(1, user_numbers.MAX_COUNT), default=50)
    inlist.add_argument("--format", choices=("table", "json"), default="table")
    inshow = inbound.add_parser("show", parents=[common], help="one received message, with its raw text")
    inshow.add_argument("id", type=user_numbers.argument())
    inshow.add_argument("--format", choices=("text", "json"), default="text")
    inretry = inbound.add_parser("retry", parents=[common], help="handle a message again")
    inretry.add_argument("id", type=user_numbers.argument())

    command = sub.add_parser("command", parents=[common], help="run owner commands, as by mail")
    command.add_argument("text", help="one or more command lines, or - to read them from stdin")
    command.add_argument("--quiet", action="store_true", help="mail no customer for any line")
    command.add_argument("--format", choices=("text", "json"), default="text")
    cli_mail.add_parsers(sub, common, Parser)
    add_payments_parsers(sub, common)
    cli_backup.add_parsers(sub, common, Parser)
    return parser


def add_payments_parsers(sub, common) -> None:
    """`ordermail payments …`: bank statements (cli/payments.py) and PayPal's IPN messages (cli/paypal.py)."""
    payments = sub.add_parser("payments", parents=[common], help="payments that mark orders paid").add_subparsers(
        dest="payments_command", required=True, parser_class=Parser)
    cli_payments.add_parsers(payments, common, Parser)
    cli_paypal.add_parsers(payments, common, Parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # An MTA runs `deliver`: whatever goes wrong that is not the mail's own
    # fault (a config mistake, a bad option in master.cf, a bug) must say "try
    # again later" (75), so the mail stays queued until it is mended; any
    # other code would have the MTA bounce it.
    delivering = next((a for a in argv if not a.startswith("-")), None) == "deliver"
    wants_json = False
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as usage:
            return errors.EX_TEMPFAIL if delivering and usage.code else usage.code
        wants_json = getattr(args, "format", None) == "json"
        if args.command != "serve":          # the daemon sets up its own log
            _log_in_one_line()
        return dispatch(args)
    except OrdermailError as exc:
        return fail(str(exc), errors.sysexit(exc) if delivering else exc.exit_code, wants_json)
    except KeyboardInterrupt:
        return fail("interrupted", errors.EX_TEMPFAIL if delivering else EXIT_FAILURE, wants_json)
    except Exception as exc:  # one line, never a traceback, unless asked for
        if os.environ.get("ORDERMAIL_DEBUG"):
            traceback.print_exc()
        return fail(f"unexpected error: {type(exc).__name__}: {exc}",
                    errors.EX_TEMPFAIL if delivering else EXIT_FAILURE, wants_json)


class _OneLine(logging.Formatter):
    """A warning of a command as one line, its exception named, not traced back."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"ordermail: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f" ({type(exc).__name__}: {first_line(exc)})"
        return line


def _log_in_one_line() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter() if os.environ.get("ORDERMAIL_DEBUG") else _OneLine())
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def fail(message: str, code: int, wants_json: bool) -> int:
    print(f"ordermail: {message}", file=sys.stderr)
    if wants_json:
        print(json.dumps({"error": message}))
    return code


def dispatch(args) -> int:
    if args.command == "init":
        return demo.write_config(config_path(args), force=args.force)
    settings = load_settings(config_path(args))
    if args.command == "serve":
        return app.serve(settings, config_path(args))
    if args.command == "deliver":
        return cmd_deliver(args, settings)
    if args.command in cli_backup.HANDLERS:     # they open the database their own way
        return cli_backup.HANDLERS[args.command](args, settings)
    store = open_store(settings.database.url)
    try:
        handler = HANDLERS[(args.command, getattr(args, f"{args.command}_command", None))]
        return handler(args, settings, store)
    finally:
        store.close()


def config_path(args) -> Path:
    path = args.config or os.environ.get("ORDERMAIL_CONFIG")
    if not path:
        raise ConfigError("no configuration: pass --config PATH or set ORDERMAIL_CONFIG")
    return Path(path)


def cmd_check(args, settings: Settings, store) -> int:
    problems = notify.check_templates(settings)
    if problems:
        raise ConfigError(f"mail template {problems[0]}")
    applied, pending = store.schema_status()
    orders_count = filters.count_orders("")
    for warning in app.startup_warnings(settings, store):
        print(f"ordermail: warning: {warning}", file=sys.stderr)
    print(f"configuration ok; database {store.backend} ok, schema {applied[-1]}, "
          f"{orders_count} orders; command address {settings.command_address_text()}")
    return 0


def cmd_demo(args, settings: Settings, store) -> int:
    print(demo.seed(store, settings))
    return 0


def cmd_order_create(args, settings: Settings, store) -> int:
    data = read_json(args.json)
    order = orders.create_order(store, settings, data, quiet=args.quiet)
    return print_order(order, settings, args.format)


def cmd_order_show(args, settings: Settings, store) -> int:
    return print_order(orders.find_order(args.number), settings, args.format)


def print_order(order, settings: Settings, fmt: str) -> int:
    events = orders.order_events(order)
    if fmt == "json":
        print(json.dumps(order_to_json(order, settings, events), ensure_ascii=False, indent=2))
    else:
        print(say(order_detail(order, events, settings), settings.shop.locale, settings.outbound.templates_dir))
    return 0


def cmd_orders_list(args, settings: Settings, store) -> int:
    limit = settings.limits.list_default_limit if args.limit is None else args.limit
    found = filters.find_orders(args.filter, limit=(limit + 1) if limit else None)
    more = bool(limit) and len(found) > limit
    found = found[:limit] if limit else found
    if args.format == "json":
        print(json.dumps({"orders": [order_to_json(o, settings, []) | {"events": None} for o in found],
                          "more": more}, ensure_ascii=False, indent=2))
    else:
        print(say(order_table(found, more=more), settings.shop.locale, settings.outbound.templates_dir))
    return 0


def cmd_command(args, settings: Settings, store) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    outcomes = commands.run_text(store, settings, text, via=Via(quiet=args.quiet))
    if not outcomes:
        raise InputError("no command given (try 'help')")
    if args.format == "json":
        print(json.dumps({"results": [o.__dict__ for o in outcomes]}, ensure_ascii=False, indent=2))
    else:
        for outcome in outcomes:
            text = outcome.text if outcome.ok else Said("NOT DONE: %(text)s", text=outcome.text)
            print(say(text, settings.shop.locale, settings.outbound.templates_dir))
    if all(o.ok for o in outcomes):
        return 0
    return EXIT_USAGE if any(_is_usage(o) for o in outcomes) else EXIT_FAILURE


def _is_usage(outcome) -> bool:
    return outcome.number is None and not outcome.ok


def cmd_deliver(args, settings: Settings) -> int:
    """Pipe delivery: every failure is a sysexits code, never a traceback."""
    try:
        store = open_store(settings.database.url)
    except OrdermailError as exc:
        print(f"ordermail: {exc}", file=sys.stderr)
        return errors.EX_TEMPFAIL
    try:
        return pipe.deliver(store, settings, sys.stdin.buffer, args.recipient, args.sender)
    except Exception as exc:
        print(f"ordermail: {exc}", file=sys.stderr)
        return errors.sysexit(exc)
    finally:
        store.close()


def cmd_inbound_list(args, settings: Settings, store) -> int:
    rows = inbound_views.list_messages(args.state, args.limit)
    if args.format == "json":
        print(json.dumps({"messages": [inbound_views.message_json(m) for m in rows]}, ensure_ascii=False, indent=2))
    else:
        print(inbound_views.message_table(rows))
    return 0


def cmd_inbound_show(args, settings: Settings, store) -> int:
    message = inbound_views.get_message(args.id)
    if args.format == "json":
        print(json.dumps(inbound_views.message_json(message, raw=True), ensure_ascii=False, indent=2))
    else:
        print(inbound_views.message_detail(message))
    return 0


def cmd_inbound_retry(args, settings: Settings, store) -> int:
    """Handle the message again now; exit 1 if it ends quarantined again."""
    inbound_views.get_message(args.id)
    inbound.retry(store, args.id)
    state = inbound.handle_now(store, settings, args.id)
    if state is None:
        print(f"message {args.id}: handed to the running daemon's worker")
        return 0
    print(f"message {args.id}: {state}: {inbound_views.get_message(args.id).reason}")
    return errors.EXIT_FAILURE if state == "quarantined" else 0


def read_json(source: str):
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{source} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


HANDLERS = {
    ("check", None): cmd_check,
    ("demo", None): cmd_demo,
    ("order", "create"): cmd_order_create,
    ("order", "show"): cmd_order_show,
    ("orders", "list"): cmd_orders_list,
    ("command", None): cmd_command,
    ("inbound", "list"): cmd_inbound_list,
    ("inbound", "show"): cmd_inbound_show,
    ("inbound", "retry"): cmd_inbound_retry,
    **cli_mail.HANDLERS,
    **cli_payments.HANDLERS,
    **cli_web.HANDLERS,
    **cli_paypal.HANDLERS,
}


if __name__ == "__main__":
    sys.exit(main())
