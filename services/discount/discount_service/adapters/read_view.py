"""The read view of the quotes on PostgreSQL: a pooled connection's asyncpg connection, no
Session and no transaction. A warm quote is one statement (the configuration version, the
coupons and the customer's usage, discount_service.adapters.coupons_repository) and nothing
to roll back; the cached configuration is the units of work's (one ConfigCache)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from billing_common.db import PostgresDriver
from discount_service.adapters.config_cache import VERSION_SQL, ConfigCache, TenantConfig
from discount_service.adapters.coupons_repository import (
    CUSTOMER_COUPONS_SQL,
    config_version,
    coupon_keys,
    customer_coupons,
)
from discount_service.adapters.policies_repository import load_active_policies
from discount_service.adapters.settings_repository import load_settings
from discount_service.domain.model import DiscountPolicy, StackingSettings
from discount_service.service_layer.ports import CustomerCoupons, ReadViewFactory


class SqlReadView:
    """One tenant's reads, each in autocommit (its own snapshot). The configuration comes
    from the cache at the version the view read first, as in a unit of work
    (discount_service.adapters.config_cache.ConfigView): what is loaded on a miss is read
    after that version, so it is never older than it."""

    def __init__(self, engine: AsyncEngine, tenant: str, cache: ConfigCache) -> None:
        self.tenant = tenant
        self._engine = engine
        self._cache = cache
        self._entry: TenantConfig | None = None
        self._connection: AsyncConnection | None = None
        self._driver: PostgresDriver | None = None
        self.coupons = _CouponReads(self)
        self.policies = _PolicyReads(self)
        self.settings = _SettingsReads(self)

    async def __aenter__(self) -> Self:
        self._connection = await self._engine.connect()
        raw = await self._connection.get_raw_connection()
        self._driver = PostgresDriver(self._connection, raw.driver_connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is None:
            return
        try:
            # Back to the pool; a ROLLBACK goes out only if a cache miss's load began a
            # transaction (SQLAlchemy's autobegin), the raw statements began none.
            await connection.close()
        except Exception:
            if exc is None:
                raise
            # The database went away: the error the read raised is the one to report.

    @property
    def driver(self) -> PostgresDriver:
        if self._driver is None:
            raise RuntimeError("a read view is used inside `async with` only")
        return self._driver

    @property
    def connection(self) -> AsyncConnection:
        if self._connection is None:
            raise RuntimeError("a read view is used inside `async with` only")
        return self._connection

    def observe(self, version: int) -> TenantConfig:
        """The cached configuration at `version`, read by a statement of this view."""
        if self._entry is None or self._entry.version != version:
            self._entry = self._cache.at(self.tenant, version)
        return self._entry

    async def current(self) -> TenantConfig:
        """The cached configuration at the version this view read (reading it first if no
        statement did yet)."""
        if self._entry is None:
            return self.observe(int(await self.driver.fetchval(VERSION_SQL, self.tenant) or 0))
        return self._entry


class _CouponReads:
    def __init__(self, view: SqlReadView) -> None:
        self._view = view

    async def for_customer(self, codes: Iterable[str], customer_id: str) -> CustomerCoupons:
        keys = coupon_keys(codes)
        if not keys:
            return CustomerCoupons({}, {})
        view = self._view
        rows = await view.driver.fetch(CUSTOMER_COUPONS_SQL, view.tenant, keys, customer_id)
        return customer_coupons(rows, view.observe(config_version(rows)))


class _PolicyReads:
    def __init__(self, view: SqlReadView) -> None:
        self._view = view

    async def active(self) -> list[DiscountPolicy]:
        cached = await self._view.current()
        if cached.active_policies is None:
            loaded = await load_active_policies(self._view.connection, self._view.tenant)
            cached.active_policies = tuple(loaded)
        return list(cached.active_policies)


class _SettingsReads:
    def __init__(self, view: SqlReadView) -> None:
        self._view = view

    async def get(self) -> StackingSettings:
        cached = await self._view.current()
        if cached.settings is None:
            cached.settings = await load_settings(self._view.connection, self._view.tenant)
        return cached.settings


def read_views(engine: AsyncEngine, cache: ConfigCache) -> ReadViewFactory:
    """Read views on `engine` (PostgreSQL) for any tenant, on the configuration `cache` the
    units of work fill and read too."""

    def build(tenant: str) -> SqlReadView:
        return SqlReadView(engine, tenant, cache)

    return build
