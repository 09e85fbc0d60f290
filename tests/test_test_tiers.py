"""The root conftest skips importing a slow module only when `-m` deselects all of it."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest


def _load_deselects_slow() -> Callable[[str], bool]:
    # The root conftest is a pytest plugin, not an importable module.
    spec = importlib.util.spec_from_file_location(
        "root_conftest", Path(__file__).parents[1] / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    deselects_slow: Callable[[str], bool] = module._deselects_slow
    return deselects_slow


_deselects_slow = _load_deselects_slow()


@pytest.mark.parametrize(
    "markexpr",
    ["not integration and not slow", "not slow", "(not slow) and not integration"],
)
def test_an_expression_that_excludes_slow_skips_its_modules(markexpr: str) -> None:
    assert _deselects_slow(markexpr)


@pytest.mark.parametrize(
    "markexpr",
    ["", "slow", "not integration", "integration and slow", "slow or integration", "integration"],
)
def test_an_expression_that_may_keep_a_slow_test_collects_its_modules(markexpr: str) -> None:
    # "integration" alone keeps a slow test that is also marked integration.
    assert not _deselects_slow(markexpr)
