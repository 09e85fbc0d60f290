"""Fixtures of the discount service's tests: a migrated database (SQLite and PostgreSQL via
the kernel's `database_url`), units of work per tenant, and the app with its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.auth import ALL_SCOPES
from billing_common.db import create_engine, session_factory
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_common.testing import ServiceMigrations
from discount_service.adapters.unit_of_work import DiscountUnitOfWork, uow_factory
from discount_service.bootstrap import MIGRATIONS_DIR, create_app
from discount_service.service_layer.dependencies import Dependencies


@dataclass
class Db:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    def uow(self, tenant: str = "acme") -> DiscountUnitOfWork:
        return DiscountUnitOfWork(self.sessions, None, tenant)

    def deps(self, now: datetime | None = None) -> Dependencies:
        """The use cases' dependencies on this database; `now` fixes their clock."""
        factory = uow_factory(self.sessions, None)
        return Dependencies(uow=factory) if now is None else Dependencies(factory, lambda: now)


@pytest.fixture(scope="session")
def service_migrations() -> ServiceMigrations:
    """What the kernel's `migrated_database_url` copies from its once-per-session template."""
    return ServiceMigrations(MIGRATIONS_DIR, "alembic_version_discount")


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[Db]:
    engine = create_engine(migrated_database_url)
    try:
        yield Db(engine, session_factory(engine))
    finally:
        await engine.dispose()


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    platform: EmbeddedPlatform

    def headers(self, *scopes: str, tenant: str = "acme", **extra: str) -> dict[str, str]:
        token = self.app.state.ctx.tokens.mint(
            subject="test", tenant=tenant, scopes=scopes or ALL_SCOPES
        )
        return {"authorization": f"Bearer {token}", **extra}


def _discount_settings(database_url: str, **overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "runtime": "embedded",
        "database_url": database_url,
        "load_sample_data": False,
        "secrets_file": None,
        "outbox_poll_seconds": 0.05,
        **overrides,
    }
    return ServiceSettings.for_service("discount", **values)


@pytest.fixture
def discount_settings() -> Callable[..., ServiceSettings]:
    """Settings for a test app: embedded runtime on the given database, no samples."""
    return _discount_settings


@pytest.fixture
async def api(
    migrated_database_url: str, embedded_platform: EmbeddedPlatform
) -> AsyncIterator[Api]:
    app = create_app(_discount_settings(migrated_database_url), embedded_platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://discount") as client:
            yield Api(app, client, embedded_platform)
