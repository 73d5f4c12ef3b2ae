"""How right and how fast is reply trimming, on every reply corpus and at scale?

    .venv/bin/python bench/trimming.py                    # scores, timings, scaling
    .venv/bin/python bench/trimming.py --compare f95afb0  # also score a git revision's trimmer

Scores: every mail of the four reply corpora in ../shared/corpora, trimmed
and checked as tests/reply_corpora.py checks it -- the corpus' exact visible
text where it gives one, the written judgment (tests/corpus_judgments.toml)
elsewhere -- counted per corpus and per language; then our own scenario mails
(tests/mails/replies/LANG/), per language. `--compare REV` scores the
single-module daemon/trimming.py of an older revision on the same mails.

Speed: each corpus mail trimmed five times, the fastest kept; the median and
the worst case per corpus and over all. The yardstick, measured in the same
run on the same texts, is one plain linear pass (split into lines, normalise
each): `x base` is trimming's time over the yardstick's, so figures from a
loaded or other machine compare.

Scaling: replies of 1,000 to 16,000 lines (16,000 quoted lines is 1.3 MB),
three shapes -- a short answer above a long quote, a long unquoted text, and
hostile short lines that each look like the end of a quote header -- with the
time per line and the ratio of time to size against the smallest. Linear work
keeps the ratio near 1; quadratic work would double it with each doubling.

The header shows the load average: other work on the machine inflates times.
The last line is `BENCH_JSON {...}`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from daemon.mail.trimming import trim_reply  # noqa: E402
from daemon.mail.trimming.shapes import normalise  # noqa: E402
from reply_corpora import MISSING, REPLY_CORPORA, corpus_mails, verdict  # noqa: E402

SCENARIOS = ROOT / "tests" / "mails" / "replies"
SCALE_LINES = (1000, 2000, 4000, 8000, 16000)


def fastest(function, text: str, runs: int = 5) -> float:
    """The least CPU time of `runs` calls: time spent waiting for a core on a
    loaded machine does not count."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        function(text)
        best = min(best, time.process_time() - started)
    return best


def yardstick(text: str) -> list[str]:
    """The plain linear pass every trimmer must make at least."""
    return [normalise(line) for line in text.replace("\r\n", "\n").split("\n")]


