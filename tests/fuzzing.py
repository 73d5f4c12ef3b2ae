"""Property-based testing: the hypothesis profiles and the example counter.

Two profiles, chosen by HYPOTHESIS_PROFILE:
- "ci" (the default, `make test`): derandomized and without an example
  database, so every run tries the same examples and a failure is repeatable;
  each property runs the bounded number its `examples(n)` names.
- "fuzz" (`make fuzz`): random, FUZZ_EXAMPLES examples per property (default
  100,000), failures remembered in .hypothesis/ and tried first next time.

The counter wraps each property's inner test (hypothesis documents
`test.hypothesis.inner_test` for this) so `make fuzz` can print how many
examples each property really ran, shrinking and replays included.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
FUZZING = PROFILE == "fuzz"
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100000"))
ROOT = Path(__file__).resolve().parents[1]

# The stores are made once per test and only read by the examples (or
# rolled back), so a function-scoped fixture is right here; generated mails
# are big on purpose.
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
          HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, deadline=None,
                          database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
                          suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(PROFILE)


def examples(ci: int):
    """The number of examples of one property: `ci` in the normal suite,
    the profile's (FUZZ_EXAMPLES) when fuzzing."""
    return settings(max_examples=FUZZ_EXAMPLES if FUZZING else ci)


# ---- counting what ran ---------------------------------------------------------

COUNTS: collections.Counter = collections.Counter()
_running = [""]             # the node id of the test being run


def count_examples(items) -> None:
    """Wrap the inner test of every hypothesis property among `items` (a
    parametrized property is one function: it is counted per test id)."""
    for item in items:
        handle = getattr(getattr(item, "obj", None), "hypothesis", None)
        if handle is not None and not getattr(handle.inner_test, "_counted", False):
            handle.inner_test = _counting(handle.inner_test)


def running(nodeid: str) -> None:
    _running[0] = nodeid


def _counting(inner):
    def counted(*args, **kwargs):
        COUNTS[_running[0]] += 1
        return inner(*args, **kwargs)
    counted._counted = True
    return counted


def report(terminal) -> None:
    """The examples each property ran; printed by `make fuzz`."""
    if not COUNTS:
        return
    terminal.section(f"examples per property (profile {PROFILE})")
    for name, count in sorted(COUNTS.items()):
        terminal.write_line(f"{count:>9,}  {name}")
