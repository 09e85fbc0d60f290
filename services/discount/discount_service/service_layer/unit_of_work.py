"""The discount service's unit of work: one transaction, tenant-scoped repositories, and the
outbox (events emitted inside it are committed atomically with the change)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, SqlUnitOfWork
from discount_service.adapters.repository import (
    CouponRepository,
    PolicyRepository,
    RedemptionRepository,
    SettingsRepository,
)


class DiscountUnitOfWork(SqlUnitOfWork):
    coupons: CouponRepository
    policies: PolicyRepository
    settings: SettingsRepository
    redemptions: RedemptionRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
    ) -> None:
        super().__init__(sessions, relay)
        self.tenant = tenant

    def _open(self) -> None:
        self.coupons = CouponRepository(self.session, self.tenant)
        self.policies = PolicyRepository(self.session, self.tenant)
        self.settings = SettingsRepository(self.session, self.tenant)
        self.redemptions = RedemptionRepository(self.session, self.tenant)
