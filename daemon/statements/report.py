"""An import's outcome for the owner: text (CLI, mail receipt) and JSON (`--format json`)."""
from __future__ import annotations

from daemon.statements.importer import ImportResult, Outcome

HEADINGS = {
    "paid": "Paid now",
    "already_paid": "Already paid",
    "amount_differs": "Amount differs: not marked paid, noted on the order",
    "unmatched": "Unmatched credits",
}


def as_text(result: ImportResult, *, limit: int | None = None) -> str:
    """The report; `limit`: at most this many lines per heading (a receipt by mail stays readable)."""
    lines = [_summary(result)]
    for kind, heading in HEADINGS.items():
        found = result.of(kind)
        if found:
            lines.append(f"{heading} ({len(found)}):")
            lines.extend(f"  {_line(o)}" for o in found[:limit])
            if limit is not None and len(found) > limit:
                lines.append(f"  … and {len(found) - limit} more")
    if result.imported_before:
        lines.append(f"{_count(result.imported_before, 'credit was', 'credits were')} imported before; "
                     "nothing was done again for them.")
    if result.credits == 0:
        lines.append("No credits in this statement.")
    return "\n".join(lines)


def as_json(result: ImportResult) -> dict:
    return {"file": result.name, "format": result.format, "entries": result.entries,
            "credits": result.credits, "passed_over": result.passed_over,
            "imported_before": result.imported_before,
            **{kind: [o.json() for o in result.of(kind)] for kind in HEADINGS}}


def _summary(result: ImportResult) -> str:
    over = (f", {_count(result.passed_over, 'debit or unbooked entry', 'debits or unbooked entries')} passed over"
            if result.passed_over else "")
    return (f"{result.name} ({result.format}): {_count(result.entries, 'entry', 'entries')}, "
            f"{_count(result.credits, 'credit', 'credits')}{over}")


def _line(outcome: Outcome) -> str:
    entry = outcome.entry
    numbers = " + ".join(outcome.numbers) if outcome.kind != "unmatched" or outcome.numbers else "-"
    day = entry.booked_on.isoformat() if entry.booked_on else "?"
    said = ": ".join(p for p in (entry.payer, _short(entry.remittance)) if p)
    detail = f" — {outcome.detail}" if outcome.detail else ""
    return f"{numbers:<8} {entry.amount:>10} {entry.currency}  {day}  {said}{detail}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
