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
        from daemon.translations import Said   # errors is imported by everything: kept light
        super().__init__(Said("no order %(number)s", number=number))
        self.number = number


class Refused(OrdermailError):
    """A rule of the order book forbids the change; the message says why."""


class StoreUnavailable(OrdermailError):
    """The database cannot be reached or used right now (try again later)."""


class StoreTooNew(OrdermailError):
    """The database was written by a newer ordermail than this one."""


# ---- outcomes at the mail doors -------------------------------------------------
# Each carries the SMTP reply it becomes and the sysexits code `ordermail
# deliver` exits with; `smtp_reply` and `sysexit` are the one mapping.

EX_OK, EX_DATAERR, EX_NOUSER, EX_SOFTWARE, EX_TEMPFAIL = 0, 65, 67, 70, 75


class MailRefused(OrdermailError):
    smtp = "550 5.0.0 Refused"
    sysexit = EX_DATAERR

    def __init__(self, detail: str = ""):
        super().__init__(detail or self.smtp[10:])


class NotOurDomain(MailRefused):
    smtp = "550 5.7.1 Relaying denied: we accept mail for the shop only"
    sysexit = EX_NOUSER


class UnknownRecipient(MailRefused):
    smtp = "550 5.1.1 No such recipient here"
    sysexit = EX_NOUSER


class ExpiredRecipient(UnknownRecipient):
    smtp = "550 5.1.1 This reply address has expired; please write to the shop's address"


class TooLarge(MailRefused):
    smtp = "552 5.3.4 Message too big for this system"
    sysexit = EX_DATAERR


class AutoSubmittedCommand(MailRefused):
    smtp = "550 5.7.1 Automatic mail is not taken at the command address"
    sysexit = EX_DATAERR


class TryLater(MailRefused):
    smtp = "451 4.3.0 Temporary failure, please try again later"
    sysexit = EX_TEMPFAIL


class ShuttingDown(TryLater):
    smtp = "421 4.3.2 Service shutting down, please try again later"


def smtp_reply(error: BaseException) -> str:
    """The SMTP answer for any failure; the unexpected is temporary, never 5xx."""
    return error.smtp if isinstance(error, MailRefused) else TryLater.smtp


def sysexit(error: BaseException) -> int:
    return error.sysexit if isinstance(error, MailRefused) else EX_TEMPFAIL
