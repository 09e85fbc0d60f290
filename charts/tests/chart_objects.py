"""The chart's objects as Helm renders them (render_chart.py in a child process), cached per
test session and values: one Helm render takes seconds, and several test modules need it."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

RENDER = Path(__file__).resolve().parent / "render_chart.py"


@functools.cache
def _render(values_json: str) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [sys.executable, str(RENDER)],
        input=values_json,
        capture_output=True,
        text=True,
        env={**os.environ, "HELM_DRIVER": "memory"},
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return tuple(o for o in yaml.safe_load_all(json.loads(done.stdout)["manifest"]) if o)


def rendered_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Deep copies, so a test may change what it got."""
    objects = _render(json.dumps(values or {}, sort_keys=True))
    return json.loads(json.dumps(list(objects)))
