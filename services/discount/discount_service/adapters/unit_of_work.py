"""The discount service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, TenantUnitOfWork
from discount_service.adapters.config_cache import ConfigCache, ConfigView
from discount_service.adapters.coupons_repository import SqlCouponRepository
from discount_service.adapters.policies_repository import SqlPolicyRepository
from discount_service.adapters.redemptions_repository import SqlRedemptionRepository
from discount_service.adapters.settings_repository import SqlStackingSettingsRepository
from discount_service.service_layer.ports import (
    CouponRepository,
    PolicyRepository,
    RedemptionRepository,
    StackingSettingsRepository,
    UnitOfWorkFactory,
)


class DiscountUnitOfWork(TenantUnitOfWork):
    coupons: CouponRepository
    policies: PolicyRepository
    settings: StackingSettingsRepository
    redemptions: RedemptionRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
        config_cache: ConfigCache | None = None,
    ) -> None:
        super().__init__(sessions, relay, tenant)
        self._config_cache = config_cache  # this process's, shared by its units of work

    def _open(self) -> None:
        config = ConfigView(self.session, self.tenant, self._config_cache)
        self.coupons = SqlCouponRepository(self.session, self.tenant, config)
        self.policies = SqlPolicyRepository(self.session, self.tenant, config)
        self.settings = SqlStackingSettingsRepository(self.session, self.tenant, config)
        self.redemptions = SqlRedemptionRepository(self.session, self.tenant)


def uow_factory(
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    config_cache: ConfigCache | None = None,
) -> UnitOfWorkFactory:
    """Units of work on `sessions` for any tenant; with `relay`, woken after each commit.
    They share one configuration cache (`config_cache`, or a new one for this factory)."""
    cache = config_cache if config_cache is not None else ConfigCache()

    def build(tenant: str) -> DiscountUnitOfWork:
        return DiscountUnitOfWork(sessions, relay, tenant, cache)

    return build
