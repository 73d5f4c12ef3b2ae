"""How fast are the documented filters on a large order book?

    .venv/bin/python bench/orders_scale.py [--orders N] [--db PATH] [--runs R]
                                           [--postgres [URL] --pg-orders M]

Builds (once; cached under bench/results/, keyed by N and the schema) a
SQLite store of N orders (default 1,000,000) with items and a log of a few
events each, spread over three years: old orders mostly paid and shipped, a
few % cancelled, ~1% refunded, the last days' orders still open. Then it runs
ANALYZE and, for each filter of the filter language, "the newest 50 matching"
(`filters.find_orders(text, limit=50)`), a status-page token lookup, and a
deliberate full scan as a baseline that makes the figures comparable across
machines. It prints the median time, the query plan and a flag for any full
table scan, a table and one JSON line (`BENCH_JSON {...}`).

With --postgres it builds M orders (default 50,000) in a temporary schema of
that server, runs the same queries there with EXPLAIN, and drops the schema.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import secrets
import statistics
import sys
import time
import unicodedata
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import peewee as pw  # noqa: E402

from daemon.orders import filters  # noqa: E402
from daemon.store.models import CANCELLED, PAID, REFUNDED, SHIPPED, Order
from daemon.store.database import MIGRATIONS_DIR, 

GENERATOR_VERSION = 1            # bump when the data below changes
RESULTS = ROOT / "bench" / "results"
END = dt.datetime(2026, 1, 15, 18, 0)
SPAN = dt.timedelta(days=3 * 365)
BATCH = 20_000
GOAL_MS = 5.0
COMMON_SURNAME_SHARE = 0.3   # the rest of the customers have rarer names

# Common first and last names (German, French, English), most common first.
FIRST_NAMES = """Maria Anna Sophie Emma Marie Julia Laura Lena Sarah Lisa Katharina Hannah Lea
Johanna Sandra Sabine Petra Claudia Susanne Nicole Andrea Stefanie Monika Ursula Renate Erika
Jürgen Thomas Michael Andreas Stefan Peter Klaus Wolfgang Frank Markus Christian Martin Daniel
Alexander Tobias Jan Lukas Felix Jonas Paul Leon Maximilian Sebastian Matthias Günter Uwe Jörg
Camille Léa Chloé Manon Inès Zoë Élodie Hélène Amélie Céline Isabelle Nathalie Sylvie Françoise
Jean Pierre Louis Hugo Lucas Nicolas Julien François Mathieu Antoine Olivier Philippe Stéphane
Olivia Emily Charlotte Amelia Jessica Emily Grace Chloe Lucy Sophie Oliver George Harry Jack
James William Thomas Charlie Daniel David Richard Robert John Joseph Edward Henry Samuel""".split()
LAST_NAMES = """Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer
Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann
Lange Schmitt Werner Schmitz Krause Meier Lehmann Schmid Schulze Maier Köhler Herrmann König
Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung Hahn Schubert Vogel Friedrich
Keller Günther Frank Berger Winkler Roth Beck Lorenz Baumann Franke Albrecht Schuster Simon Ludwig
Böhm Winter Kraus Martin Schumacher Krämer Vogt Stein Jäger Otto Sommer Groß Seidel Heinrich
Brandt Haas Schreiber Graf Mustermann Dietrich Ziegler Kuhn Kühn Pohl Engel Horn Busch Bergmann
Martin Bernard Dubois Thomas Robert Richard Petit Durand Leroy Moreau Simon Laurent Lefèvre
Michel Garcia David Bertrand Roux Vincent Fournier Morel Girard André Lefebvre Mercier Dupont
Lambert Bonnet François Martinez Smith Jones Williams Taylor Brown Davies Evans Wilson Johnson
Roberts Robinson Wright Thompson Walker White Edwards Hughes Green Hall Lewis Harris Clarke
Patel Jackson Wood Turner Martin Cooper Hill Ward Morris Moore Clark Lee King Baker Harrison""".split()
DOMAINS = ["gmail.com", "web.de", "gmx.de", "t-online.de", "outlook.com", "yahoo.com",
           "orange.fr", "free.fr", "icloud.com", "posteo.de", "hotmail.co.uk", "mailbox.org"]
PRODUCTS = [("TK-1", "Teekanne", "24.90"), ("TS-2", "Teesieb", "6.50"), ("GT-3", "Grüntee 100 g", "8.90"),
            ("ST-4", "Schwarztee 250 g", "12.40"), ("TB-5", "Teebecher", "14.00"),
            ("KA-6", "Kandis 500 g", "4.20"), ("GS-7", "Geschenkset", "39.00")]


# ---- the data --------------------------------------------------------------

def status_for(age_days: float, rng: random.Random) -> int:
    """Most old orders paid and shipped; a few cancelled or refunded; new ones open."""
    r = rng.random()
    if age_days < 3:
        return 0 if r < 0.6 else PAID if r < 0.9 else PAID | SHIPPED
    if age_days < 14:
        return (0 if r < 0.15 else PAID if r < 0.4 else PAID | SHIPPED if r < 0.95 else CANCELLED)
    if r < 0.030:
        return CANCELLED
    if r < 0.035:
        return PAID | CANCELLED | REFUNDED
    if r < 0.045:
        return PAID | SHIPPED | REFUNDED
    if r < 0.047:
        return 0                    # a forgotten bank transfer
    return PAID | SHIPPED


def ascii_fold(text: str) -> str:
    text = text.replace("ß", "ss")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def zipf(values: list[str], exponent: float = 0.6) -> list[float]:
    """Cumulative weights falling like 1/rank^exponent: a few names are very common."""
    total, cumulative = 0.0, []
    for rank in range(1, len(values) + 1):
        total += 1 / rank ** exponent
        cumulative.append(total)
    return cumulative


SYLLABLES = ("ber bran dor fel ha hei hol kam lin mar nie ober pau rei sau sel stan tal "
             "wal wer ze bach berg brink dorf feld hau horst kamp mann meier rath ner "
             "ring rott schläger stein tal wald wirth").split()


def rare_surname(rng: random.Random) -> str:
    """The long tail of surnames: most people do not have one of the common ones."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3)))).capitalize()


