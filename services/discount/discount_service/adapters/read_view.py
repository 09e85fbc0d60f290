"""The read view of the quotes on PostgreSQL: a pooled connection's asyncpg connection, no
Session, no SQLAlchemy connection and no transaction. A warm quote is one statement (the
configuration version, the coupons and the customer's usage,
discount_service.adapters.coupons_repository) and nothing to roll back; a cold one loads
what the cache misses on that same connection. The cached configuration is the units of
work's (one ConfigCache)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection

from billing_common.db import PostgresDriver, raw_checkout
from discount_service.adapters.config_cache import VERSION_SQL, ConfigCache, TenantConfig
from discount_service.adapters.coupons_repository import (
    CUSTOMER_COUPONS_SQL,
    config_version,
    coupon_keys,
    customer_coupons,
)
from discount_service.adapters.policies_repository import fetch_active_policies
from discount_service.adapters.settings_repository import fetch_settings
from discount_service.domain.model import DiscountPolicy, StackingSettings
from discount_service.service_layer.ports import CustomerCoupons, ReadViewFactory


class SqlReadView:
    """One tenant's reads, each in autocommit (its own snapshot). The configuration comes
    from the cache at the version the view read first, as in a unit of work
    (discount_service.adapters.config_cache.ConfigView): what is loaded on a miss is read
    after that version, so it is never older than it.

    It holds one pooled connection, checked out raw as billing_common.db.pooled_driver does
    (about half the CPU of an engine connection's checkout and close; a server shutting down
    is DatabaseUnavailable), and sends everything on it, misses included: a quote never waits
    for a second connection while holding one."""

    def __init__(self, engine: AsyncEngine, tenant: str, cache: ConfigCache) -> None:
        self.tenant = tenant
        self._engine = engine
        self._cache = cache
        self._entry: TenantConfig | None = None
        self._pooled: PoolProxiedConnection | None = None
        self._driver: PostgresDriver | None = None
        self.coupons = _CouponReads(self)
        self.policies = _PolicyReads(self)
        self.settings = _SettingsReads(self)

    async def __aenter__(self) -> Self:
        pooled = self._pooled = await raw_checkout(self._engine)
        self._driver = PostgresDriver(pooled, pooled.driver_connection)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pooled, self._pooled, self._driver = self._pooled, None, None
        if pooled is None:
            return
        if exc is not None and not isinstance(exc, Exception):
            # Cancelled mid-statement: the connection's state is unknown, do not reuse it.
            pooled.invalidate()
        # Back to the pool: nothing was begun on it, so its reset-on-return sends nothing.
        pooled.close()

    @property
    def driver(self) -> PostgresDriver:
        if self._driver is None:
            raise RuntimeError("a read view is used inside `async with` only")
        return self._driver

    @property
    def driver_connection(self) -> Any:
        """The asyncpg connection everything is sent on (to watch what is sent)."""
        if self._pooled is None:
            raise RuntimeError("a read view is used inside `async with` only")
        return self._pooled.driver_connection

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
            loaded = await fetch_active_policies(self._view.driver, self._view.tenant)
            cached.active_policies = tuple(loaded)
        return list(cached.active_policies)


class _SettingsReads:
    def __init__(self, view: SqlReadView) -> None:
        self._view = view

    async def get(self) -> StackingSettings:
        cached = await self._view.current()
        if cached.settings is None:
            cached.settings = await fetch_settings(self._view.driver, self._view.tenant)
        return cached.settings


def read_views(engine: AsyncEngine, cache: ConfigCache) -> ReadViewFactory:
    """Read views on `engine` (PostgreSQL) for any tenant, on the configuration `cache` the
    units of work fill and read too."""

    def build(tenant: str) -> SqlReadView:
        return SqlReadView(engine, tenant, cache)

    return build
