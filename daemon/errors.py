"""The typed outcomes: every expected failure is one of these.

Each carries the exit code a command-line caller gets (sysexits-style where a
mail transport is the caller). They are raised where the problem is found and
turned into an answer in one place per door (`cli.main` for the command line).
"""
from __future__ import annotations

EXIT_FAILURE = 1
EXIT_USAGE = 2


class OrdermailError(Exception):
    """Base of the tree; the message is one line fit for a user."""
    exit_code = EXIT_FAILURE


class ConfigError(OrdermailError):
    """The configuration file is missing, unreadable or wrong."""
    exit_code = EXIT_USAGE


class InputError(OrdermailError):
    """The user's input (order JSON, a filter, a command line) is malformed."""
    exit_code = EXIT_USAGE


class FilterSyntaxError(InputError):
    """A filter expression does not parse; the message names the column."""


class OrderNotFound(OrdermailError):
    def __init__(self, number: str):
        super().__init__(f"no order {number}")
        self.number = number


class Refused(OrdermailError):
    """A rule of the order book forbids the change; the message says why."""


class StoreUnavailable(OrdermailError):
    """The database cannot be reached or used right now (try again later)."""


class StoreTooNew(OrdermailError):
    """The database was written by a newer ordermail than this one."""
