"""Cross-service fixtures: the four real services in one process (embedded runtime), each on
its own SQLite file, joined by the in-process bus and in-process invocation — exactly what
`make run` runs, minus the sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from billing_common.auth import ALL_SCOPES
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_launcher.registry import SERVICES, app_factory


@dataclass
class Platform:
    embedded: EmbeddedPlatform
    apps: dict[str, Any]
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def token(self, tenant: str = "demo", scopes: frozenset[str] = ALL_SCOPES) -> str:
        tokens = self.apps["invoice"].state.ctx.tokens
        return str(tokens.mint(subject="e2e", tenant=tenant, scopes=scopes))

    def headers(self, tenant: str = "demo", **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(tenant)}", **extra}

    async def settle(self) -> None:
        """Let every outbox relay publish and every consumer finish."""
        for _ in range(3):
            for app in self.apps.values():
                while await app.state.ctx.relay.publish_pending():
                    pass
            await self.embedded.bus.wait_idle()


@pytest.fixture(autouse=True)
def one_pdf_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """One PDF worker process, not the default two: no test here is about the pool's size,
    and each worker spawned costs a fresh interpreter importing the renderer."""
    monkeypatch.setenv("INVOICE_PDF_WORKERS", "1")


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    embedded = EmbeddedPlatform()
    apps = {
        name: app_factory(name)(
            ServiceSettings.for_service(
                name,
                runtime="embedded",
                data_dir=tmp_path,
                secrets_file=None,
                load_sample_data=True,
                outbox_poll_seconds=0.2,
            ),
            embedded,
        )
        for name in SERVICES
    }
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        await embedded.bus.start()
        stack.push_async_callback(embedded.bus.stop)
        result = Platform(embedded, apps)
        for name, app in apps.items():
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=f"http://{name}"
            )
            stack.push_async_callback(client.aclose)
            result.clients[name] = client
        yield result
