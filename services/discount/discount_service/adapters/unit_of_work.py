"""The discount service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, TenantUnitOfWork
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

    def _open(self) -> None:
        self.coupons = SqlCouponRepository(self.session, self.tenant)
        self.policies = SqlPolicyRepository(self.session, self.tenant)
        self.settings = SqlStackingSettingsRepository(self.session, self.tenant)
        self.redemptions = SqlRedemptionRepository(self.session, self.tenant)


def uow_factory(
    sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
) -> UnitOfWorkFactory:
    return DiscountUnitOfWork.per_tenant(sessions, relay)
