"""A redemption is one transaction on SQLite and on PostgreSQL, where its counter updates go
straight to asyncpg: a failure after the counters moved leaves nothing behind (no count, no
customer usage, no redemption holding the key), and the same key redeems afterwards."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import text

from billing_common.money import Money
from discount_service.adapters.config_cache import ConfigCache
from discount_service.adapters.unit_of_work import DiscountUnitOfWork, uow_factory
from discount_service.domain.model import Coupon, DiscountRequest, PercentOff
from discount_service.service_layer import coupons, redemptions
from discount_service.service_layer.dependencies import Dependencies

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
REQUEST = DiscountRequest(
    customer_id="c-1", amount=Money.of("200.00", "EUR"), coupon_codes=("ONCE", "TWICE")
)


class AfterTheCounters(Exception):
    """The failure a unit of work meets once the counters moved (the database going away at
    commit, say)."""


class FailingCommit(DiscountUnitOfWork):
    async def commit(self) -> None:
        raise AfterTheCounters


def coupon(code: str, **limits: int) -> Coupon:
    return Coupon(
        id=f"id-{code}",
        code=code,
        name=code,
        benefit=PercentOff(Decimal("0.05")),
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
        **limits,  # type: ignore[arg-type]
    )


async def state(db) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    async with db.engine.connect() as conn:
        counts = (
            await conn.execute(
                text("SELECT code, redeemed_count FROM discount_coupons ORDER BY code")
            )
        ).all()
        usage = (
            await conn.execute(
                text("SELECT coupon_id, redeemed_count FROM discount_coupon_usage ORDER BY 1")
            )
        ).all()
        stored = (await conn.execute(text("SELECT count(*) FROM discount_redemptions"))).scalar()
    return [tuple(r) for r in counts], [tuple(r) for r in usage], int(stored or 0)


@pytest.fixture
def deps(db) -> Dependencies:
    return Dependencies(uow=uow_factory(db.sessions, None, ConfigCache()), clock=lambda: NOW)


async def test_a_failure_after_the_counters_moved_rolls_them_back(db, deps: Dependencies) -> None:
    await coupons.create_coupon("acme", coupon("ONCE", max_redemptions=1), deps)
    await coupons.create_coupon("acme", coupon("TWICE", max_redemptions_per_customer=2), deps)
    before = await state(db)
    assert before == ([("ONCE", 0), ("TWICE", 0)], [], 0)
    cache = ConfigCache()
    failing = Dependencies(
        uow=lambda tenant: FailingCommit(db.sessions, None, tenant, cache), clock=lambda: NOW
    )
    with pytest.raises(AfterTheCounters):
        await redemptions.redeem("acme", REQUEST, "key-1", failing)
    assert await state(db) == before  # nothing half-written
    # The key was not taken and the last use of ONCE was not spent: the redemption goes
    # through once the failure is gone, counting each use exactly once.
    outcome = await redemptions.redeem("acme", REQUEST, "key-1", deps)
    assert not outcome.replayed
    assert sorted(outcome.redemption.result.applied_coupon_codes()) == ["ONCE", "TWICE"]
    assert await state(db) == (
        [("ONCE", 1), ("TWICE", 1)],
        [("id-ONCE", 1), ("id-TWICE", 1)],
        1,
    )
