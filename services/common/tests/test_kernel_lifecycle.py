"""The service lifecycle of the kernel (billing_common.lifecycle): the order of its steps,
registration on the embedded platform, samples only under the development policy, and a
clean close when starting fails part-way. A small service of its own, on SQLite, on the
real embedded runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_common.adapters.env_secrets import EnvSecretStore
from billing_common.db import create_engine
from billing_common.development import DevelopmentPolicy
from billing_common.events import CloudEvent
from billing_common.lifecycle import ServiceSpec, Wiring, build_app, package_version
from billing_common.runtime import EmbeddedPlatform, ServiceContext, signing_key
from billing_common.settings import ServiceSettings

NAME = "lifecycle"

ENV_PY = f"""
from sqlmodel import SQLModel

from billing_common.migrations_env import run

run(SQLModel.metadata, "alembic_version_{NAME}")
"""

REVISION = """
from billing_common.kernel_migration import create_kernel_tables, drop_kernel_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_kernel_tables()


def downgrade() -> None:
    drop_kernel_tables()
"""


@pytest.fixture(scope="module")
def migrations_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Alembic scripts for a service holding only the kernel tables (outbox, inbox, state)."""
    root = tmp_path_factory.mktemp("migrations")
    (root / "versions").mkdir()
    (root / "env.py").write_text(ENV_PY)
    (root / "versions" / "0001_kernel.py").write_text(REVISION)
    return root


def relay_running() -> bool:
    return any(
        task.get_name() == "outbox-relay" and not task.done() for task in asyncio.all_tasks()
    )


@dataclass
class Probe:
    """A service's hooks that write down what the lifecycle did, and when."""

    steps: list[str] = field(default_factory=list)
    fail_at: str | None = None
    added: int = 3

    def step(self, name: str, seen: str = "") -> None:
        self.steps.append(f"{name}{seen}")
        if self.fail_at == name:
            raise RuntimeError(f"{name} failed")

    async def wire(self, wiring: Wiring) -> dict[str, Any]:
        async def release() -> None:
            # Released after the background tasks stopped, while the context is still open.
            self.steps.append(f"release (relay running: {relay_running()})")

        wiring.on_close(release)
        wiring.state.extra = "for the entrypoints"
        self.step("wire")
        return {"ctx": wiring.ctx}

    def subscribe(self, ctx: ServiceContext, deps: dict[str, Any]) -> None:
        async def handle(event: CloudEvent) -> None:
            self.steps.append(f"handled {event.type}")

        ctx.subscribe("test.lifecycle.ping", handle)
        self.step("subscribe", f" (relay running: {relay_running()})")

    async def load_samples(self, ctx: ServiceContext, deps: dict[str, Any]) -> int:
        self.step("samples", f" (relay running: {relay_running()})")
        return self.added

    async def sweeper(self, ctx: ServiceContext, deps: dict[str, Any]) -> None:
        self.steps.append("background")
        try:
            await asyncio.Event().wait()
        finally:
            self.steps.append("background stopped")

    def spec(self, migrations_dir: Path, **overrides: Any) -> ServiceSpec[dict[str, Any]]:
        fields: dict[str, Any] = {
            "name": NAME,
            "title": "Lifecycle",
            "description": "a service that only starts and stops",
            "package": "billing-common",
            "routers": [],
            "domain_errors": {},
            "migrations_dir": migrations_dir,
            "wire": self.wire,
            "subscribe": self.subscribe,
            "load_samples": self.load_samples,
            "background": [self.sweeper],
        }
        return ServiceSpec(**(fields | overrides))


def settings_for(tmp_path: Path, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'lifecycle.db'}",
        "secrets_file": None,
        "outbox_poll_seconds": 0.05,
    }
    return ServiceSettings.for_service(NAME, **(values | overrides))


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_steps_run_in_order_and_unwind_in_reverse(
    tmp_path: Path, migrations_dir: Path, embedded_platform: EmbeddedPlatform
) -> None:
    probe = Probe()
    app = build_app(probe.spec(migrations_dir), settings_for(tmp_path), embedded_platform)
    async with app.router.lifespan_context(app):
        await until(lambda: "background" in probe.steps)
        assert app.state.deps == {"ctx": app.state.ctx}
        assert app.state.extra == "for the entrypoints"
        assert relay_running()
        assert probe.steps == [
            "wire",
            "subscribe (relay running: False)",  # consumers exist before the bus starts
            "samples (relay running: True)",
            "background",
        ]
        # The subscription made in `subscribe` is live: an event reaches its handler.
        await embedded_platform.bus.publish(
            CloudEvent(source="/test", type="test.lifecycle.ping", data={})
        )
        await until(lambda: "handled test.lifecycle.ping" in probe.steps)
    assert probe.steps[-2:] == ["background stopped", "release (relay running: True)"]
    assert not relay_running()  # the context closed last


