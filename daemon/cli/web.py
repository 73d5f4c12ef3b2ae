"""`ordermail order relink N`: revoke an order's status link and issue a new one.

Hooked into daemon/cli/main.py's `order` group by `add_order_parsers`; the
handlers follow cli/main.py's shape, handler(args, settings, store) -> exit code.
"""
from __future__ import annotations

import json

from daemon.config import Settings
from daemon.translations import Said, say
from statuspage import links


def add_order_parsers(order, common, parser_class) -> None:
    """Add `relink` to the `order` subcommands (`order` is cli/main.py's subparsers object)."""
    relink = order.add_parser("relink", parents=[common],
                              help="revoke the order's status link and issue a new one (mailed to the customer)")
    relink.add_argument("number")
    relink.add_argument("--quiet", action="store_true", help="do not mail the new link to the customer")
    relink.add_argument("--format", choices=("text", "json"), default="text")


def cmd_order_relink(args, settings: Settings, store) -> int:
    order = links.relink(store, settings, args.number, mail=not args.quiet)
    url = settings.status_url(order.status_token)
    if args.format == "json":
        print(json.dumps({"number": order.number, "status_url": url, "mailed": not args.quiet}))
    else:
        mailed = (Said("not mailed (--quiet)") if args.quiet
                  else Said("mailed to %(email)s", email=order.customer_email))
        print(say(Said("%(number)s: the old status link no longer works; new link %(mailed)s:\n%(url)s",
                       number=order.number, mailed=mailed, url=url), settings.shop.locale, settings.outbound.templates_dir))
    return 0


HANDLERS = {
    ("order", "relink"): cmd_order_relink,
}
