"""The quotes' read view on the real PostgreSQL (discount_service.adapters.read_view): it
reads what a unit of work reads, sees every committed change at once, sends one statement
for a warm quote and leaves no transaction behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing_common.money import Money
from discount_service.adapters.config_cache import ConfigCache
from discount_service.adapters.read_view import SqlReadView, read_views
from discount_service.adapters.unit_of_work import uow_factory
from discount_service.domain.model import DiscountRequest, StackingSettings
from discount_service.samples import SAMPLE_COUPONS, SAMPLE_POLICIES, SAMPLE_STACKING
from discount_service.service_layer import policies, quotes
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.samples import ensure_samples

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
REQUEST = DiscountRequest(
    customer_id="c-1",
    amount=Money.of("220.00", "EUR"),
    customer_type="premium",
    coupon_codes=("welcome10", "LAUNCH3", "NOPE"),
)


@pytest.fixture
async def deps(db) -> Dependencies:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the read view is PostgreSQL's (SQLite quotes in a unit of work)")
    cache = ConfigCache()
    deps = Dependencies(
        uow=uow_factory(db.sessions, None, cache),
        clock=lambda: NOW,
        reads=read_views(db.engine, cache),
    )
    await ensure_samples(
        "acme", deps, coupons=SAMPLE_COUPONS, policies=SAMPLE_POLICIES, settings=SAMPLE_STACKING
    )
    return deps


async def test_a_quote_through_the_view_is_the_unit_of_works_quote(deps: Dependencies) -> None:
    in_uow = Dependencies(uow=deps.uow, clock=deps.clock)
    async with deps.uow("acme") as uow:
        launch = await uow.coupons.get("LAUNCH3")
        assert launch is not None
        assert await uow.coupons.try_count_customer_redemption(launch.id, "c-1", None)
        await uow.commit()
    for _ in range(2):  # cold, then warm cache
        viewed = await quotes.quote("acme", REQUEST, deps)
        assert viewed == await quotes.quote("acme", REQUEST, in_uow)
        assert [r.reason.value for r in viewed.rejected] == [
            "customer_limit_reached",
            "unknown",
        ]  # the customer's usage is read live


async def test_the_view_sees_a_committed_change_at_once(deps: Dependencies) -> None:
    before = await quotes.quote("acme", REQUEST, deps)  # warms the cache
    await policies.put_stacking_settings(
        "acme", StackingSettings(max_fraction=Decimal("0.01")), deps
    )
    after = await quotes.quote("acme", REQUEST, deps)
    assert before.total_discount > after.total_discount == Money.of("2.20", "EUR")


async def test_a_warm_quote_is_one_statement_and_no_transaction(db, deps: Dependencies) -> None:
    await quotes.quote("acme", REQUEST, deps)  # the cache is warm from here
    assert deps.reads is not None
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    async with deps.reads("acme") as view:
        assert isinstance(view, SqlReadView)
        raw = (await view.connection.get_raw_connection()).driver_connection
        raw.add_query_logger(log)
        try:
            found = await view.coupons.for_customer(REQUEST.coupon_codes, "c-1")
            await view.policies.active()
            await view.settings.get()
            assert not view.driver.in_transaction()
        finally:
            raw.remove_query_logger(log)
    await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
    assert sorted(found.coupons) == ["LAUNCH3", "WELCOME10"]
    assert len([sql for sql in sent if "discount_" in sql]) == 1
    assert not [sql for sql in sent if sql.strip().upper() in ("BEGIN", "ROLLBACK", "COMMIT")]
