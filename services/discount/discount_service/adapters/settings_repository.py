"""The tenant-scoped SQL repository of the stacking settings (one row per tenant)."""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy import Table
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncConnection

from billing_common.db import PostgresDriver
from billing_common.money import Money, format_amount
from billing_common.outbox import utcnow
from discount_service.adapters.orm import StackingSettingsRow
from discount_service.adapters.tenant_repository import TenantRepository
from discount_service.domain.model import StackingSettings

# Read on every quote: selected with SQLAlchemy core, plain rows.
_SETTINGS: Table = StackingSettingsRow.__table__  # type: ignore[attr-defined]


async def load_settings(connection: AsyncConnection, tenant: str) -> StackingSettings:
    """The tenant's stacking settings read on `connection`, the defaults if none are stored."""
    row = (
        await connection.execute(
            core_select(_SETTINGS.c.max_fraction, _SETTINGS.c.max_amounts).where(
                _SETTINGS.c.tenant_id == tenant
            )
        )
    ).first()
    return _settings(None if row is None else (row.max_fraction, row.max_amounts))


_SETTINGS_SQL = (
    "SELECT max_fraction, max_amounts FROM discount_stacking_settings WHERE tenant_id = $1"
)


async def fetch_settings(driver: PostgresDriver, tenant: str) -> StackingSettings:
    """`load_settings` on the asyncpg connection (PostgreSQL)."""
    row = await driver.fetchrow(_SETTINGS_SQL, tenant)
    return _settings(None if row is None else (row["max_fraction"], row["max_amounts"]))


def _settings(stored: tuple[Decimal, str] | None) -> StackingSettings:
    if stored is None:
        return StackingSettings()
    max_fraction, max_amounts = stored
    caps = json.loads(max_amounts)
    return StackingSettings(
        max_fraction=max_fraction,
        max_amounts=tuple(Money(Decimal(v), c) for c, v in sorted(caps.items())),
    )


class SqlStackingSettingsRepository(TenantRepository):
    """The settings come from the process's cache while the tenant's configuration version
    says they are current (discount_service.adapters.config_cache)."""

    async def get(self) -> StackingSettings:
        cached = await self._config.current()
        if cached is not None and cached.settings is not None:
            return cached.settings
        driver = await self._drivers.reads()
        if driver is not None:
            settings = await fetch_settings(driver, self._tenant)
        else:
            settings = await load_settings(await self._session.connection(), self._tenant)
        if cached is not None:
            cached.settings = settings  # read after the version: never older than it
        return settings

    async def put(self, settings: StackingSettings) -> None:
        row = await self._session.get(StackingSettingsRow, self._tenant)
        caps = json.dumps(
            {cap.currency: format_amount(cap.amount) for cap in settings.max_amounts},
            sort_keys=True,
        )
        if row is None:
            row = StackingSettingsRow(
                tenant_id=self._tenant,
                max_fraction=settings.max_fraction,
                max_amounts=caps,
                updated_at=utcnow(),
            )
        else:
            row.max_fraction = settings.max_fraction
            row.max_amounts = caps
            row.updated_at = utcnow()
        self._session.add(row)
        await self._session.flush()
        await self._config.changed()

    async def exists(self) -> bool:
        return await self._session.get(StackingSettingsRow, self._tenant) is not None
