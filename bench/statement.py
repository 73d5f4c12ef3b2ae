"""How fast does a bank statement import? A CAMT.053 of 10,000 credits against 100,000 orders.

    .venv/bin/python bench/statement.py [--orders 100000] [--credits 10000] [--runs 3]
                                        [--postgres [URL]]

Builds a store of N orders (numbers 10001…, totals from the shop's price
list, none paid) once, then for each run imports, into a fresh copy of it,
one CAMT.053 file of M credits in one `ordermail payments import` call
(`importer.import_statement`: read, match, mark paid through the domain
service's batch form `orders.mark_paid_many`, queue the customer's mail,
remember each entry, one transaction): 90 % name an order with its exact
amount (marked paid), 5 % name one with another amount (a note on the order,
`orders.add_events`), 5 % name none. The remittance texts are cut into
<Ustrd> lines of 35 characters, as banks do, so numbers are split across
lines now and then.

Each run is timed twice over: wall-clock, and CPU seconds of the process
(on SQLite the database's work is done in the process, so CPU time is the
import's whole cost, whatever else the machine runs). Measured in the same
run, as baselines: reading the file alone (parse, no database; wall and
CPU), and the order lookups alone. The plans of the import's queries are
printed — the match, the locked read of a batch of orders, the batch's
UPDATE of the orders, the check for entries imported before — none a full
scan; the lookups are timed once with the index switched off (NOT INDEXED,
on a sample): the full scan per entry that the index avoids. The goal is
≥ 5,000 entries/s on SQLite. The load average is printed with the figures:
other work on the machine slows the wall-clock columns (CPU time less), the
ratios to the baseline least. The last line, `BENCH_JSON {…}`, has
everything in machine-readable form.

--postgres runs the same import against that server (default: the test
server) in a temporary schema, with EXPLAIN ANALYZE of one match query and
EXPLAIN of the others.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from daemon.config import settings_from_dict  # noqa: E402
from daemon.payments.statements import importer, matching  # noqa: E402
from daemon.payments.statements.reading import read_statement  # noqa: E402
from daemon.store.models import Order, StatementEntry
from daemon.store.database import open_store
from statementfiles import Booking, camt053  # noqa: E402

GOAL = 5_000                      # entries per second, SQLite
FIRST = 10_001
PRICES = ["24.90", "6.50", "8.90", "12.40", "14.00", "4.20", "39.00", "31.40", "49.80", "17.30"]
TEXTS = ["Bestellung {n}", "Bestellnr. {n} {name}", "{name} Bestellung Nr {n} Teekanne und Sieb",
         "RE {n}", "Order {n} thank you", "Auftrag {n} vom 19.11.2026 Kundennummer 4711"]
NAMES = ["Erika Mustermann", "Jürgen Müller", "Camille Dubois", "Olivia Smith", "Hans Meier"]
BATCH = 5_000


def build_orders(store, count: int, seed: int = 7) -> list[tuple[str, str]]:
    """N unpaid orders, written straight into the table (the set-up, not what is measured)."""
    rng = random.Random(seed)
    now = dt.datetime(2026, 11, 19, 12, 0)
    made = []
    with store.atomic():
        for start in range(0, count, BATCH):
            rows = []
            for n in range(start, min(start + BATCH, count)):
                number, total = str(FIRST + n), rng.choice(PRICES)
                name = rng.choice(NAMES)
                rows.append({"number": number, "customer_name": name, "customer_email": f"c{n}@example.org",
                             "customer_key": name.lower(), "surname_key": name.split()[-1].lower(),
                             "total": Decimal(total), "currency": "EUR", "payment_method": "bank_transfer",
                             "locale": "de", "status": 0, "created_at": now, "updated_at": now,
                             "status_token": secrets.token_urlsafe(24), "reply_secret": secrets.token_hex(32)})
                made.append((number, total))
            Order.insert_many(rows).execute()
    store.db.execute_sql("ANALYZE")
    return made


def statement_file(made: list[tuple[str, str]], credits: int, seed: int = 11) -> bytes:
    rng = random.Random(seed)
    chosen = rng.sample(made, credits)
    bookings = []
    for i, (number, total) in enumerate(chosen):
        name = rng.choice(NAMES)
        text = rng.choice(TEXTS).format(n=number, name=name)
        amount = total
        if i % 20 == 1:                         # 5 %: another amount
            amount = str(Decimal(total) - Decimal("1.00"))
        elif i % 20 == 2:                       # 5 %: no order number
            text = f"Spende {name} Dezember"
        bookings.append(Booking(amount, text, payer=name, reference=f"2026112{i:09d}"))
    return camt053(bookings)


def batch_queries(store) -> dict[str, tuple[str, list]]:
    """The import's statements besides the match, as the code builds them (with three values each)."""
    numbers, now = [str(FIRST), str(FIRST + 7), str(FIRST + 9)], dt.datetime(2026, 11, 20)
    locked = Order.select().where(Order.number.in_(numbers))
    queries = {
        "locked read": locked.order_by(Order.id).for_update() if store.backend == "postgresql" else locked,
        "orders paid": Order.update(status=1, paid_at=now, updated_at=now).where(Order.id.in_([1, 8, 10])),
        "imported before": StatementEntry.select(StatementEntry.entry_key)
        .where(StatementEntry.entry_key.in_(["a" * 64, "b" * 64, "c" * 64])),
    }
    return {name: query.sql() for name, query in queries.items()}