def customers(n: int, rng: random.Random) -> list[tuple[str, str]]:
    firsts = rng.choices(FIRST_NAMES, cum_weights=zipf(FIRST_NAMES), k=n)
    commons = rng.choices(LAST_NAMES, cum_weights=zipf(LAST_NAMES), k=n)
    people = []
    for i, (first, common) in enumerate(zip(firsts, commons)):
        last = common if rng.random() < COMMON_SURNAME_SHARE else rare_surname(rng)
        f, l = ascii_fold(first).lower(), ascii_fold(last).lower()
        local = rng.choice((f"{f}.{l}", f"{f[0]}.{l}", f"{f}{l}{i % 97}", f"{l}.{f}"))
        people.append((f"{first} {last}", f"{local}{i}@{rng.choice(DOMAINS)}"))
    return people


def generate(n: int, seed: int = 1):
    """Batches of (orders, items, events) rows; timestamps as datetime."""
    rng = random.Random(seed)
    people = customers(max(1, n * 6 // 10), rng)
    start, step = END - SPAN, SPAN / n
    orders, items, events = [], [], []
    for i in range(n):
        order_id = i + 1
        created = start + step * i + step * rng.random() * 0.9
        age = (END - created).total_seconds() / 86400
        status = status_for(age, rng)
        name, email = people[rng.randrange(len(people))]
        key, surname = filters.name_keys(name)
        lines = rng.sample(PRODUCTS, rng.choice((1, 1, 1, 2, 2, 3)))
        total = sum(float(price) for _, _, price in lines)
        method = "paypal" if rng.random() < 0.55 else "bank_transfer"
        paid = created + dt.timedelta(hours=rng.uniform(0.01, 72)) if status & PAID else None
        shipped = (paid or created) + dt.timedelta(hours=rng.uniform(4, 60)) if status & SHIPPED else None
        cancelled = created + dt.timedelta(days=rng.uniform(1, 20)) if status & CANCELLED else None
        refunded = ((shipped or paid) + dt.timedelta(days=rng.uniform(2, 30))
                    if status & REFUNDED else None)
        changed = max(t for t in (created, paid, shipped, cancelled, refunded) if t)
        tracking = f"00340434{rng.randrange(10**10):010d}" if shipped else None
        orders.append((order_id, str(1000 + order_id), name, email, key, surname, f"{total:.2f}",
                       "EUR", method, "de", status, created, changed, paid, shipped, cancelled,
                       refunded, f"{total:.2f}" if refunded else None, tracking,
                       "DHL" if shipped else None, secrets.token_urlsafe(24), secrets.token_hex(32)))
        for position, (sku, title, price) in enumerate(lines):
            items.append((order_id, position, sku, title, 1, price))
        events.extend(order_log(order_id, created, paid, shipped, cancelled, refunded, tracking, rng))
        if len(orders) == BATCH:
            yield orders, items, events
            orders, items, events = [], [], []
    if orders:
        yield orders, items, events


def order_log(order_id, created, paid, shipped, cancelled, refunded, tracking, rng):
    log = [(order_id, "created", "system", "Bestellung eingegangen", "", "{}", True, created)]
    if paid:
        log.append((order_id, "paid", "owner", "Zahlung erhalten", "Danke für Ihre Zahlung.", "{}", True, paid))
    if shipped:
        log.append((order_id, "shipped", "owner", "Versandt", f"Sendungsnummer {tracking}",
                    json.dumps({"tracking_code": tracking, "carrier": "DHL"}), True, shipped))
    if cancelled:
        log.append((order_id, "cancelled", "owner", "Storniert", "Auf Wunsch storniert.", "{}", True, cancelled))
    if refunded:
        log.append((order_id, "refunded", "owner", "Erstattet", "Betrag erstattet.", "{}", True, refunded))
    if rng.random() < 0.1:
        log.append((order_id, "customer_reply", "customer", "Re: Ihre Bestellung",
                    "Wann kommt meine Bestellung an? Viele Grüße", "{}", False,
                    created + dt.timedelta(hours=rng.uniform(1, 90))))
    return [row[:4] + (row[4], f"<p>{row[4]}</p>" if row[4] else "") + row[5:] for row in log]


ORDER_COLUMNS = ("id, number, customer_name, customer_email, customer_key, surname_key, total, "
                 "currency, payment_method, locale, status, created_at, updated_at, paid_at, "
                 "shipped_at, cancelled_at, refunded_at, refunded_amount, tracking_code, carrier, "
                 "status_token, reply_secret")
ITEM_COLUMNS = "order_id, position, sku, name, quantity, unit_price"
EVENT_COLUMNS = "order_id, kind, author, subject, body_text, body_html, data, notified, created_at"


# ---- building the stores -----------------------------------------------------------

def schema_version() -> str:
    digest = hashlib.sha256(f"generator {GENERATOR_VERSION}".encode())
    for path in sorted(MIGRATIONS_DIR.glob("[0-9]*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def sqlite_store(n: int, path: Path | None):
    path = path or RESULTS / f"orders_{n}_{schema_version()}.db"
    if not path.exists():
        for stale in RESULTS.glob(f"orders_{n}_*.db"):     # an older schema or generator
            stale.unlink()
        build_sqlite(n, path)
    else:
        print(f"using cached {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return open_store(f"sqlite:///{path}")


def build_sqlite(n: int, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        stale.unlink(missing_ok=True)
    began = time.perf_counter()
    store = open_store(f"sqlite:///{partial}")
    conn = store.db.connection()
    conn.execute("PRAGMA journal_mode=OFF")      # a partial build is thrown away anyway
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1000000")
    text = lambda t: None if t is None else str(t)  # noqa: E731 - peewee's own format
    built = 0
    for orders, items, events in generate(n):
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO orders ({ORDER_COLUMNS}) VALUES ({marks(22)})",
                         [row[:11] + tuple(map(text, row[11:17])) + row[17:] for row in orders])
        conn.executemany(f"INSERT INTO order_item ({ITEM_COLUMNS}) VALUES ({marks(6)})", items)
        conn.executemany(f"INSERT INTO event ({EVENT_COLUMNS}) VALUES ({marks(9)})",
                         [row[:7] + (int(row[7]), str(row[8])) for row in events])
        conn.execute("COMMIT")
        built += len(orders)
        print(f"\rbuilding {built:,}/{n:,} orders ({time.perf_counter() - began:.0f} s)", end="",
              file=sys.stderr, flush=True)
    conn.execute("INSERT INTO counter (name, value) VALUES ('order_number', ?)", (1000 + n,))
    conn.execute("PRAGMA journal_mode=WAL")
    store.close()
    partial.rename(path)
    print(f"\nbuilt {path.name} in {time.perf_counter() - began:.0f} s", file=sys.stderr)


def build_postgres(store, n: int) -> None:
    from psycopg2.extras import execute_values
    with store.atomic():
        cursor = store.db.cursor()
        for orders, items, events in generate(n):
            execute_values(cursor, f"INSERT INTO orders ({ORDER_COLUMNS}) VALUES %s", orders, page_size=2000)
            execute_values(cursor, f"INSERT INTO order_item ({ITEM_COLUMNS}) VALUES %s", items, page_size=2000)
            execute_values(cursor, f"INSERT INTO event ({EVENT_COLUMNS}) VALUES %s", events, page_size=2000)
        cursor.execute("SELECT setval(pg_get_serial_sequence('orders', 'id'), %s)", (n,))


def marks(count: int) -> str:
    return ", ".join("?" * count)


# ---- the queries ---------------------------------------------------------------------

def filter_cases(store) -> list[tuple[str, str]]:
    """(label, filter text) for each documented filter, with values that occur."""
    first, surname = FIRST_NAMES[0], LAST_NAMES[0]
    first_key, surname_key = filters.search_key(first), filters.search_key(surname)
    rare_key = filters.search_key(rare_surname(random.Random(7)))
    number = Order.select(pw.fn.MAX(Order.number)).scalar()
    middle = str((int(number) + 1000) // 2) if number else "1042"
    email = ascii_fold(FIRST_NAMES[1]).lower() + "." + ascii_fold(LAST_NAMES[3]).lower()[:3]
    week, two_months, one_month = (END - dt.timedelta(days=d) for d in (7, 60, 30))
    return [
        ("all (empty filter)", ""),
        ("open", "not paid and not cancelled"),
        ("paid, not shipped", "paid and not shipped"),
        ("refunded", "refunded"),
        ("customer:PREFIX", f'customer:"{first_key} {surname_key[:3]}"'),
        ("customer:SURNAMEPREFIX", f"customer:{surname_key[:4]}"),
        ("customer:FIRSTNAME", f"customer:{first_key}"),
        ("customer:RARE", f"customer:{rare_key}"),
        ("email:PREFIX", f"email:{email}"),
        ("since:DATE", f"since:{week:%Y-%m-%d}"),
        ("since/until, not shipped",
         f"since:{two_months:%Y-%m-%d} and until:{one_month:%Y-%m-%d} and not shipped"),
        ("number:N", f"number:{middle}"),
        ("method, not paid", "method:paypal and not paid"),
    ]


def timed(run, runs: int) -> tuple[float, float, int]:
    """(median ms, min ms, what run returned) over `runs` runs after two warm-ups."""
    for _ in range(2):
        rows = run()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        rows = run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), min(times), rows


def explain(store, query) -> list[str]:
    sql, params = query.sql()
    if store.backend == "sqlite":
        return [row[3] for row in store.db.execute_sql("EXPLAIN QUERY PLAN " + sql, params)]
    return [row[0] for row in store.db.execute_sql("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)]


def full_scan(plan: list[str]) -> bool:
    """A whole-table scan of orders without an index (SQLite's or PostgreSQL's words)."""
    return any(re.search(r"^\W*(SCAN (orders|t1)\s*$|Seq Scan on orders)", line.strip()) for line in plan)


def measure(store, runs: int) -> list[dict]:
    """Each case, then the load of the machine before and after (others' work skews medians)."""
    load = os.getloadavg()[0]
    results = []
    for label, text in filter_cases(store):
        median, best, rows = timed(lambda t=text: len(filters.find_orders(t, limit=50)), runs)
        query = filters.orders_query(text, 50)
        sql_only = timed(lambda q=query: len(store.db.execute_sql(*q.sql()).fetchall()), runs)[0]
        results.append(result(label, text, median, best, rows, explain(store, query), sql_only)
                       | {"matches": filters.count_orders(text)})
    token = Order.select(Order.status_token).order_by(Order.id).offset(Order.select().count() // 3).scalar()
    lookup = Order.select().where(Order.status_token == token)
    median, best, rows = timed(lambda: len(list(lookup.clone())), runs)
    results.append(result("status token lookup", "Order.status_token == t", median, best, rows,
                           explain(store, lookup)))
    # The baseline: the same "newest 50" shape on an unindexed expression, which
    # must read every order. Its time is the yardstick for this machine.
    scan = (Order.select().where(pw.fn.LOWER(Order.carrier) == "no such carrier")
            .order_by(Order.created_at.desc(), Order.id.desc()).limit(50))
    median, best, rows = timed(lambda: len(list(scan.clone())), max(3, runs // 5))
    results.append(result("BASELINE full scan", "lower(carrier) = …", median, best, rows,
                          explain(store, scan), baseline=True))
    for r in results:
        r["load_before_after"] = (round(load, 2), round(os.getloadavg()[0], 2))
    return results


def result(label, text, median, best, rows, plan, sql_ms=None, baseline=False) -> dict:
    sql_ms = median if sql_ms is None else sql_ms
    return {"case": label, "filter": text, "median_ms": round(median, 3), "min_ms": round(best, 3),
            "sql_ms": round(sql_ms, 3),
            "rows": rows, "plan": plan, "full_scan": full_scan(plan), "baseline": baseline}


def report(title: str, results: list[dict], extra: dict) -> None:
    base = next(r["median_ms"] for r in results if r["baseline"])
    load = results[0]["load_before_after"]
    print(f"\n{title}; load average {load[0]} before, {load[1]} after ({os.cpu_count()} CPUs)")
    print("median/min ms: the whole call (find_orders: plan probes, SQL, 50 Order objects); "
          "sql ms: median of the main SQL alone; x base: median / baseline median")
    print(f"{'case':<24} {'median ms':>9} {'min ms':>7} {'sql ms':>7} {'x base':>7} {'matches':>9}  flag  filter")
    for r in results:
        flag = "BASE" if r["baseline"] else ("SCAN!" if r["full_scan"] else
                                             "SLOW" if r["median_ms"] > GOAL_MS else "ok")
        print(f"{r['case']:<24} {r['median_ms']:>9.3f} {r['min_ms']:>7.3f} {r['sql_ms']:>7.3f} "
              f"{r['median_ms'] / base:>7.4f} "
              f"{r.get('matches', r['rows']):>9,}  {flag:<5} {r['filter']}")
    print("\nplans:")
    for r in results:
        print(f"  {r['case']}: {r['filter']}")
        for line in r["plan"]:
            print(f"      {line}")
    print("BENCH_JSON " + json.dumps({**extra, "baseline_ms": base, "goal_ms": GOAL_MS,
                                      "results": results}, ensure_ascii=False))


def run_sqlite(args) -> None:
    store = sqlite_store(args.orders, args.db)
    try:
        began = time.perf_counter()
        store.db.execute_sql("ANALYZE")
        analyzed = time.perf_counter() - began
        orders = Order.select().count()
        version = store.db.execute_sql("SELECT sqlite_version()").fetchone()[0]
        report(f"SQLite {version}, {orders:,} orders (ANALYZE {analyzed:.1f} s), "
               f"newest 50 matching, median of {args.runs} runs",
               measure(store, args.runs),
               {"backend": "sqlite", "sqlite": version, "orders": orders, "schema": schema_version()})
    finally:
        store.close()


def run_postgres(args) -> None:
    import psycopg2
    url = args.postgres
    schema = f"bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        options = quote(f"-c search_path={schema}")
        store = open_store(f"{url}{'&' if '?' in url else '?'}options={options}")
        try:
            began = time.perf_counter()
            build_postgres(store, args.pg_orders)
            store.db.execute_sql("ANALYZE")
            print(f"built {args.pg_orders:,} orders in schema {schema} in "
                  f"{time.perf_counter() - began:.0f} s", file=sys.stderr)
            version = store.db.execute_sql("SHOW server_version").fetchone()[0]
            collation = store.db.execute_sql(
                "SELECT datcollate FROM pg_database WHERE datname = current_database()").fetchone()[0]
            report(f"PostgreSQL {version} (database collation {collation}), {args.pg_orders:,} orders, "
                   f"newest 50 matching, median of {args.runs} runs", measure(store, args.runs),
                   {"backend": "postgresql", "postgresql": version, "orders": args.pg_orders})
        finally:
            store.close()
    finally:
        admin.cursor().execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000, help="orders in the SQLite store")
    parser.add_argument("--db", type=Path, help="SQLite file to build or reuse (default: cached "
                                                "under bench/results/ by size and schema)")
    parser.add_argument("--runs", type=int, default=25, help="timed runs per query")
    parser.add_argument("--postgres", nargs="?", const="postgresql://postgres@127.0.0.1:5432/test",
                        help="also run on this PostgreSQL server, in a temporary schema")
    parser.add_argument("--pg-orders", type=int, default=50_000)
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.skip_sqlite:
        run_sqlite(args)
    if args.postgres:
        run_postgres(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
