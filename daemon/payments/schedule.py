"""The schedule for unpaid orders: one payment reminder, then the automatic cancellation.

Two daily jobs (daemon/jobs.py), per payment method ([payment.<method>]):

    payment-reminders  an order not paid and not cancelled, `remind_after_days`
                       after it was placed, gets one reminder mail (a public
                       `payment_reminder` event). Shipped but unpaid orders
                       (on account, cash on delivery) are reminded too.
    auto-cancel        an order not paid, not shipped and not cancelled,
                       `cancel_after_days` after it was placed, is cancelled
                       with a reason and the customer is told.

0 switches either off for a method. Days are calendar days in the zone the
jobs run in (the server's, as for `[shop] jobs_time`): an order placed on
1 December, with 7 and 21, is reminded by the run on 8 December whatever
the hour it came in; its customer may pay until 21 December, which the
reminder says, and the run on 22 December cancels it. Mails promise dates,
so dates decide, not hours.

The customer is always warned first, and keeps the time promised: with a
reminder step, an order is cancelled only after its reminder went out, and
no sooner than `cancel - remind` days after it (a daemon that was down a
week sends late reminders, and must not cancel the same morning).

Orders placed before this schedule existed (migration 0018) are left to the
owner. The domain service (daemon/orders/service.py) checks each step again under
the order's lock, so a payment booked a moment before the run wins, and two
daemons running the same job send one reminder.
"""
from __future__ import annotations

import datetime as dt

from daemon.orders import service as orders
from daemon.outbound import notify
from daemon.config import PaymentMethod, Settings
from daemon.errors import OrderNotFound
from daemon.store.job_runs import Outcome
from daemon.store.models import CANCELLED, PAID, SHIPPED, Order
from daemon.store.database import Store

# What an automatic cancellation gives as its reason, in the customer's language.
CANCEL_REASONS = {
    "de": "Bis zum {day} ist keine Zahlung eingegangen.",
    "en": "No payment had arrived by {day}.",
    "fr": "Aucun paiement n'était arrivé le {day}.",
}


# ---- the days ------------------------------------------------------------------------

def local_day(moment: dt.datetime, tz: dt.tzinfo) -> dt.date:
    """The calendar day of a stored (naive UTC) moment in `tz`."""
    return moment.replace(tzinfo=dt.timezone.utc).astimezone(tz).date()


def remind_on(order: Order, method: PaymentMethod, tz: dt.tzinfo) -> dt.date | None:
    if not method.remind_after_days:
        return None
    return local_day(order.created_at, tz) + dt.timedelta(days=method.remind_after_days)


def cancel_on(order: Order, method: PaymentMethod, tz: dt.tzinfo,
              reminded_at: dt.datetime | None = None) -> dt.date | None:
    """The day the order is cancelled if still unpaid (the day after the last day to pay);
    None: never, or not yet known because the reminder has not gone out."""
    if not method.cancel_after_days:
        return None
    day = local_day(order.created_at, tz) + dt.timedelta(days=method.cancel_after_days)
    if not method.remind_after_days:
        return day
    reminded_at = reminded_at or order.payment_reminded_at
    if reminded_at is None:
        return None
    grace = dt.timedelta(days=method.cancel_after_days - method.remind_after_days)
    return max(day, local_day(reminded_at, tz) + grace)


# ---- the jobs ------------------------------------------------------------------------

def send_reminders(settings: Settings, store: Store, now: dt.datetime, tz: dt.tzinfo) -> Outcome:
    outcome, today = Outcome(), local_day(now, tz)
    for name, method in settings.payment.items():
        if not method.remind_after_days:
            continue
        for order in _candidates(name, method.remind_after_days, now, PAID | CANCELLED,
                                 Order.payment_reminded_at.is_null()):
            if remind_on(order, method, tz) > today:
                continue
            last_day = cancel_on(order, method, tz, reminded_at=now)
            _apply(outcome, "reminded", order, lambda: orders.send_payment_reminder(
                store, settings, order.number, pay_by=last_day - dt.timedelta(days=1) if last_day else None,
                via=orders.Via(author="system", now=now)))
    return outcome


def cancel_unpaid(settings: Settings, store: Store, now: dt.datetime, tz: dt.tzinfo) -> Outcome:
    outcome, today = Outcome(), local_day(now, tz)
    for name, method in settings.payment.items():
        if not method.cancel_after_days:
            continue
        for order in _candidates(name, method.cancel_after_days, now, PAID | CANCELLED | SHIPPED):
            day = cancel_on(order, method, tz)
            if day is None or day > today:
                continue
            reason = _cancel_reason(settings, order, day - dt.timedelta(days=1))
            _apply(outcome, "cancelled", order, lambda: orders.cancel_unpaid(
                store, settings, order.number, reason=reason, via=orders.Via(author="system", now=now)))
    return outcome


def _candidates(method_name: str, days: int, now: dt.datetime, excluded: int, *more) -> list[Order]:
    """Orders of the method on the schedule, none of the `excluded` flags set, placed
    early enough in any zone (the exact day is checked by the caller), oldest first."""
    statuses = [s for s in range(16) if not s & excluded]
    placed_before = now - dt.timedelta(days=days - 1)
    query = (Order.select().where(Order.status.in_(statuses) & (Order.created_at < placed_before)
                                  & (Order.payment_method == method_name) & (Order.on_payment_schedule == True),  # noqa: E712
                                  *more)
             .order_by(Order.created_at, Order.id))
    return list(query)


def _apply(outcome: Outcome, key: str, order: Order, change) -> None:
    try:
        result = change()
    except OrderNotFound:      # deleted by the owner in the meantime
        return
    if result.done:
        outcome.add(key, result.number)


def _cancel_reason(settings: Settings, order: Order, last_day: dt.date) -> str:
    lang = notify.order_language(settings, order)
    return CANCEL_REASONS[lang].format(day=notify.day(last_day, lang=lang))
