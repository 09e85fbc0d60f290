"""The four services of `make run` served on real sockets from a background thread: the
embedded runtime (SQLite files, in-process bus and invocation), with uvicorn as in
`billing_launcher run`, for clients that speak plain HTTP from the test's own thread
(schemathesis, requests)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from billing_common.auth import ALL_SCOPES
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_launcher.registry import SERVICES, app_factory
from billing_launcher.servers import make_server
from tests.direct_platform import free_port


@dataclass
class ServedPlatform:
    apps: dict[str, Any]
    urls: dict[str, str]

    def token(self, tenant: str = "demo", scopes: frozenset[str] = ALL_SCOPES) -> str:
        tokens = self.apps["invoice"].state.ctx.tokens
        return str(tokens.mint(subject="contract", tenant=tenant, scopes=scopes))


@contextmanager
def served_platform(data_dir: Path, *, load_sample_data: bool = True) -> Iterator[ServedPlatform]:
    ports = {name: free_port() for name in SERVICES}
    embedded = EmbeddedPlatform()
    apps = {
        name: app_factory(name)(
            ServiceSettings.for_service(
                name,
                runtime="embedded",
                data_dir=data_dir,
                secrets_file=None,
                load_sample_data=load_sample_data,
                outbox_poll_seconds=0.2,
                port=ports[name],
            ),
            embedded,
        )
        for name in SERVICES
    }
    servers: list[uvicorn.Server] = [
        make_server(apps[name], "127.0.0.1", ports[name]) for name in SERVICES
    ]
    failure: list[BaseException] = []

    async def serve() -> None:
        await embedded.bus.start()
        try:
            await asyncio.gather(*(server.serve() for server in servers))
        finally:
            await embedded.bus.stop()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="served-platform", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not all(server.started for server in servers):
        if failure or not thread.is_alive():
            raise RuntimeError(f"the platform did not start: {failure!r}")
        if time.monotonic() > deadline:
            raise TimeoutError("the platform did not start within 60 s")
        time.sleep(0.05)
    try:
        yield ServedPlatform(
            apps, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        )
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=30)
