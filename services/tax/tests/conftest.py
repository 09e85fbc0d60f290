"""Fixtures of the tax service's tests: a migrated database (SQLite and PostgreSQL via the
kernel's `database_url`), units of work per tenant, and the app with its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

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
from tax_service.adapters.unit_of_work import SqlTaxUnitOfWork, uow_factory
from tax_service.bootstrap import MIGRATIONS_DIR, create_app
from tax_service.domain.model import Jurisdiction, TaxRule
from tax_service.service_layer.dependencies import Dependencies


def rule(
    country: str = "DE",
    category: str = "standard",
    rate: str = "0.19",
    *,
    region: str | None = None,
    name: str | None = None,
    rule_id: str | None = None,
    key: str | None = None,
    valid_from: date = date(2020, 1, 1),
    valid_to: date | None = None,
    zero_rated: bool | None = None,
    compound: bool = False,
    priority: int = 0,
) -> TaxRule:
    """A rule with sensible defaults; a rate of 0 is zero-rated unless said otherwise."""
    jurisdiction = Jurisdiction(country, region)
    return TaxRule(
        id=rule_id or f"{jurisdiction}-{category}-{rate}-{priority}-{valid_from}",
        key=key,
        jurisdiction=jurisdiction,
        category=category,
        name=name or f"{jurisdiction} {category} {rate}",
        rate=Decimal(rate),
        valid_from=valid_from,
        valid_to=valid_to,
        zero_rated=(Decimal(rate) == 0) if zero_rated is None else zero_rated,
        compound=compound,
        priority=priority,
    )


RuleFactory = Callable[..., TaxRule]


@pytest.fixture(scope="session")
def make_rule() -> RuleFactory:
    return rule


@dataclass
class Db:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    def uow(self, tenant: str = "acme") -> SqlTaxUnitOfWork:
        return SqlTaxUnitOfWork(self.sessions, None, tenant)

    def deps(self, now: datetime) -> Dependencies:
        """The use cases' dependencies, with a clock stopped at `now`."""
        return Dependencies(uow=uow_factory(self.sessions, None), clock=lambda: now)


@pytest.fixture(scope="session")
def service_migrations() -> ServiceMigrations:
    """What the kernel's `migrated_database_url` copies from its once-per-session template."""
    return ServiceMigrations(MIGRATIONS_DIR, "alembic_version_tax")


@pytest.fixture
async def db(migrated_database_url: str) -> AsyncIterator[Db]:
    engine = create_engine(migrated_database_url)
    try:
        yield Db(engine, session_factory(engine))
    finally:
        await engine.dispose()


def tax_settings(database_url: str, **overrides: object) -> ServiceSettings:
    values: dict[str, object] = {
        "runtime": "embedded",
        "database_url": database_url,
        "load_sample_data": False,
        "secrets_file": None,
        "outbox_poll_seconds": 0.05,
        **overrides,
    }
    return ServiceSettings.for_service("tax", **values)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    platform: EmbeddedPlatform

    def headers(self, *scopes: str, tenant: str = "acme") -> dict[str, str]:
        token = self.app.state.ctx.tokens.mint(
            subject="test", tenant=tenant, scopes=scopes or ALL_SCOPES
        )
        return {"authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_api(
    url: str, platform: EmbeddedPlatform, **overrides: object
) -> AsyncIterator[Api]:
    """The app with its lifespan running (migrations, relay, samples if asked)."""
    app = create_app(tax_settings(url, **overrides), platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tax") as client:
            yield Api(app, client, platform)


@pytest.fixture
async def api(migrated_sqlite_url: str, embedded_platform: EmbeddedPlatform) -> AsyncIterator[Api]:
    """The app on SQLite (fast); the repository tests cover PostgreSQL, and `api_any_db`
    runs the end-to-end checks on both."""
    async with running_api(
        migrated_sqlite_url, embedded_platform, max_body_bytes=64_000
    ) as running:
        yield running


@pytest.fixture
async def api_any_db(
    migrated_database_url: str, embedded_platform: EmbeddedPlatform
) -> AsyncIterator[Api]:
    async with running_api(migrated_database_url, embedded_platform) as running:
        yield running


@pytest.fixture(scope="session")
def start_api() -> Callable[..., AbstractAsyncContextManager[Api]]:
    """`async with start_api(url, platform, **settings) as api:` — for tests that restart."""
    return running_api
