"""This process's copy of each tenant's discount configuration (coupon definitions, active
policies, stacking settings), and each unit of work's view of it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from discount_service.adapters.connection import Drivers
from discount_service.adapters.orm import DiscountConfigVersionRow
from discount_service.domain.model import Coupon, DiscountPolicy, StackingSettings

VERSIONS: Table = DiscountConfigVersionRow.__table__  # type: ignore[attr-defined]
VERSION_SQL = "SELECT version FROM discount_config_versions WHERE tenant_id = $1"


@dataclass
class TenantConfig:
    """What a process holds of one tenant's configuration at one version; each part is
    filled when first read. Coupon counters are not part of it: they are read live."""

    version: int
    coupons: dict[str, Coupon] = field(default_factory=dict)  # by normalised code
    active_policies: tuple[DiscountPolicy, ...] | None = None
    settings: StackingSettings | None = None


class ConfigCache:
    """Each tenant's configuration held in this process, tagged with the tenant's version.

    Every change of it bumps the version in its own transaction, and a quote reads the
    version before using the copy, so a copy is used only while it is still current,
    whichever replica made the last change. Bounded: the least recently used tenants are
    dropped."""

    def __init__(self, max_tenants: int = 1024) -> None:
        self._max_tenants = max_tenants
        self._entries: OrderedDict[str, TenantConfig] = OrderedDict()

    def at(self, tenant: str, version: int) -> TenantConfig:
        """The copy at `version`, a fresh empty one if the held copy is of another."""
        entry = self._entries.get(tenant)
        if entry is None or entry.version != version:
            entry = self._entries[tenant] = TenantConfig(version)
        self._entries.move_to_end(tenant)
        while len(self._entries) > self._max_tenants:
            self._entries.popitem(last=False)
        return entry


class ConfigView:
    """One unit of work's view of the tenant's configuration: the version it read (once),
    and the cached copy at that version. After a change in this unit of work the cache is
    neither read nor filled: what it would hold is not committed, and may never be."""

    def __init__(
        self,
        session: Callable[[], AsyncSession],
        tenant: str,
        cache: ConfigCache | None,
        drivers: Drivers,
    ) -> None:
        self._session_of = session
        self._drivers = drivers
        self._tenant = tenant
        self._cache = cache
        self._entry: TenantConfig | None = None
        self._changed = False

    def observe(self, version: int) -> TenantConfig | None:
        """The copy at `version` (read by a statement of this unit of work), None if the
        cache is not to be used."""
        if self._cache is None or self._changed:
            return None
        if self._entry is None or self._entry.version != version:
            self._entry = self._cache.at(self._tenant, version)
        return self._entry

    async def current(self) -> TenantConfig | None:
        """The copy at the version read in this unit of work (reading it first if no
        statement did yet), None if the cache is not to be used."""
        if self._cache is None or self._changed:
            return None
        if self._entry is None:
            return self.observe(await self._read_version())
        return self._entry

    @property
    def _session(self) -> AsyncSession:
        return self._session_of()

    async def _read_version(self) -> int:
        driver = await self._drivers.reads()
        if driver is not None:
            row = await driver.fetchrow(VERSION_SQL, self._tenant)
        else:
            found = await (await self._session.connection()).execute(
                core_select(VERSIONS.c.version).where(VERSIONS.c.tenant_id == self._tenant)
            )
            row = found.first()
        return int(row[0]) if row is not None else 0

    async def changed(self) -> None:
        """Move the tenant's version on, in the transaction of the change (every write of
        the configuration calls this), so cached copies everywhere go out of date exactly
        when the change commits."""
        self._changed = True
        self._entry = None
        dialect = self._session.get_bind().dialect.name
        upsert: Any = postgresql_insert if dialect == "postgresql" else sqlite_insert
        await (await self._session.connection()).execute(
            upsert(VERSIONS)
            .values(tenant_id=self._tenant, version=1)
            .on_conflict_do_update(
                index_elements=[VERSIONS.c.tenant_id], set_={"version": VERSIONS.c.version + 1}
            )
        )
