"""An import's outcome for the owner: text (CLI, mail receipt) and JSON (`--format json`)."""
from __future__ import annotations

from daemon import translations
from daemon.payments.statements.importer import ImportResult, Outcome
from daemon.translations import N_

HEADINGS = {
    "paid": N_("Paid now (%(count)s):"),
    "already_paid": N_("Already paid (%(count)s):"),
    "amount_differs": N_("Amount differs: not marked paid, noted on the order (%(count)s):"),
    "unmatched": N_("Unmatched credits (%(count)s):"),
}


def as_text(result: ImportResult, *, limit: int | None = None, lang: str = "en", shop_dir: str = "") -> str:
    """The report in `lang` (the shop's); `limit`: at most this many lines per heading
    (a receipt by mail stays readable)."""
    words = translations.get(lang, shop_dir)
    lines = [_summary(result, words)]
    for kind, heading in HEADINGS.items():
        found = result.of(kind)
        if found:
            lines.append(words.gettext(heading) % {"count": len(found)})
            lines.extend(f"  {_line(o, lang, shop_dir)}" for o in found[:limit])
            if limit is not None and len(found) > limit:
                lines.append("  " + words.gettext("… and %(count)s more") % {"count": len(found) - limit})
    if result.imported_before:
        lines.append(words.ngettext("%(num)d credit was imported before; nothing was done again for it.",
                                    "%(num)d credits were imported before; nothing was done again for them.",
                                    result.imported_before) % {"num": result.imported_before})
    if result.credits == 0:
        lines.append(words.gettext("No credits in this statement."))
    return "\n".join(lines)


def as_json(result: ImportResult) -> dict:
    return {"file": result.name, "format": result.format, "entries": result.entries,
            "credits": result.credits, "passed_over": result.passed_over,
            "imported_before": result.imported_before,
            **{kind: [o.json() for o in result.of(kind)] for kind in HEADINGS}}


def _summary(result: ImportResult, words) -> str:
    counts = {"entries": words.ngettext("%(num)d entry", "%(num)d entries", result.entries) % {"num": result.entries},
              "credits": words.ngettext("%(num)d credit", "%(num)d credits", result.credits) % {"num": result.credits}}
    text = words.gettext("%(file)s (%(format)s): %(entries)s, %(credits)s") % {
        "file": result.name, "format": result.format, **counts}
    if result.passed_over:
        text += words.ngettext(", %(num)d debit or unbooked entry passed over",
                               ", %(num)d debits or unbooked entries passed over",
                               result.passed_over) % {"num": result.passed_over}
    return text


def _line(outcome: Outcome, lang: str, shop_dir: str) -> str:
    entry = outcome.entry
    numbers = " + ".join(outcome.numbers) if outcome.kind != "unmatched" or outcome.numbers else "-"
    day = entry.booked_on.isoformat() if entry.booked_on else "?"
    said = ": ".join(p for p in (entry.payer, _short(entry.remittance)) if p)
    detail = f" — {translations.say(outcome.detail, lang, shop_dir)}" if outcome.detail else ""
    return f"{numbers:<8} {entry.amount:>10} {entry.currency}  {day}  {said}{detail}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