async def test_the_app_is_registered_on_the_platform_with_one_readiness_rule(
    tmp_path: Path, migrations_dir: Path, embedded_platform: EmbeddedPlatform
) -> None:
    app = build_app(Probe().spec(migrations_dir), settings_for(tmp_path), embedded_platform)
    assert embedded_platform.apps[NAME] is app
    assert app.version == package_version("billing-common") != "0.0.0"
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c,
    ):
        ready = await c.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"status": "ready", "service": NAME})
        # The one rule: the database answers. Put one that does not under it: not ready.
        ctx = app.state.ctx
        engine, ctx.engine = ctx.engine, create_engine("postgresql+asyncpg://127.0.0.1:1/none")
        try:
            unready = await c.get("/readyz")
        finally:
            await ctx.engine.dispose()
            ctx.engine = engine
        assert unready.status_code == 503
        assert list(unready.json()["failures"]) == ["database"]


def test_a_package_that_is_not_installed_shows_version_0_0_0() -> None:
    assert package_version("no-such-billing-package") == "0.0.0"


@pytest.mark.parametrize(
    ("load_sample_data", "loaded"), [(None, True), (True, True), (False, False)]
)
async def test_samples_load_only_when_the_development_policy_says_so(
    tmp_path: Path,
    migrations_dir: Path,
    embedded_platform: EmbeddedPlatform,
    load_sample_data: bool | None,
    loaded: bool,
) -> None:
    probe = Probe()
    settings = settings_for(tmp_path, load_sample_data=load_sample_data)
    app = build_app(probe.spec(migrations_dir), settings, embedded_platform)
    async with app.router.lifespan_context(app):
        assert any(step.startswith("samples") for step in probe.steps) is loaded


@pytest.mark.parametrize("failing", ["wire", "subscribe", "samples"])
async def test_a_failure_while_starting_closes_what_was_opened(
    tmp_path: Path, migrations_dir: Path, embedded_platform: EmbeddedPlatform, failing: str
) -> None:
    probe = Probe()
    spec = probe.spec(migrations_dir)
    probe.fail_at = failing
    app = build_app(spec, settings_for(tmp_path), embedded_platform)
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        async with app.router.lifespan_context(app):
            pytest.fail("the service must not serve after a failed start")
    assert any(step.startswith("release") for step in probe.steps)  # what wire opened
    assert "background" not in probe.steps
    assert not relay_running()
    assert app.state.ctx.engine.pool.checkedout() == 0


async def test_a_failing_background_task_does_not_stop_the_shutdown(
    tmp_path: Path, migrations_dir: Path, embedded_platform: EmbeddedPlatform
) -> None:
    probe = Probe()
    ran = asyncio.Event()

    async def broken(ctx: ServiceContext, deps: dict[str, Any]) -> None:
        ran.set()
        raise ValueError("the sweeper broke")

    spec = probe.spec(migrations_dir, background=[broken, probe.sweeper])
    app = build_app(spec, settings_for(tmp_path), embedded_platform)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(ran.wait(), 5)
    assert "background stopped" in probe.steps
    assert not relay_running()


@pytest.mark.parametrize(
    ("runtime", "overrides", "expected"),
    [
        ("embedded", {}, DevelopmentPolicy(True, True, True, True)),
        ("direct", {}, DevelopmentPolicy(False, False, False, False)),
        ("dapr", {}, DevelopmentPolicy(False, False, False, False)),
        (
            "embedded",
            {"migrate_on_start": False, "load_sample_data": False},
            DevelopmentPolicy(True, False, False, True),
        ),
        (
            "direct",
            {"migrate_on_start": True, "load_sample_data": True},
            DevelopmentPolicy(False, True, True, False),
        ),
    ],
)
def test_the_development_policy_follows_the_runtime_unless_a_setting_decides(
    runtime: str, overrides: dict[str, Any], expected: DevelopmentPolicy
) -> None:
    settings = ServiceSettings.for_service(NAME, runtime=runtime, **overrides)
    assert settings.development == expected


async def test_only_development_may_fall_back_to_the_source_signing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JWT_SIGNING_KEY", raising=False)
    secrets = EnvSecretStore(None)
    embedded = ServiceSettings.for_service(NAME, runtime="embedded", secrets_file=None)
    assert await signing_key(embedded, secrets) == embedded.jwt_dev_signing_key
    with pytest.raises(RuntimeError, match="jwt-signing-key secret is required"):
        await signing_key(embedded.model_copy(update={"runtime": "direct"}), secrets)
