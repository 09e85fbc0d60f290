"""Readiness on the direct runtime means "can serve requests": it stays green while RabbitMQ is
unreachable and the outbox relay fails (the events wait in the outbox, the metrics say so), and
turns red when the database is unreachable. The same in all four services.

Each service runs in this process on its own fresh PostgreSQL database and RabbitMQ vhost, both
reached through TCP proxies the test cuts: an outage as the service sees it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from billing_common.events import CloudEvent
from billing_common.outbox import OutboxMessage, utcnow
from billing_common.settings import ServiceSettings
from billing_common.testing import (
    create_postgres_database,
    create_rabbitmq_vhost,
    delete_rabbitmq_vhost,
    drop_postgres_database,
)
from billing_launcher.registry import SERVICES, app_factory
from tests.direct_platform import TcpProxy

pytestmark = pytest.mark.integration

SIGNING_KEY = "readiness-tests-signing-key-0123456789abcdefghij"


def proxied(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def gauge(metrics_text: str, name: str, service: str) -> float | None:
    match = re.search(rf'^{name}{{service="{service}"}} (\S+)$', metrics_text, re.M)
    return float(match.group(1)) if match else None


@dataclass
class Running:
    apps: dict[str, FastAPI]
    clients: dict[str, httpx.AsyncClient]
    broker: TcpProxy
    database: TcpProxy

    async def ready(self) -> dict[str, httpx.Response]:
        names = list(self.clients)
        answers = await asyncio.gather(*(self.clients[n].get("/readyz") for n in names))
        return dict(zip(names, answers, strict=True))

    async def metrics(self, service: str) -> str:
        return (await self.clients[service].get("/metrics")).text


@pytest_asyncio.fixture
async def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """All four services at once (one event loop), so the outage is waited out once."""
    databases = await asyncio.gather(
        *(asyncio.to_thread(create_postgres_database) for _ in SERVICES)
    )
    # One vhost for the four, as in `make up`: they share the exchange like in production.
    vhost, amqp_url = await asyncio.to_thread(create_rabbitmq_vhost)
    broker_url, db_url = urlsplit(amqp_url), urlsplit(databases[0][1])
    broker = TcpProxy(broker_url.hostname or "127.0.0.1", broker_url.port or 5672)
    database = TcpProxy(db_url.hostname or "127.0.0.1", db_url.port or 5432)
    await broker.start()
    await database.start()
    monkeypatch.setenv("JWT_SIGNING_KEY", SIGNING_KEY)
    apps: dict[str, FastAPI] = {}
    clients: dict[str, httpx.AsyncClient] = {}
    try:
        async with AsyncExitStack() as stack:
            for service, (_, url) in zip(SERVICES, databases, strict=True):
                settings = ServiceSettings.for_service(
                    service,
                    runtime="direct",
                    database_url=proxied(url, database),
                    amqp_url=proxied(amqp_url, broker),
                    migrate_on_start=True,
                    secrets_file=None,
                    data_dir=tmp_path,
                    outbox_poll_seconds=0.2,
                    shutdown_flush_seconds=0.5,
                )
                app = apps[service] = app_factory(service)(settings, None)
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients[service] = await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url=f"http://{service}"
                    )
                )
            yield Running(apps, clients, broker, database)
            # Bring both back so the lifespans close cleanly.
            await broker.restore()
            await database.restore()
    finally:
        await broker.stop()
        await database.stop()
        await asyncio.to_thread(delete_rabbitmq_vhost, vhost)
        await asyncio.gather(
            *(asyncio.to_thread(drop_postgres_database, name) for name, _ in databases)
        )


async def test_ready_while_the_broker_is_down_not_ready_without_the_database(
    running: Running,
) -> None:
    assert {n: r.status_code for n, r in (await running.ready()).items()} == dict.fromkeys(
        SERVICES, 200
    )

    await running.broker.cut()
    # An event committed in each service while the broker is away: every relay fails to
    # publish it and pauses. A type nobody subscribes to, so it affects no service.
    for service, app in running.apps.items():
        event = CloudEvent(source=f"/{service}", type=f"billing.test.{service}.probe", data={})
        async with app.state.ctx.sessions() as session, session.begin():
            session.add(
                OutboxMessage(
                    event_id=event.id,
                    aggregate=f"probe-{event.id}",
                    event_type=event.type,
                    payload=event.to_json().decode(),
                    created_at=utcnow(),
                )
            )
        app.state.ctx.relay.notify()

    async def relays_paused() -> bool:
        return not any(app.state.ctx.relay.healthy for app in running.apps.values())

    await eventually(relays_paused, "every relay to fail against the cut broker")
    ready = await running.ready()
    assert {n: r.status_code for n, r in ready.items()} == dict.fromkeys(SERVICES, 200), {
        n: r.text for n, r in ready.items()
    }
    for service in SERVICES:
        metrics = await running.metrics(service)
        assert gauge(metrics, "billing_outbox_relay_up", service) == 0
        assert gauge(metrics, "billing_outbox_pending", service) == 1

    await running.database.cut()
    for service, answer in (await running.ready()).items():
        assert answer.status_code == 503, (service, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "database" in answer.json()["failures"]

    await running.database.restore()
    await running.broker.restore()

    async def published() -> bool:
        for service, app in running.apps.items():
            pending = gauge(await running.metrics(service), "billing_outbox_pending", service)
            if pending != 0 or not app.state.ctx.relay.healthy:
                return False
        return True

    await eventually(published, "every relay to publish its waiting event")
    assert {n: r.status_code for n, r in (await running.ready()).items()} == dict.fromkeys(
        SERVICES, 200
    )
    for service in SERVICES:
        metrics = await running.metrics(service)
        assert gauge(metrics, "billing_outbox_relay_up", service) == 1
        last = gauge(metrics, "billing_outbox_relay_last_success_timestamp_seconds", service)
        assert last is not None and last > 0
