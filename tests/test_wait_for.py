"""`billing_launcher wait-for`, the init container that holds migrations and the Dapr
sidecar back until PostgreSQL and RabbitMQ accept connections."""

from __future__ import annotations

import asyncio
import socket

import pytest

from billing_launcher.__main__ import main
from billing_launcher.wait_for import wait_for


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there any more


@pytest.mark.asyncio
async def test_it_returns_once_the_server_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db")
    waiting = asyncio.create_task(wait_for(["DATABASE_URL"], timeout=60, interval=0.05))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    async with server:
        assert await asyncio.wait_for(waiting, 30) is True


def test_it_fails_after_the_timeout_and_skips_unset_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_URL", f"amqp://u:p@127.0.0.1:{_closed_port()}/")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["wait-for", "--timeout", "0.3", "DATABASE_URL", "AMQP_URL"]) == 1
    assert main(["wait-for", "--timeout", "0.3", "DATABASE_URL"]) == 0
