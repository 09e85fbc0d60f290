"""Every service's Alembic scripts against its models, on SQLite and on PostgreSQL.

- The schema the migrations build is the schema the models describe (what `alembic check`
  would report), for the service's own tables and the kernel tables it carries.
- Stairway: each revision upgrades, downgrades one step and upgrades again, and the whole
  chain goes back down to an empty database. Revisions are read from each service's scripts
  directory, so a new migration is covered without touching this file.
- The migrated templates the service tests copy their databases from are at head, and each
  copy is a database of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from billing_common.db import alembic_config, create_engine
from billing_common.testing import (
    MigratedTemplates,
    ServiceMigrations,
    admin_url,
    drop_postgres_database,
)
from billing_launcher.registry import SERVICES, bootstrap_module

# Modules whose tables every service database carries (outbox, inbox, kv_state).
KERNEL_PACKAGE = "billing_common"


def _version_table(service: str) -> str:
    return f"alembic_version_{service}"


def _config(service: str, engine: AsyncEngine) -> Config:
    url = engine.url.render_as_string(hide_password=False)
    return alembic_config(bootstrap_module(service).MIGRATIONS_DIR, url, _version_table(service))


def service_metadata(service: str) -> MetaData:
    """The tables of one service's models and of the kernel, and no other service's: SQLModel
    keeps every imported model in one registry, and this process imports all four."""
    bootstrap_module(service)  # imports the service's models onto the shared registry
    packages = (f"{service}_service", KERNEL_PACKAGE)
    own = MetaData()
    for mapper in SQLModel._sa_registry.mappers:
        module = mapper.class_.__module__
        if module.split(".", 1)[0] in packages and mapper.local_table.name not in own.tables:
            mapper.local_table.to_metadata(own)
    return own


def revisions_base_to_head(service: str) -> list[str]:
    script = ScriptDirectory(str(bootstrap_module(service).MIGRATIONS_DIR))
    heads = script.get_heads()
    assert len(heads) == 1, f"{service}: one head expected, found {heads}"
    return [rev.revision for rev in reversed(list(script.walk_revisions("base", "heads")))]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _alembic(service: str, engine: AsyncEngine, verb: str, revision: str) -> None:
    """`alembic upgrade|downgrade <revision>` in one transaction, as `billing_common.db.migrate`
    runs it at start-up (the service's env.py takes the connection from the config)."""
    cfg = _config(service, engine)
    step = command.upgrade if verb == "upgrade" else command.downgrade

    def _run(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        step(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(_run)


async def _current(engine: AsyncEngine, service: str) -> str | None:
    def _read(connection: Connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table": _version_table(service)}
        )
        return context.get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_read)


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


def _schema_drift(connection: Connection, metadata: MetaData, service: str) -> list[Any]:
    # Types compared as env.py compares them for autogenerate. Server defaults are not: the
    # migrations give some counters a database default ("0") the models leave to Python.
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "version_table": _version_table(service)}
    )
    return [
        change
        for change in compare_metadata(context, metadata)
        # The version table is Alembic's, not a model's.
        if not (change[0] == "remove_table" and change[1].name == _version_table(service))
    ]


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_create_what_the_models_describe(
    service: str, engine: AsyncEngine
) -> None:
    metadata = service_metadata(service)
    assert any(not t.startswith(("outbox", "inbox", "kv_state")) for t in metadata.tables)
    await _alembic(service, engine, "upgrade", "head")
    async with engine.connect() as conn:
        drift = await conn.run_sync(_schema_drift, metadata, service)
    assert drift == [], f"{service}: the migrations and the models disagree"


@pytest.mark.parametrize("service", SERVICES)
async def test_each_migration_upgrades_downgrades_and_upgrades_again(
    service: str, engine: AsyncEngine
) -> None:
    revisions = revisions_base_to_head(service)
    previous: str | None = None
    for revision in revisions:
        await _alembic(service, engine, "upgrade", revision)
        assert await _current(engine, service) == revision
        await _alembic(service, engine, "downgrade", "-1")
        assert await _current(engine, service) == previous
        await _alembic(service, engine, "upgrade", revision)
        assert await _current(engine, service) == revision
        previous = revision
    await _alembic(service, engine, "downgrade", "base")
    assert await _current(engine, service) is None
    # Down to base leaves nothing but Alembic's own (empty) version table.
    assert await _tables(engine) <= {_version_table(service)}


# -- the migrated templates the service tests copy (billing_common.testing) -------------------


def _tax_migrations() -> ServiceMigrations:
    return ServiceMigrations(bootstrap_module("tax").MIGRATIONS_DIR, _version_table("tax"))


async def _head_and_rows(url: str) -> tuple[str | None, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM kv_state"))).scalar_one()
        return await _current(engine, "tax"), count
    finally:
        await engine.dispose()


async def _write_a_row(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO kv_state (key, value, etag) VALUES ('k', 'v', 'e')")
            )
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_each_migrated_copy_is_at_head_and_its_own(kind: str, tmp_path: Path) -> None:
    templates = MigratedTemplates(tmp_path / "templates")
    (tmp_path / "templates").mkdir()
    head = revisions_base_to_head("tax")[-1]
    copies: list[str] = []
    try:
        for n in range(2):
            if kind == "sqlite":
                copies.append(templates.sqlite_copy(_tax_migrations(), tmp_path / f"{n}.db"))
            else:
                copies.append(templates.postgres_copy(_tax_migrations())[1])
        asyncio.run(_write_a_row(copies[0]))
        assert asyncio.run(_head_and_rows(copies[0])) == (head, 1)
        # The second copy, made from the same template, saw nothing of the first's write.
        assert asyncio.run(_head_and_rows(copies[1])) == (head, 0)
    finally:
        if kind == "postgresql":
            for url in copies:
                drop_postgres_database(url.rsplit("/", 1)[1])
        built = templates.postgres_templates
        templates.drop()
    if kind == "postgresql":
        assert len(built) == 1
        assert not asyncio.run(_postgres_databases_named(built[0]))


async def _postgres_databases_named(name: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(admin_url())
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname = $1", name)
        return [row["datname"] for row in rows]
    finally:
        await conn.close()