def plans_sqlite(store) -> dict[str, str]:
    def plan(sql, params):
        return " | ".join(row[-1] for row in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))
    return {"match": plan(matching.match_sql(store, 3), ["1", "2", "3"]),
            **{name: plan(*query) for name, query in batch_queries(store).items()}}


def plans_postgres(store) -> dict[str, str]:
    def plan(explain, sql, params):
        return " | ".join(row[0].strip() for row in store.db.execute_sql(f"{explain} {sql}", params))
    match = plan("EXPLAIN ANALYZE", matching.match_sql(store, 3), [str(FIRST), str(FIRST + 7), "X1"])
    return {"match": match, **{name: plan("EXPLAIN", *query) for name, query in batch_queries(store).items()}}


def all_keys(data: bytes, settings) -> set[str]:
    statement = read_statement(data, "bench.xml", settings.statements)
    return {c.key for e in statement.entries for t in e.search_texts for c in matching.candidates(t)}


def time_parse(data: bytes, settings) -> tuple[float, float]:
    """Wall-clock and CPU seconds of reading the file alone."""
    start, cpu = time.perf_counter(), time.process_time()
    read_statement(data, "bench.xml", settings.statements)
    return time.perf_counter() - start, time.process_time() - cpu


def time_lookups(store, keys: set[str]) -> float:
    start = time.perf_counter()
    matching.find_orders(store, keys)
    return time.perf_counter() - start


def time_scans(store, keys: set[str], sample: int = 20) -> float:
    """Seconds per entry's lookup without the index (SQLite NOT INDEXED), from a sample."""
    picked = sorted(keys)[:sample * 10]
    sql = matching.match_sql(store, 10).replace("FROM orders", "FROM orders NOT INDEXED")
    start = time.perf_counter()
    for i in range(0, len(picked), 10):
        chunk = picked[i:i + 10]
        if len(chunk) == 10:
            store.db.execute_sql(sql, chunk).fetchall()
    return (time.perf_counter() - start) / sample


def one_import(url: str, data: bytes) -> tuple[float, float, importer.ImportResult]:
    """Wall-clock and CPU seconds of one import (CPU: this process's, the database's work included on SQLite)."""
    settings = settings_from_dict({"database": {"url": url},
                                   "statements": {"max_bytes": 200 * 2**20, "max_entries": 100_000}})
    store = open_store(url)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        result = importer.import_statement(store, settings, data, "bench.xml")
        return time.perf_counter() - start, time.process_time() - cpu, result
    finally:
        store.close()


