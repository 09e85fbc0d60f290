"""What every configuration-backed repository of one tenant holds: the unit of work's session
(opened on first use), its hot-path drivers and the tenant's cached configuration view."""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel.ext.asyncio.session import AsyncSession

from discount_service.adapters.config_cache import ConfigView
from discount_service.adapters.connection import Drivers


class TenantRepository:
    def __init__(
        self,
        session: Callable[[], AsyncSession],
        tenant: str,
        config: ConfigView,
        drivers: Drivers,
    ) -> None:
        self._session_of = session
        self._drivers = drivers
        self._tenant = tenant
        self._config = config

    @property
    def _session(self) -> AsyncSession:
        return self._session_of()
