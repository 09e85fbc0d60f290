"""Shutdown lets work in flight finish: the server drains requests (bounded, so one hung request
cannot keep the lifespan from closing), the relay publishes what the last requests committed,
and an event handler in flight completes and is acked before the database closes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func
from sqlmodel import select

from billing_common.db import create_engine
from billing_common.events import CloudEvent
from billing_common.outbox import InboxRecord, OutboxMessage, SqlUnitOfWork, utcnow
from billing_common.runtime import (
    ServiceContext,
    close_context,
    open_context,
    select_adapters,
    start_context,
)
from billing_common.settings import ServiceSettings
from billing_launcher.servers import make_server
from tax_service.bootstrap import MIGRATIONS_DIR

SIGNING_KEY = "shutdown-tests-signing-key-0123456789abcdefghij"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_server_finishes_requests_in_flight_and_bounds_a_hung_one() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    lifespan_closed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        lifespan_closed.set()

    app = FastAPI(lifespan=lifespan)

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        entered.set()
        await release.wait()
        return {"status": "finished"}

    @app.get("/hang")
    async def hang() -> dict[str, str]:
        await asyncio.Event().wait()  # never answers
        return {}

    port = free_port()
    server = make_server(app, "127.0.0.1", port, graceful_shutdown_seconds=1)
    serving = asyncio.create_task(server.serve())
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        while not server.started:
            await asyncio.sleep(0.02)
        slow_answer = asyncio.create_task(client.get("/slow"))
        hung_answer = asyncio.create_task(client.get("/hang"))
        await entered.wait()
        server.should_exit = True  # what SIGTERM does
        await asyncio.sleep(0.2)
        release.set()
        answer = await slow_answer
        assert answer.status_code == 200
        assert answer.json() == {"status": "finished"}
        # The hung request is cut after the grace period and the lifespan still closes;
        # without the bound the server would wait for it forever.
        async with asyncio.timeout(30):
            await serving
        assert lifespan_closed.is_set()
        with contextlib.suppress(httpx.HTTPError):
            await hung_answer


@pytest.fixture
async def direct_context(
    database_url: str, amqp_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ServiceSettings, ServiceContext]]:
    """The tax service's kernel context on the direct runtime (real RabbitMQ vhost); the
    relay polls too rarely to publish anything unless woken or flushed."""
    monkeypatch.setenv("JWT_SIGNING_KEY", SIGNING_KEY)
    settings = ServiceSettings.for_service(
        "tax",
        runtime="direct",
        database_url=database_url,
        amqp_url=amqp_url,
        migrate_on_start=True,
        secrets_file=None,
        data_dir=tmp_path,
        outbox_poll_seconds=3600,
    )
    ctx = await open_context(settings, select_adapters(settings), migrations_dir=MIGRATIONS_DIR)
    yield settings, ctx


async def queue_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


@pytest.mark.integration
async def test_an_event_handler_in_flight_finishes_and_is_acked_on_shutdown(
    direct_context: tuple[ServiceSettings, ServiceContext], amqp_url: str
) -> None:
    settings, ctx = direct_context
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow_handler(event: CloudEvent) -> None:
        entered.set()
        await release.wait()
        async with SqlUnitOfWork(ctx.sessions) as uow:
            await uow.claim_event("tax", event)
            await uow.commit()

    ctx.subscribe("billing.test.slow", slow_handler)
    await start_context(ctx)
    event = CloudEvent(source="/test", type="billing.test.slow", data={})
    await ctx.bus.publish(event)
    async with asyncio.timeout(20):
        await entered.wait()

    closing = asyncio.create_task(close_context(ctx))
    await asyncio.sleep(0.3)
    assert not closing.done(), "shutdown did not wait for the handler in flight"
    release.set()
    async with asyncio.timeout(30):
        await closing

    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as conn:
            handled = (
                await conn.execute(
                    select(func.count())
                    .select_from(InboxRecord)
                    .where(InboxRecord.event_id == event.id)  # type: ignore[arg-type]
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    assert handled == 1
    # Acked: nothing waits in the queue (or its retry/dead-letter queues) for a redelivery.
    assert await queue_depth(amqp_url, "billing.events.tax") == 0
    assert await queue_depth(amqp_url, "billing.events.tax.retry.1") == 0
    assert await queue_depth(amqp_url, "billing.events.tax.dlq") == 0


@pytest.mark.integration
async def test_shutdown_publishes_what_the_last_requests_committed(
    direct_context: tuple[ServiceSettings, ServiceContext], amqp_url: str
) -> None:
    settings, ctx = direct_context
    await start_context(ctx)
    # A queue that receives the event type, declared the way a consumer would.
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(
        settings.amqp_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue("shutdown-test", exclusive=True)
    await queue.bind(exchange, routing_key="billing.test.last-request")
    await asyncio.sleep(0.2)  # the start-up pass of the relay found nothing to publish

    # Committed by a request just before SIGTERM: in the outbox, the relay not woken yet.
    event = CloudEvent(source="/test", type="billing.test.last-request", data={})
    async with ctx.sessions() as session, session.begin():
        session.add(
            OutboxMessage(
                event_id=event.id,
                aggregate="last-request",
                event_type=event.type,
                payload=event.to_json().decode(),
                created_at=utcnow(),
            )
        )
    await close_context(ctx)

    try:
        async with asyncio.timeout(10):
            message = await queue.get(fail=False)
            while message is None:
                await asyncio.sleep(0.05)
                message = await queue.get(fail=False)
        assert CloudEvent.from_json(message.body).id == event.id
    finally:
        await connection.close()
