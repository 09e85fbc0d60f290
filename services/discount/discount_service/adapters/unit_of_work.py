"""The discount service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxMessage, OutboxRelay, TenantUnitOfWork
from discount_service.adapters.config_cache import ConfigCache, ConfigView
from discount_service.adapters.connection import HotConnection
from discount_service.adapters.coupon_use_sql import use_refused
from discount_service.adapters.coupons_repository import SqlCouponRepository
from discount_service.adapters.policies_repository import SqlPolicyRepository
from discount_service.adapters.redemptions_repository import SqlRedemptionRepository
from discount_service.adapters.settings_repository import SqlStackingSettingsRepository
from discount_service.domain.model import Coupon, Redemption, RejectReason
from discount_service.service_layer.ports import (
    CouponRepository,
    PolicyRepository,
    RedemptionRepository,
    StackingSettingsRepository,
    UnitOfWorkFactory,
)

_OUTBOX_TABLE = OutboxMessage.__tablename__


class DiscountUnitOfWork(TenantUnitOfWork):
    """On PostgreSQL the hot paths (redeem, release, the configuration reads) send their
    statements on one raw pooled asyncpg connection (discount_service.adapters.connection)
    and never open the session; its transaction, begun by the first write, gets the
    outbox rows as one plain INSERT at commit. Admin changes go through the session (the
    ORM), as everything does on SQLite."""

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
        self._hot = HotConnection(self._engine, self._open_session, self._take_outbox)

    def _open_session(self) -> AsyncSession | None:
        return self._session

    def _take_outbox(self) -> list[tuple[str, Mapping[str, Any]]]:
        outbox, self._outbox = self._outbox, []
        return [(_OUTBOX_TABLE, row) for row in outbox]

    def _session_of(self) -> AsyncSession:
        return self.session

    def _open(self) -> None:
        # The repositories get the session on demand: a unit of work whose statements all
        # go to the hot connection never builds one.
        session, hot = self._session_of, self._hot
        config = ConfigView(session, self.tenant, self._config_cache, hot)
        self.coupons = SqlCouponRepository(session, self.tenant, config, hot)
        self.policies = SqlPolicyRepository(session, self.tenant, config, hot)
        self.settings = SqlStackingSettingsRepository(session, self.tenant, config, hot)
        self.redemptions = self._redemptions = SqlRedemptionRepository(session, self.tenant, hot)

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._hot.let_go()  # the session takes a connection of its own
        return super().session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._hot.close(exc)
        finally:
            await super().__aexit__(exc_type, exc, tb)

    async def add_redemption(
        self, redemption: Redemption, coupons: Sequence[Coupon]
    ) -> tuple[Coupon, RejectReason] | None:
        if len(coupons) == 1:  # most redemptions: one statement on PostgreSQL
            [coupon] = coupons
            counted = await self._redemptions.add_counting(redemption, coupon)
            if counted is not None:
                return use_refused(coupon, *counted)
        await self.redemptions.add(redemption)
        return await self.coupons.try_count_uses(coupons, redemption.customer_id)

    async def commit(self) -> None:
        if not self._hot.held:
            await super().commit()
            return
        await self._hot.commit()
        if self._emitted and self._relay is not None:
            self._relay.notify()
        self._emitted = False


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
