"""`ordermail payments import FILE`: a bank statement marks transfers paid.

    payments import FILE|- [--preview] [--format text|json]

`cli/main.py` adds this with `add_parsers(payments, common, parser_class)` and
dispatches through `HANDLERS`. A file that is no statement we read is an
InputError (exit 2, one line); the import itself is daemon/payments/statements.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from daemon import translations
from daemon.config import Settings
from daemon.errors import InputError
from daemon.payments.statements import importer, report


def add_parsers(payments, common, parser_class) -> None:
    """`payments import` into the `payments` subcommands (cli.add_payments_parsers)."""
    imp = payments.add_parser("import", parents=[common],
                              help="a bank statement (CAMT.053, also zipped; MT940; CSV): credits mark orders paid")
    imp.add_argument("file", help="the statement file, or - for stdin")
    imp.add_argument("--preview", action="store_true", help="say what the import would do, change nothing")
    imp.add_argument("--format", choices=("text", "json"), default="text")


def cmd_payments_import(args, settings: Settings, store) -> int:
    data = read_file(args.file, settings.statements.max_bytes)
    name = "stdin" if args.file == "-" else Path(args.file).name
    result = importer.import_statement(store, settings, data, name, preview=args.preview)
    if args.format == "json":
        print(json.dumps(report.as_json(result) | {"preview": args.preview}, ensure_ascii=False, indent=2))
    else:
        lang, shop_dir = settings.shop.locale, settings.outbound.templates_dir
        preview = translations.get(lang, shop_dir).gettext("Preview, nothing was changed.") + "\n"
        print((preview if args.preview else "") + report.as_text(result, lang=lang, shop_dir=shop_dir))
    return 0


def read_file(source: str, max_bytes: int) -> bytes:
    """The file's bytes; one byte over the limit is enough to refuse it (reading.py says how)."""
    try:
        if source == "-":
            return sys.stdin.buffer.read(max_bytes + 1)
        with open(source, "rb") as stream:
            return stream.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(f"cannot read {source}: {exc.strerror}") from None


HANDLERS = {
    ("payments", "import"): cmd_payments_import,
}
