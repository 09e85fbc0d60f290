"""A database that is down or drops its connections gives 503 problems and a pool that heals.

These run against the shared PostgreSQL without ever restarting it: a port where nothing
listens stands for a server that is down, and `pg_terminate_backend` on this test's own
connections is what a restart does to every client (the "terminating connection due to
administrator command" a fast shutdown sends). tests/test_faults_restart.py restarts a private
server for real.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from billing_common.db import DatabaseUnavailable, create_engine, ping
from billing_common.web import StrictJsonRoute, create_service_app

pytestmark = pytest.mark.integration


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/nothing"


def _app(engine: AsyncEngine, database_url: str | None = None) -> FastAPI:
    router = APIRouter(route_class=StrictJsonRoute)

    @router.get("/count")
    async def count() -> dict[str, int]:
        async with engine.connect() as conn:
            return {"one": int((await conn.execute(text("SELECT 1"))).scalar_one())}

    @router.get("/cut")
    async def cut() -> dict[str, int]:
        # The server ends the connection between two statements of this request.
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            assert database_url is not None
            await _terminate_backends(database_url)
            return {"one": int((await conn.execute(text("SELECT 1"))).scalar_one())}

    return create_service_app(
        service="test",
        title="t",
        description="d",
        version="1",
        routers=[router],
        lifespan=_no_lifespan,
        domain_errors={},
        readiness_checks=lambda app: [],
    )


@asynccontextmanager
async def _no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://test",
    )


def _assert_retryable_problem(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"].isdigit()
    assert answer.json()["type"] == "/problems/database-unavailable"


async def _terminate_backends(database_url: str) -> int:
    """Close every connection to this test's database from the server side."""
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
        )
    finally:
        await admin.close()


async def test_a_server_that_is_down_is_database_unavailable_not_an_os_error() -> None:
    engine = create_engine(_closed_port_url())
    try:
        with pytest.raises(DatabaseUnavailable):
            await ping(engine)
    finally:
        await engine.dispose()


async def test_a_server_that_is_down_answers_503_with_retry_after() -> None:
    engine = create_engine(_closed_port_url())
    try:
        async with _client(_app(engine)) as client:
            _assert_retryable_problem(await client.get("/count"))
    finally:
        await engine.dispose()


async def test_a_connection_the_server_terminates_mid_request_gives_503_then_the_pool_heals(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=3)
    try:
        async with _client(_app(engine, postgres_url)) as client:
            assert (await client.get("/count")).status_code == 200  # the pool holds one
            _assert_retryable_problem(await client.get("/cut"))
            # No later request pays for a connection the server closed.
            statuses = [(await client.get("/count")).status_code for _ in range(4)]
    finally:
        await engine.dispose()
    assert statuses == [200, 200, 200, 200], statuses


async def test_a_connection_the_server_terminated_is_database_unavailable(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            assert await _terminate_backends(postgres_url) == 1
            with pytest.raises(DatabaseUnavailable):
                await conn.execute(text("SELECT 1"))
        await ping(engine)  # and the next checkout connects afresh
    finally:
        await engine.dispose()


async def test_a_query_cancelled_mid_flight_stays_cancelled(postgres_url: str) -> None:
    # SQLAlchemy treats the cancel as a disconnect; it must still surface as a cancellation,
    # or the relay and the consumers could not be stopped.
    engine = create_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            query = asyncio.create_task(conn.execute(text("SELECT pg_sleep(5)")))
            await asyncio.sleep(0.5)
            query.cancel()
            with pytest.raises(asyncio.CancelledError):
                await query
        await ping(engine)
    finally:
        await engine.dispose()
