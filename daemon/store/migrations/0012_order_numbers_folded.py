"""Order numbers unique regardless of case: an index on lower(number).

`demo-1` beside `DEMO-1` let a command name the wrong order. Where the
orders already hold such a pair, the upgrade must not fail (the daemon would
not start): an ordinary index is made instead, the pair is named in the log
and by `ordermail check`, and the index becomes unique at the first start
after the owner has deleted one of them (daemon/orders/numbers.py).
"""
import logging

from daemon.orders.numbers import clash_warning, settle_index


def up(migrator, db):
    found = settle_index(db)
    if found:
        logging.getLogger("ordermail.store").warning(clash_warning(found))
