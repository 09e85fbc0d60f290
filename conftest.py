"""The test tiers, in one place.

- `integration` (billing_common.testing): talks to the real PostgreSQL or RabbitMQ.
- `slow` (here): needs no server, but starts processes or tool chains — the launcher, Helm's
  renderer, the Docker Compose binary, a Kubernetes API emulator with the chart, worker pools,
  a process killed half-way. Seconds each, not milliseconds.

`make test-unit` runs everything that is neither: the domain, the use cases on in-memory
fakes, the apps in-process on SQLite. It also runs under the "fast" Hypothesis profile, which
caps every property test's examples at FAST_EXAMPLES (a smoke of each property); `make test`
runs all of it with every example the tests ask for.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from _pytest.mark.expression import Expression
from hypothesis import settings

ROOT = Path(__file__).parent

SLOW_MODULES = frozenset(
    {
        "charts/tests/test_chart_lifecycle.py",
        "charts/tests/test_chart_render.py",
        "charts/tests/test_dapr_components_semantics.py",
        "operator/tests/test_operator_admission.py",
        "operator/tests/test_operator_reconcile.py",
        "services/invoice/tests/test_invoice_pdf_workers.py",
        "tests/test_compose.py",
        "tests/test_make_run.py",
        "tests/test_make_token.py",
        "tests/test_migrations_atomic.py",
        "tests/test_openapi_contract.py",
        "tests/test_process_launcher.py",
        "tests/test_service_dockerfile.py",
    }
)


FAST_EXAMPLES = 20
settings.register_profile("fast", max_examples=FAST_EXAMPLES)


def _cap_examples(item: pytest.Item) -> None:
    """A test's own @settings(max_examples=...) outranks any profile: cap it here. Hypothesis
    keeps a test's settings on the wrapped function (and reads them when the test runs)."""
    test = getattr(item, "obj", None)
    own = getattr(test, "_hypothesis_internal_use_settings", None)
    if own is not None and own.max_examples > FAST_EXAMPLES:
        test._hypothesis_internal_use_settings = settings(own, max_examples=FAST_EXAMPLES)  # type: ignore[union-attr]


def pytest_configure(config: pytest.Config) -> None:
    # A renamed module would silently fall into the fast tier.
    missing = sorted(m for m in SLOW_MODULES if not (ROOT / m).is_file())
    if missing:
        raise pytest.UsageError(f"conftest.py SLOW_MODULES names missing files: {missing}")


def _deselects_slow(markexpr: str) -> bool:
    """Whether `-m markexpr` deselects every test marked slow, whatever other marks it has:
    tried with `slow` set and each assignment of the other marks the expression names."""
    if not markexpr or "=" in markexpr:  # marks with arguments: not worth guessing
        return False
    names = sorted(set(re.findall(r"[^\s()]+", markexpr)) - {"and", "or", "not", "slow"})
    if len(names) > 8:
        return False
    expression = Expression.compile(markexpr)
    for values in itertools.product((False, True), repeat=len(names)):
        marks = {"slow", *(name for name, on in zip(names, values, strict=True) if on)}
        if expression.evaluate(lambda name, /, marks=marks, **_: name in marks):
            return False
    return True


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip importing a slow module the run deselects anyway: building the Schemathesis
    tests alone (at collection) costs every xdist worker seconds in `make test-unit`."""
    try:
        module = collection_path.relative_to(ROOT).as_posix()
    except ValueError:
        return None
    if module in SLOW_MODULES and _deselects_slow(config.getoption("markexpr", "")):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fast = config.getoption("hypothesis_profile", None) == "fast"
    for item in items:
        if fast:
            _cap_examples(item)
        try:
            module = item.path.relative_to(ROOT).as_posix()
        except ValueError:
            continue
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
