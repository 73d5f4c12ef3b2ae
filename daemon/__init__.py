"""ordermail's daemon: the order book, mail intake and outbound mail."""
