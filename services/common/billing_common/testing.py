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


@pytest.fixture(params=["sqlite", "postgresql"])
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