def old_trimmer(revision: str):
    """trim_reply of daemon/trimming.py at `revision` (a single module then), or None."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:daemon/trimming.py"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"--compare {revision}: no single-module trimmer there ({error})")
        return None
    path = Path(tempfile.mkdtemp()) / "old_trimming.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("old_trimming", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_trimming"] = module        # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.trim_reply


# ---- scores --------------------------------------------------------------------------------

def scores(mails, trim) -> dict:
    """Per corpus and per language: mails, exact texts (goal / met), judgments (goal / met)."""
    table: dict = defaultdict(lambda: {"mails": 0, "exact": 0, "exact_met": 0, "judged": 0, "judged_met": 0})
    for mail in mails:
        kind, problems = verdict(mail, trim(mail.text()).text)
        for key in (("corpus", mail.corpus), ("language", mail.language), ("all", "all")):
            row = table[key]
            row["mails"] += 1
            if kind in ("exact", "judged"):
                row[kind] += 1
                row[f"{kind}_met"] += not problems
    return table


def scenario_scores(trim) -> dict:
    table: dict = defaultdict(lambda: [0, 0])
    for path in sorted(SCENARIOS.rglob("*.txt")):
        expected = path.with_suffix(".expected").read_text(encoding="utf-8").rstrip("\n")
        language = path.parent.name if path.parent != SCENARIOS else "de/en/fr (older)"
        table[language][0] += 1
        table[language][1] += trim(path.read_text(encoding="utf-8")).text == expected
    return dict(table)


def print_scores(table: dict, old: dict | None) -> None:
    head = f"{'':28} {'mails':>5} {'exact':>9} {'judged':>9}"
    print(head + ("   before: exact  judged" if old else ""))
    for group in ("all", "corpus", "language"):
        for key in sorted(k for k in table if k[0] == group):
            row = table[key]
            line = (f"{key[1]:28} {row['mails']:5} {row['exact_met']:4}/{row['exact']:<4} "
                    f"{row['judged_met']:4}/{row['judged']:<4}")
            if old:
                was = old[key]
                line += f"   {was['exact_met']:6}/{was['exact']:<4} {was['judged_met']:4}/{was['judged']:<4}"
            print(line)
        print()


# ---- speed ---------------------------------------------------------------------------------

def corpus_speed(mails) -> dict:
    rows: dict = defaultdict(list)
    for mail in mails:
        text = mail.text()
        rows[mail.corpus].append((fastest(trim_reply, text), fastest(yardstick, text), len(text), mail.name))
    rows["all"] = [row for corpus in REPLY_CORPORA for row in rows[corpus]]
    result = {}
    print(f"{'corpus':28} {'mails':>5} {'median µs':>10} {'x base':>7} {'worst µs':>10} {'x base':>7}  worst mail")
    for corpus, timed in rows.items():
        times = sorted(timed)
        median = statistics.median(t for t, _, _, _ in times)
        base = statistics.median(b for _, b, _, _ in times)
        worst, worst_base, size, name = times[-1]
        result[corpus] = {"mails": len(times), "median_us": median * 1e6, "median_x_base": median / base,
                          "worst_us": worst * 1e6, "worst_x_base": worst / worst_base, "worst_mail": name,
                          "worst_bytes": size}
        print(f"{corpus:28} {len(times):5} {median * 1e6:10.1f} {median / base:7.1f} {worst * 1e6:10.1f} "
              f"{worst / worst_base:7.1f}  {name} ({size:,} chars)")
    return result


def quoted_reply(lines: int) -> str:
    head = "Danke, das passt so.\n\nAm 03.03.2026 um 10:15 schrieb Beispiel-Shop <orders@shop.example>:\n"
    return head + "".join(f"> Zeile {i} des zitierten Verlaufs, mit etwas Text wie in einer echten Mail.\n"
                          for i in range(lines))


def long_text(lines: int) -> str:
    return "".join(f"Zeile {i}: ein langer Text ohne Zitat, geschrieben am 03.03.2026 um 10:15 Uhr.\n"
                   for i in range(lines))


def hostile_lines(lines: int) -> str:
    """Short lines that each end like a quote header, so every one is tested as one."""
    return "Danke.\n\n" + "".join(f"Am 03.03.2026 um 10:{i % 60:02d} schrieb <{i}@x.example> an {i}:\n"
                                  for i in range(lines))


def scaling() -> dict:
    result = {}
    print(f"{'shape':14} {'lines':>6} {'bytes':>10} {'ms':>8} {'µs/line':>8} {'time/size vs first':>19}")
    for name, build in (("quoted", quoted_reply), ("text", long_text), ("hostile", hostile_lines)):
        first = None
        for lines in SCALE_LINES:
            text = build(lines)
            seconds = fastest(trim_reply, text, runs=3)
            per_byte = seconds / len(text)
            first = first or per_byte
            result[f"{name}_{lines}"] = {"bytes": len(text), "ms": seconds * 1e3, "ratio": per_byte / first}
            print(f"{name:14} {lines:6} {len(text):10,} {seconds * 1e3:8.1f} {seconds * 1e6 / lines:8.2f} "
                  f"{per_byte / first:19.2f}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", metavar="REV", help="also score daemon/trimming.py of this git revision")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} cores\n")
    mails = corpus_mails()
    if not mails:
        print(MISSING)
        return 1
    old = old_trimmer(args.compare) if args.compare else None
    table = scores(mails, trim_reply)
    print("Scores (met / goal): exact = the corpus' visible text; judged = tests/corpus_judgments.toml\n")
    print_scores(table, scores(mails, old) if old else None)
    scenarios = scenario_scores(trim_reply)
    print("Our scenario mails (exact / mails): "
          + ", ".join(f"{lang} {ok}/{n}" for lang, (n, ok) in sorted(scenarios.items())) + "\n")
    speed = corpus_speed(mails)
    print()
    scale = scaling()
    print("BENCH_JSON " + json.dumps({
        "scores": {f"{k[0]}:{k[1]}": v for k, v in table.items()}, "scenarios": scenarios,
        "speed": speed, "scaling": scale, "load": os.getloadavg()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
