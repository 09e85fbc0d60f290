"""The quotes' read view on the real PostgreSQL (discount_service.adapters.read_view): it
reads what a unit of work reads, sees every committed change at once, sends one statement
for a warm quote and leaves no transaction behind."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing_common.db import DatabaseUnavailable, create_engine
from billing_common.money import Money
from billing_common.testing import postgres_shutting_down
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
        raw = view.driver_connection
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


async def test_cold_quotes_on_a_one_connection_pool_all_complete(db, deps: Dependencies) -> None:
    """A quote whose configuration is not cached loads it on the connection the view holds:
    with one pooled connection and no overflow, concurrent cold quotes each finish (none
    waits on a second checkout while holding the only connection)."""
    engine = create_engine(
        db.engine.url.render_as_string(hide_password=False),
        pool_size=1,
        max_overflow=0,
        pool_timeout=5,
    )
    try:
        cold = Dependencies(uow=deps.uow, clock=deps.clock, reads=read_views(engine, ConfigCache()))
        expected = await quotes.quote("acme", REQUEST, Dependencies(uow=deps.uow, clock=deps.clock))
        results = await asyncio.wait_for(
            asyncio.gather(*(quotes.quote("acme", REQUEST, cold) for _ in range(8))), 20
        )
    finally:
        await engine.dispose()
    assert results == [expected] * 8


async def test_the_views_raw_loads_read_what_the_unit_of_work_reads(db, deps: Dependencies) -> None:
    """The configuration a cold view loads on asyncpg is the unit of work's (SQLAlchemy)
    read of it, instants included (the last representable one comes back as infinity)."""
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    await policies.put_policy(
        "acme",
        replace(SAMPLE_POLICIES[0], key="far-future", starts_at=NOW, ends_at=last),
        deps,
    )
    async with db.uow("acme") as uow:  # no cache: read with SQLAlchemy
        expected = (await uow.policies.active(), await uow.settings.get())
    async with read_views(db.engine, ConfigCache())("acme") as view:  # cold: loaded raw
        found = (await view.policies.active(), await view.settings.get())
    assert found == expected
    assert any(policy.ends_at == last for policy in found[0])
    assert found[1] == SAMPLE_STACKING


async def test_a_quote_while_postgresql_shuts_down_is_unavailable(db, deps: Dependencies) -> None:
    """57P03 on connect ("the database system is shutting down") reaches no `handle_error`
    hook for the view's raw pool checkout: it is DatabaseUnavailable (a 503), not a 500."""
    engine = create_engine(db.engine.url.render_as_string(hide_password=False), pool_size=1)
    try:
        with postgres_shutting_down(engine), pytest.raises(DatabaseUnavailable, match="shutting"):
            async with SqlReadView(engine, "acme", ConfigCache()):
                pass
    finally:
        await engine.dispose()
