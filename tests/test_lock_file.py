"""requirements.lock (what `make install` installs) agrees with the ranges it is compiled from:
every dependency a pyproject.toml or requirements-dev.txt names is pinned, at a version its
range admits. A range changed without `make lock` fails here, not on a newcomer's install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"billing-common"}  # the platform's own packages: editable lines of the lock


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
        if match:
            pins[canonicalize_name(match.group(1))] = Version(match.group(2))
    return pins


def _declared() -> list[tuple[str, Requirement]]:
    declared: list[tuple[str, Requirement]] = []
    for path in [*sorted(ROOT.glob("services/*/pyproject.toml")), ROOT / "operator/pyproject.toml"]:
        project = tomllib.loads(path.read_text())["project"]
        source = str(path.relative_to(ROOT))
        declared += [(source, Requirement(text)) for text in project.get("dependencies", [])]
    for line in (ROOT / "requirements-dev.txt").read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            declared.append(("requirements-dev.txt", Requirement(text)))
    return declared


def test_every_declared_range_admits_its_locked_pin() -> None:
    pins = _pins()
    environment = default_environment()
    wrong = []
    for source, requirement in _declared():
        name = canonicalize_name(requirement.name)
        if name in LOCAL or (
            requirement.marker is not None and not requirement.marker.evaluate(environment)
        ):
            continue
        pinned = pins.get(name)
        if pinned is None:
            wrong.append(f"{source}: {requirement} is not in requirements.lock")
        elif not requirement.specifier.contains(pinned, prereleases=True):
            wrong.append(f"{source}: {requirement} does not admit the locked {pinned}")
    assert not wrong, "run `make lock`:\n" + "\n".join(wrong)


def test_the_lock_installs_every_local_package_editable() -> None:
    lock = (ROOT / "requirements.lock").read_text()
    local = [f"-e ./{p.parent.relative_to(ROOT)}" for p in ROOT.glob("services/*/pyproject.toml")]
    missing = [line for line in [*local, "-e ./operator"] if line not in lock.splitlines()]
    assert not missing, "run `make lock`: " + ", ".join(missing)
