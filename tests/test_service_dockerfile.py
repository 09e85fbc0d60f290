"""The one services/Dockerfile, checked for each service's build arguments with no Docker engine
(tests/service_image.py reads it as Docker would): every file it copies exists, the packages the
entrypoint imports are installed, only invoice gets the WeasyPrint system libraries, it runs as
the chart's non-root user, and skaffold.yaml, compose.yaml and the chart agree on the images
and their arguments. Building the images needs an engine: README.md, "The service image"."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from billing_common.settings import DEFAULT_PORTS
from billing_launcher.registry import SERVICES
from tests.service_image import (
    DOCKERFILE,
    ROOT,
    WEASYPRINT_PACKAGES,
    build_args,
    exec_form,
    final_stage,
    image_env,
    shell_words,
    stage,
    stages,
)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return data


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (its patterns are simple)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = Path(path).parts
    for pattern in patterns:
        name = pattern.removeprefix("**/")
        if pattern.startswith("**/"):
            if any(Path(part).match(name) for part in parts):
                return True
        elif Path(path).match(pattern) or path == pattern or path.startswith(f"{pattern}/"):
            return True
    return False


def installed_packages(directory: str) -> list[str]:
    """The import packages `pip install <directory>` provides (setuptools' find include)."""
    project = tomllib.loads((ROOT / directory / "pyproject.toml").read_text())
    include: list[str] = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


def pip_installs(run: str) -> list[str]:
    """The local directories the RUN's `pip install` commands install."""
    found: list[str] = []
    for command in re.split(r"&&|;", run):
        words = command.split()
        if len(words) > 2 and words[0].endswith("pip") and words[1] == "install":
            found += [w.removeprefix("./") for w in words[2:] if w.startswith("./")]
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_every_copied_path_is_in_the_build_context(service: str) -> None:
    build = stage(service, "build")
    sources = []
    for copy in build.all("COPY"):
        *source, _target = copy.value.split()
        assert not any(s.startswith("--from") for s in source), copy.raw
        sources += source
    assert sources == ["services/common", "services/launcher", f"services/{service}"]
    for source in sources:
        assert (ROOT / source / "pyproject.toml").is_file(), source
        assert not dockerignored(source), source
    # The migrations ship in the service's directory, found next to the package.
    assert (ROOT / f"services/{service}/migrations/env.py").is_file()
    assert dockerignored(f"services/{service}/{service}_service/__pycache__/x.pyc")


@pytest.mark.parametrize("service", SERVICES)
def test_the_packages_the_entrypoint_imports_are_installed(service: str) -> None:
    build, runtime = stage(service, "build"), final_stage(service)
    (install,) = [r for r in build.all("RUN") if "pip install" in r.value]
    installed = pip_installs(install.value)
    assert installed == ["services/common", "services/launcher", f"services/{service}"]
    packages = {p for directory in installed for p in installed_packages(directory)}
    # `python -m billing_launcher serve <service>` imports <service>_service.bootstrap.
    assert {"billing_common", "billing_launcher", f"{service}_service"} <= packages
    command = exec_form(runtime.last("CMD"))
    assert command[:2] == ["sh", "-c"]
    assert shell_words(command[2], image_env(service)) == [
        "exec",
        "python",
        "-m",
        "billing_launcher",
        "serve",
        service,
    ]
    # The runtime stage has the virtualenv (on PATH) and the editable service's directory at
    # the paths the build stage installed them to.
    copies = [c.value.split() for c in runtime.all("COPY")]
    assert copies == [
        ["--from=build", "/opt/venv", "/opt/venv"],
        ["--from=build", f"/app/services/{service}", f"/app/services/{service}"],
    ]
    assert build.last("WORKDIR").value == "/app"
    assert runtime.last("ENV").envs["PATH"].startswith("/opt/venv/bin:")
    assert f"rm -rf services/{service}/tests" in install.value  # no tests in the image


@pytest.mark.parametrize("service", SERVICES)
def test_only_the_invoice_image_installs_system_packages(service: str) -> None:
    (apt,) = [r for r in final_stage(service).all("RUN") if "apt-get" in r.raw]
    packages = apt.args.get("SYSTEM_PACKAGES", "").split()
    if service == "invoice":
        assert tuple(packages) == WEASYPRINT_PACKAGES
        assert {"libpango-1.0-0", "libpangoft2-1.0-0", "libharfbuzz-subset0"} <= set(packages)
        assert f"--no-install-recommends {' '.join(packages)}" in apt.value
    else:
        assert packages == []
    # The guard Docker's shell evaluates: packages are installed only when some are named.
    assert apt.raw.startswith('if [ -n "${SYSTEM_PACKAGES}" ]; then')
    result = subprocess.run(
        ["sh", "-c", 'if [ -n "${SYSTEM_PACKAGES}" ]; then exit 3; fi'],
        env={**os.environ, "SYSTEM_PACKAGES": " ".join(packages)},
        check=False,
    )
    assert result.returncode == (3 if service == "invoice" else 0)


@pytest.mark.parametrize(("value", "accepted"), [("", False), ("bogus", False), ("tax", True)])
def test_a_build_without_a_known_service_stops_before_copying(value: str, accepted: bool) -> None:
    build = stage("tax", "build")
    names = [i.name for i in build.instructions]
    guard = build.all("RUN")[0]
    assert names.index("RUN") < names.index("COPY")  # else an empty SERVICE copies services/
    result = subprocess.run(
        ["sh", "-c", guard.raw],
        env={**os.environ, "SERVICE": value},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode == 0) is accepted, result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_as_the_charts_non_root_user_on_its_port(service: str) -> None:
    runtime = final_stage(service)
    assert [s.name for s in stages(service)] == ["build", "runtime"]
    assert {s.base for s in stages(service)} == {"python:3.11-slim"}
    security = load("charts/billing/values.yaml")["podSecurityContext"]
    uid, gid = (int(part) for part in runtime.last("USER").value.split(":"))
    assert (uid, gid) == (security["runAsUser"], security["runAsGroup"]) and uid != 0
    (useradd,) = [r for r in runtime.all("RUN") if "useradd" in r.raw]
    assert f"--uid {uid}" in useradd.value and f"--gid {gid}" in useradd.value
    port = DEFAULT_PORTS[service]
    assert runtime.last("EXPOSE").value == str(port)
    assert image_env(service)["PORT"] == str(port)
    assert image_env(service)["RUNTIME"] == "direct"
    probe = exec_form(runtime.last("HEALTHCHECK"))
    assert probe[0] == "python" and "os.environ['PORT']" in probe[-1] and "/healthz" in probe[-1]


def test_skaffold_compose_and_the_chart_agree_on_images_and_arguments() -> None:
    artifacts = {a["image"]: a for a in load("skaffold.yaml")["build"]["artifacts"]}
    compose = load("compose.yaml")["services"]
    chart = load("charts/billing/values.yaml")["services"]
    for service in SERVICES:
        image = chart[service]["image"]["repository"]
        artifact = artifacts[image]  # Skaffold builds the image the chart deploys
        assert artifact["context"] == "."
        assert artifact["docker"]["dockerfile"] == DOCKERFILE
        assert artifact["docker"]["buildArgs"] == build_args(service)
        for name in (service, f"migrate-{service}"):
            build = compose[name]["build"]
            assert (build["context"], build["dockerfile"]) == (".", DOCKERFILE)
            assert build["args"] == build_args(service), name
            assert compose[name]["image"].partition(":")[0] == image, name
    # The chart runs the image's own entrypoint, with the port it exposes.
    template = (ROOT / "charts/billing/templates/services.yaml").read_text()
    assert (
        '["python", "-m", "billing_launcher", "serve", {{ $name | quote }}, "--runtime"' in template
    )
    assert '["python", "-m", "billing_launcher", "migrate", {{ $name | quote }}]' in template
    for service in SERVICES:
        assert chart[service]["port"] == DEFAULT_PORTS[service]
