"""Pytest plugin shared by every service's tests (registered through the `pytest11` entry
point): databases on SQLite and on the real PostgreSQL, created and dropped per test.

PostgreSQL is found at TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
If it is not reachable the PostgreSQL cases are skipped with the reason, except under CI=true,
where that is a failure: CI must never pass by skipping the real-server tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def create_postgres_database(template: str | None = None) -> tuple[str, str]:
    """Create a uniquely named database, empty or a copy of `template`; return (its name, its
    asyncpg SQLAlchemy URL)."""
    _check_postgres()
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    copy_of = f' TEMPLATE "{template}"' if template is not None else ""
    asyncio.run(_execute_admin(f'CREATE DATABASE "{name}"{copy_of}'))
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


# -- migrated databases -----------------------------------------------------------------------
# Most tests want a service's schema, not an empty database. Running Alembic for each of them
# costs more than the test (a third of a second on PostgreSQL): instead each service's scripts
# run once per session into a template, and every test gets a copy of it (CREATE DATABASE ...
# TEMPLATE on PostgreSQL, SQLite's backup API on SQLite). Start-up migrations still run and find
# the copy at head; `database_url` stays empty for the tests of migrating itself.


@dataclass(frozen=True)
class ServiceMigrations:
    """Where a service's Alembic scripts are and which version table they keep."""

    migrations_dir: Path
    version_table: str


class MigratedTemplates:
    """One migrated template per service and database kind, built on first use."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._sqlite: dict[ServiceMigrations, Path] = {}
        self._postgres: dict[ServiceMigrations, str] = {}

    def sqlite_copy(self, migrations: ServiceMigrations, target: Path) -> str:
        import sqlite3

        template = self._sqlite.get(migrations)
        if template is None:
            template = self._directory / f"{migrations.version_table}.db"
            asyncio.run(_migrate(f"sqlite+aiosqlite:///{template}", migrations))
            self._sqlite[migrations] = template
        # The backup API copies a consistent database, whatever its journal (WAL) holds.
        source, copy = sqlite3.connect(template), sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        return f"sqlite+aiosqlite:///{target}"

    def postgres_copy(self, migrations: ServiceMigrations) -> tuple[str, str]:
        template = self._postgres.get(migrations)
        if template is None:
            template, url = create_postgres_database()
            try:
                asyncio.run(_migrate(url, migrations))
                # A connection left on a template makes copying it fail: allow none from now.
                asyncio.run(_execute_admin(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false'))
            except BaseException:
                drop_postgres_database(template)
                raise
            self._postgres[migrations] = template
        return create_postgres_database(template=template)

    @property
    def postgres_templates(self) -> list[str]:
        return list(self._postgres.values())

    def drop(self) -> None:
        for name in self._postgres.values():
            drop_postgres_database(name)
        self._postgres.clear()


async def _migrate(url: str, migrations: ServiceMigrations) -> None:
    from billing_common.db import create_engine, migrate

    engine = create_engine(url)
    try:
        await migrate(engine, migrations.migrations_dir, migrations.version_table)
    finally:
        # No connection may stay open on a PostgreSQL template while it is copied.
        await engine.dispose()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("migrated-templates"))
    try:
        yield templates
    finally:
        templates.drop()


@pytest.fixture
def service_migrations() -> ServiceMigrations:
    """Each service's conftest overrides this with its own scripts and version table."""
    raise pytest.UsageError("define a `service_migrations` fixture to use a migrated database")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def migrated_database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    service_migrations: ServiceMigrations,
    migrated_templates: MigratedTemplates,
) -> Iterator[str]:
    """A fresh database with the service's schema at head: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        yield migrated_templates.sqlite_copy(service_migrations, tmp_path / "test.db")
        return
    name, url = migrated_templates.postgres_copy(service_migrations)
    try:
        yield url
    finally:
        drop_postgres_database(name)


@pytest.fixture
def migrated_sqlite_url(
    tmp_path: Path, service_migrations: ServiceMigrations, migrated_templates: MigratedTemplates
) -> str:
    return migrated_templates.sqlite_copy(service_migrations, tmp_path / "test.db")


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
# runs everything else and nothing that needs one: the PostgreSQL half of `database_url`
# carries the mark itself; a test using one of these fixtures, directly or through another
# fixture, gets it here, and so does every case of a test parametrised with "postgresql" (a
# test's own `params=["sqlite", "postgresql"]` fixture).
SERVER_FIXTURES = frozenset({"postgres_url", "amqp_url"})
SERVER_PARAMS = frozenset({"postgresql"})


def needs_a_server(item: pytest.Item) -> bool:
    if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(isinstance(value, str) and value in SERVER_PARAMS for value in params)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_a_server(item):
            item.add_marker(pytest.mark.integration)


@contextlib.contextmanager
def postgres_shutting_down(engine: Any) -> Iterator[None]:
    """Inside the block, every new connection of `engine` (an AsyncEngine on asyncpg) is
    refused as PostgreSQL refuses one while it shuts down: SQLSTATE 57P03, which asyncpg
    raises as CannotConnectNowError and the dialect wraps in its DBAPI Error. Connections
    already in the pool are left alone."""
    import asyncpg

    dialect = engine.sync_engine.dialect
    connect = dialect.connect

    def shutting_down(*_: Any, **__: Any) -> Any:
        error = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
        raise dialect.loaded_dbapi.Error(str(error)) from error

    dialect.connect = shutting_down
    try:
        yield
    finally:
        dialect.connect = connect


def record_direct_answers(monkeypatch: pytest.MonkeyPatch, *route_classes: type[Any]) -> list[str]:
    """The paths the given DirectJsonRoute classes answered so far: with a response, or by
    raising what the app's exception handlers answer (None is not answered). The services'
    direct-route tests use it to tell a direct answer from FastAPI's."""
    answered: list[str] = []
    for route_class in route_classes:
        original = route_class.answer_well_formed

        def recording(self: Any, request: Any, document: Any, _original: Any = original) -> Any:
            async def answer() -> Any:
                try:
                    response = await _original(self, request, document)
                except Exception:
                    answered.append(request.url.path)
                    raise
                if response is not None:
                    answered.append(request.url.path)
                return response

            return answer()

        monkeypatch.setattr(route_class, "answer_well_formed", recording)
    return answered
