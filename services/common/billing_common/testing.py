"""Pytest plugin shared by every service's tests (registered through the `pytest11` entry
point): databases on SQLite and on the real PostgreSQL, created and dropped per test.

PostgreSQL is found at TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
If it is not reachable the PostgreSQL cases are skipped with the reason, except under CI=true,
where that is a failure: CI must never pass by skipping the real-server tests.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_ADMIN_URL)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not reachable ({reason}); run `make test` to start it")


async def _execute_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url(), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


_pg_checked: dict[str, str | None] = {}


def _check_postgres() -> None:
    if "result" not in _pg_checked:
        try:
            asyncio.run(_execute_admin("SELECT 1"))
            _pg_checked["result"] = None
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            _pg_checked["result"] = f"{type(exc).__name__}: {exc}"
    reason = _pg_checked["result"]
    if reason is not None:
        _unavailable(reason)


def create_postgres_database() -> tuple[str, str]:
    """Create a uniquely named database; return (its name, its asyncpg SQLAlchemy URL)."""
    _check_postgres()
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute_admin(f'CREATE DATABASE "{name}"'))
    base = admin_url().rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return name, f"{base}/{name}"


def drop_postgres_database(name: str) -> None:
    asyncio.run(_execute_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: once on SQLite, once on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    name, url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    name, url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(name)


@pytest.fixture
async def embedded_platform() -> AsyncIterator[object]:
    from billing_common.runtime import EmbeddedPlatform

    platform = EmbeddedPlatform()
    await platform.bus.start()
    try:
        yield platform
    finally:
        await platform.bus.stop()


# -- RabbitMQ -------------------------------------------------------------------------------
# Each test gets its own virtual host, created and deleted with rabbitmqctl, so tests never see
# each other's exchanges, queues or messages. The broker is found at TEST_AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/); unreachable means skip, or fail under CI=true.

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


def amqp_admin_url() -> str:
    return os.environ.get("TEST_AMQP_URL", DEFAULT_AMQP_URL)


def _rabbitmq_unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"RabbitMQ is required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"RabbitMQ not reachable ({reason}); run `make test` to start it")


def _rabbitmqctl(*args: str) -> None:
    import subprocess

    result = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()}")


_rabbit_checked: dict[str, str | None] = {}


def _check_rabbitmq() -> None:
    if "result" not in _rabbit_checked:
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(amqp_admin_url())
        try:
            socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 3).close()
            _rabbitmqctl("list_vhosts")
            _rabbit_checked["result"] = None
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            _rabbit_checked["result"] = f"{type(exc).__name__}: {exc}"
    reason = _rabbit_checked["result"]
    if reason is not None:
        _rabbitmq_unavailable(reason)


def create_rabbitmq_vhost() -> tuple[str, str]:
    """Create a uniquely named vhost the URL's user may use; return (its name, its URL)."""
    from urllib.parse import urlsplit, urlunsplit

    _check_rabbitmq()
    parts = urlsplit(amqp_admin_url())
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
    return name, urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def delete_rabbitmq_vhost(name: str) -> None:
    # Deleting the vhost also closes any connection a failed test left open on it.
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh, empty RabbitMQ virtual host on the real broker, as an AMQP URL."""
    name, url = create_rabbitmq_vhost()
    try:
        yield url
    finally:
        delete_rabbitmq_vhost(name)


# -- tiers ------------------------------------------------------------------------------------
# `integration` marks exactly the tests that talk to a real server, so `-m "not integration"`
# (make test-unit) runs everything else and nothing that needs one: the PostgreSQL half of
# `database_url` carries the mark itself; a test using one of these fixtures, directly or
# through another fixture, gets it here.
SERVER_FIXTURES = frozenset({"postgres_url", "amqp_url"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
