"""Health and Prometheus metrics, read from the database when asked.

Nothing is counted in memory: every figure comes from the store at the
moment of the request, so any gunicorn worker (or any of several daemons on
one database) gives the same answer. And every query is bounded, whatever
the size of the tables:

- queues (mail waiting, in quarantine, failed) are counted on the (state, …)
  indexes, at most `COUNT_CAP` rows each;
- outcomes and latencies are taken over the last `WINDOW` mails in and out,
  a primary-key range: "of the last 1,000 mails received, 987 were handled,
  12 quarantined; p99 from receipt to handled 0.4 s". Such figures
  can go down, so they are gauges (the histograms gauge histograms); alert on
  them directly rather than with rate().

Measured on SQLite: counting every mail ever received costs ~0.1 s per
million rows at each scrape, and reading the times of the last 10,000 mails
of 50 KB ~0.27 s (the times sit behind the raw bytes in each row); the last
1,000 take ~25 ms. Exact ever-growing counters would need a rollup table.
"""
import bisect
import collections
import logging

import peewee as pw
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

from daemon.payments.paypal import OUTCOMES as PAYPAL_OUTCOMES
from daemon.store.models import InboundMessage, OutboxMessage, PaypalIpn, utcnow
from daemon.store.database import DATABASE_ERRORS, Store, first_line

log = logging.getLogger("ordermail.web")
COUNT_CAP = 100_000
WINDOW = 1_000
INBOUND_QUEUES = ("new", "processing", "quarantined")
OUTBOX_QUEUES = ("pending", "sending", "failed")
PAYPAL_QUEUES = ("pending", "verifying", "failed")
INBOUND_STATES = ("new", "processing", "done", "duplicate", "quarantined")
OUTBOX_STATES = ("pending", "sending", "sent", "failed")
INBOUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
OUTBOX_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 120 * 3600)


def health(store: Store) -> dict:
    """The /healthz document; raises one of DATABASE_ERRORS when the database fails."""
    return {"database": "ok",
            "inbound": {state: _count(InboundMessage, state) for state in ("new", "quarantined")},
            "outbox": {state: _count(OutboxMessage, state) for state in ("pending", "failed")}}


def registry_for(store: Store) -> CollectorRegistry:
    """A registry of our own (never the global one), collected at each scrape."""
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return registry


class StoreCollector:
    """A prometheus-client collector that asks the store at each scrape."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        up = GaugeMetricFamily("ordermail_database_up", "1 when the database answered this scrape")
        try:
            families = list(self._families())
        except DATABASE_ERRORS as exc:
            log.warning("metrics: database unavailable: %s", first_line(exc))
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _families(self):
        yield _queues("ordermail_inbound_queue", "Mails received and waiting, being handled, or quarantined",
                      InboundMessage, INBOUND_QUEUES)
        yield _queues("ordermail_outbox_queue", "Mails to send: waiting, being sent, or given up",
                      OutboxMessage, OUTBOX_QUEUES)
        age = GaugeMetricFamily("ordermail_queue_oldest_seconds", "Age of the oldest mail waiting",
                                labels=["queue"])
        age.add_metric(["inbound"], _oldest(InboundMessage, InboundMessage.received_at, "new"))
        age.add_metric(["outbox"], _oldest(OutboxMessage, OutboxMessage.created_at, "pending"))
        yield age
        inbound = self._recent(InboundMessage, InboundMessage.received_at, InboundMessage.processed_at)
        outbox = self._recent(OutboxMessage, OutboxMessage.created_at, OutboxMessage.sent_at)
        yield _by_state("ordermail_inbound_recent", f"The last {WINDOW} mails received, by outcome",
                        inbound, INBOUND_STATES)
        yield _by_state("ordermail_outbox_recent", f"The last {WINDOW} mails queued to send, by state",
                        outbox, OUTBOX_STATES)
        yield _histogram("ordermail_inbound_processing_seconds",
                         f"Received to handled, of the last {WINDOW} mails received",
                         _durations(inbound, ("done", "duplicate", "quarantined")), INBOUND_BUCKETS)
        yield _histogram("ordermail_outbox_delivery_seconds", f"Queued to sent, of the last {WINDOW} mails queued",
                         _durations(outbox, ("sent",)), OUTBOX_BUCKETS)
        yield _queues("ordermail_paypal_ipn_queue", "PayPal IPN messages waiting for verification, being verified, "
                      "or given up", PaypalIpn, PAYPAL_QUEUES)
        yield _paypal_outcomes()

    def _recent(self, model, start, end) -> list[tuple[str, float | None]]:
        """(state, seconds from start to end) of the last WINDOW rows: one primary-key range.

        Filtering and grouping happen here, not in SQL, so that no planner is
        tempted to walk a state index through the whole table instead.
        """
        first = (model.select(pw.fn.MAX(model.id)).scalar() or 0) - WINDOW
        seconds = _seconds_between(self.store, start, end)
        query = model.select(model.state, seconds).where(model.id > first)
        return self.store.db.execute(query).fetchall()   # plain rows: peewee's per-row work would triple the cost


def _paypal_outcomes() -> GaugeMetricFamily:
    """What the last WINDOW PayPal messages did; `invalid` counts forged ones (never mailed to the owner)."""
    first = (PaypalIpn.select(pw.fn.MAX(PaypalIpn.id)).scalar() or 0) - WINDOW
    found = collections.Counter(outcome for outcome, in PaypalIpn.select(PaypalIpn.outcome)
                                .where((PaypalIpn.id > first) & (PaypalIpn.state == "done")).tuples())
    family = GaugeMetricFamily("ordermail_paypal_ipn_recent",
                               f"The last {WINDOW} PayPal IPN messages received, by outcome", labels=["outcome"])
    for outcome in dict.fromkeys((*PAYPAL_OUTCOMES, *found)):
        family.add_metric([outcome], found.get(outcome, 0))
    return family


def _count(model, state: str) -> int:
    return model.select(model.id).where(model.state == state).limit(COUNT_CAP).count()


def _queues(name: str, documentation: str, model, states) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, f"{documentation} (counted up to {COUNT_CAP})", labels=["state"])
    for state in states:
        family.add_metric([state], _count(model, state))
    return family


def _by_state(name: str, documentation: str, rows, states) -> GaugeMetricFamily:
    found = collections.Counter(state for state, _ in rows)
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    for state in dict.fromkeys((*states, *found)):
        family.add_metric([state], found.get(state, 0))
    return family


def _durations(rows, states) -> list[float]:
    return sorted(max(0.0, float(seconds)) for state, seconds in rows if state in states and seconds is not None)


def _oldest(model, field, state: str) -> float:
    first = model.select(field).where(model.state == state).order_by(model.id).limit(1).scalar()
    return max(0.0, (utcnow() - first).total_seconds()) if first else 0.0


def _histogram(name, documentation, durations: list[float], bounds) -> GaugeHistogramMetricFamily:
    buckets = [(_bound(b), bisect.bisect_right(durations, b)) for b in bounds]
    buckets.append(("+Inf", len(durations)))
    return GaugeHistogramMetricFamily(name, documentation, buckets=buckets, gsum_value=sum(durations))


def _bound(value) -> str:
    return repr(float(value))


def _seconds_between(store: Store, start, end):
    if store.backend == "postgresql":
        return pw.fn.EXTRACT(pw.NodeList((pw.SQL("EPOCH FROM"), end - start)))
    return (pw.fn.julianday(end) - pw.fn.julianday(start)) * 86400.0

