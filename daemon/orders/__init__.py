"""The order book: the domain service every change goes through, filters, order numbers, orders as JSON and as text."""