def run_sqlite(args, data: bytes, made_holder: list) -> dict:
    work = Path(tempfile.mkdtemp(prefix="ordermail-bench-"))
    try:
        template = work / "template.db"
        store = open_store(f"sqlite:///{template}")
        started = time.perf_counter()
        made_holder.extend(build_orders(store, args.orders))
        print(f"built {args.orders} orders in {time.perf_counter() - started:.1f} s")
        store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        data = data or statement_file(made_holder, args.credits)
        settings = settings_from_dict({"statements": {"max_bytes": 200 * 2**20, "max_entries": 100_000}})
        parses, import_times, cpu_times, lookup_times, result = [], [], [], [], None
        store = open_store(f"sqlite:///{template}")
        keys = all_keys(data, settings)
        plans = plans_sqlite(store)
        scan_per_entry = time_scans(store, keys)
        for _ in range(args.runs):
            lookup_times.append(time_lookups(store, keys))
        store.close()
        for run in range(args.runs):       # each import next to a reading of the file, in the same minute
            parses.append(time_parse(data, settings))
            copy = work / f"run{run}.db"
            shutil.copy(template, copy)
            seconds, cpu, result = one_import(f"sqlite:///{copy}", data)
            import_times.append(seconds)
            cpu_times.append(cpu)
            copy.unlink()
        return _figures("sqlite", args.credits, parses, lookup_times, import_times, cpu_times, result, plans,
                        scan_per_entry=scan_per_entry, candidate_keys=len(keys))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_postgres(args, data: bytes) -> dict:
    import psycopg2
    base = args.postgres
    schema = f"bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(base)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-c search_path={schema}')}"
    try:
        store = open_store(url)
        made = build_orders(store, args.orders)
        data = data or statement_file(made, args.credits)
        settings = settings_from_dict({"statements": {"max_bytes": 200 * 2**20, "max_entries": 100_000}})
        keys = all_keys(data, settings)
        lookups = [time_lookups(store, keys) for _ in range(args.runs)]
        store.close()
        parses = [time_parse(data, settings)]
        seconds, cpu, result = one_import(url, data)     # once: a second run would find them imported
        store = open_store(url)
        try:
            store.db.execute_sql("ANALYZE")                # statement_entry was empty before the import
            plans = plans_postgres(store)
        finally:
            store.close()
        return _figures("postgresql", args.credits, parses, lookups, [seconds], [cpu], result, plans,
                        candidate_keys=len(keys))
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def _figures(backend, credits, parses, lookup_times, import_times, cpu_times, result, plans, **extra) -> dict:
    """`parses`: (wall, CPU) seconds of reading the file alone, one next to each import."""
    best, best_cpu = min(import_times), min(cpu_times)
    parse_wall, parse_cpu = min(w for w, _ in parses), min(c for _, c in parses)
    return {
        "backend": backend, "credits": credits,
        "import_s": [round(t, 3) for t in import_times],
        "import_cpu_s": [round(t, 3) for t in cpu_times],
        "import_entries_per_s": round(credits / best),
        "import_entries_per_s_median": round(credits / statistics.median(import_times)),
        "import_entries_per_cpu_s": round(credits / best_cpu),
        "parse_entries_per_s": round(credits / parse_wall),
        "parse_entries_per_cpu_s": round(credits / parse_cpu),
        "import_vs_parse": round(best / parse_wall, 2),
        "import_vs_parse_cpu": round(best_cpu / parse_cpu, 2),
        "lookup_s": round(min(lookup_times), 4),
        "outcomes": {kind: len(result.of(kind)) for kind in importer.OUTCOMES},
        "plans": plans, **extra,
    }


def print_figures(f: dict) -> None:
    print(f"\n== {f['backend']}: {f['credits']} credits in one import")
    print(f"  outcomes: {f['outcomes']}")
    print(f"  import, wall-clock: best {f['import_entries_per_s']} entries/s, median "
          f"{f['import_entries_per_s_median']} entries/s (runs: {', '.join(f'{t:.2f} s' for t in f['import_s'])})")
    print(f"  import, CPU: {f['import_entries_per_cpu_s']} entries per CPU second "
          f"(runs: {', '.join(f'{t:.2f} s' for t in f['import_cpu_s'])})")
    print(f"  baseline, reading the file alone: {f['parse_entries_per_s']} entries/s wall-clock, "
          f"{f['parse_entries_per_cpu_s']} per CPU second (the import takes {f['import_vs_parse']}x as long, "
          f"{f['import_vs_parse_cpu']}x the CPU)")
    print(f"  order lookups alone: {f['lookup_s'] * 1000:.0f} ms for {f['candidate_keys']} candidate numbers")
    if "scan_per_entry" in f:
        per_entry = f["scan_per_entry"] * 1000
        print(f"  without the index (NOT INDEXED): {per_entry:.1f} ms per entry, "
              f"{f['credits'] * per_entry / 1000:.0f} s for the statement")
    for name, plan in f["plans"].items():
        print(f"  plan, {name}: {plan}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--credits", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--postgres", nargs="?", const="postgresql://postgres@127.0.0.1:5432/test", default=None)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    results = []
    if not args.skip_sqlite:
        results.append(run_sqlite(args, b"", []))
        print_figures(results[-1])
    if args.postgres:
        results.append(run_postgres(args, b""))
        print_figures(results[-1])
    after = os.getloadavg()
    print(f"\nload average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    sqlite = next((r for r in results if r["backend"] == "sqlite"), None)
    if sqlite:
        for what, key in (("wall-clock", "import_entries_per_s"), ("per CPU second", "import_entries_per_cpu_s")):
            verdict = "met" if sqlite[key] >= GOAL else "NOT met"
            print(f"goal ≥ {GOAL} entries/s on SQLite, {what}: {verdict} ({sqlite[key]})")
    print("BENCH_JSON " + json.dumps({"load_before": load, "load_after": after, "results": results},
                                     ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
