"""The per-process rules cache: a rule change written through one replica (app instance) or
straight to the database is used by the very next calculation of every other replica on the
same database, however warm its cache; and tenants never see each other's cached rules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text

from billing_common.event_schemas import TAX_CALCULATED, TaxCalculated
from billing_common.events import new_event
from billing_common.money import Money
from billing_common.runtime import EmbeddedPlatform
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.unit_of_work import SqlTaxUnitOfWork, uow_factory
from tax_service.domain import calculator
from tax_service.domain.errors import UnknownJurisdiction
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    Jurisdiction,
    LineInput,
    PriceMode,
    TaxCalculation,
)
from tax_service.service_layer import calculations
from tax_service.service_layer.dependencies import Dependencies
from tax_service.service_layer.ports import StaleRules

RULES = "/v1/tax/rules"
CALCS = "/v1/tax/calculations"

CALCULATION: dict[str, Any] = {
    "currency": "EUR",
    "jurisdiction": {"country": "DE", "region": None},
    "customer": {"id": "c-1", "tax_status": "standard", "tax_id": None},
    "price_mode": "exclusive",
    "date": "2026-11-24",
    "lines": [{"id": "1", "unit_price": "100.00", "quantity": "1", "category": "standard"}],
}


def definition(rate: str) -> dict[str, Any]:
    return {
        "jurisdiction": {"country": "DE", "region": None},
        "category": "standard",
        "name": f"DE VAT {rate}",
        "rate": rate,
        "valid_from": "2021-01-01",
    }


async def total_tax(api: Any, tenant: str = "acme") -> tuple[int, str | None]:
    response = await api.client.post(
        CALCS, json=CALCULATION, headers=api.headers("tax:calculate", tenant=tenant)
    )
    return response.status_code, response.json().get("total_tax")


async def test_a_change_through_one_replica_is_seen_by_another_at_once(
    database_url: str,
    embedded_platform: EmbeddedPlatform,
    start_api: Callable[..., AbstractAsyncContextManager[Any]],
) -> None:
    async with (
        start_api(database_url, embedded_platform) as writer,
        start_api(database_url, embedded_platform) as reader,
    ):
        admin = writer.headers("tax:admin")
        # No rules yet: the reader caches the empty set (version 0).
        assert (await total_tax(reader))[0] == 422

        created = await writer.client.put(
            f"{RULES}/by-key/de-standard", json=definition("0.19"), headers=admin
        )
        assert created.status_code == 201, created.text
        assert await total_tax(reader) == (201, "19.00")
        assert await total_tax(reader) == (201, "19.00")  # now from the reader's cache

        changed = await writer.client.put(
            f"{RULES}/by-key/de-standard", json=definition("0.07"), headers=admin
        )
        assert changed.status_code == 200, changed.text
        assert await total_tax(reader) == (201, "7.00")

        rule_id = changed.json()["id"]
        replaced = await writer.client.put(
            f"{RULES}/{rule_id}", json={**definition("0.16"), "key": "de-standard"}, headers=admin
        )
        assert replaced.status_code == 200, replaced.text
        assert await total_tax(reader) == (201, "16.00")

        extra = await writer.client.post(
            RULES, json={**definition("0.01"), "name": "DE surcharge"}, headers=admin
        )
        assert extra.status_code == 201, extra.text
        assert await total_tax(reader) == (201, "17.00")

        deleted = await writer.client.delete(f"{RULES}/{extra.json()['id']}", headers=admin)
        assert deleted.status_code == 204
        assert await total_tax(reader) == (201, "16.00")

        gone = await writer.client.delete(f"{RULES}/by-key/de-standard", headers=admin)
        assert gone.status_code == 204
        assert (await total_tax(reader))[0] == 422


async def test_a_change_written_without_the_api_is_seen_too(
    database_url: str,
    embedded_platform: EmbeddedPlatform,
    start_api: Callable[..., AbstractAsyncContextManager[Any]],
    make_rule: Callable[..., Any],
) -> None:
    async with start_api(database_url, embedded_platform) as api:
        ctx = api.app.state.ctx
        assert (await total_tax(api))[0] == 422
        # A unit of work without a cache (as a script or another service version would
        # write) still bumps the version in the rule's transaction.
        async with SqlTaxUnitOfWork(ctx.sessions, None, "acme") as uow:
            now = api.app.state.deps.clock()
            await uow.rules.add(replace(make_rule(rate="0.20"), created_at=now, updated_at=now))
            await uow.commit()
        assert await total_tax(api) == (201, "20.00")


async def test_tenants_do_not_share_cached_rules(
    database_url: str,
    embedded_platform: EmbeddedPlatform,
    start_api: Callable[..., AbstractAsyncContextManager[Any]],
) -> None:
    async with start_api(database_url, embedded_platform) as api:
        created = await api.client.put(
            f"{RULES}/by-key/de-standard",
            json=definition("0.19"),
            headers=api.headers("tax:admin", tenant="acme"),
        )
        assert created.status_code == 201
        assert await total_tax(api, "acme") == (201, "19.00")
        # Both tenants' versions can be equal; the cache is keyed by tenant first.
        assert (await total_tax(api, "globex"))[0] == 422


def test_the_cache_keeps_only_the_current_version_and_is_bounded() -> None:
    cache = RuleCache(max_tenants=2)
    cache.put("a", 1, [])
    assert cache.get("a", 1) == ()
    assert cache.get("a", 2) is None
    cache.put("b", 1, [])
    cache.get("a", 1)  # a is now the most recently used
    cache.put("c", 1, [])
    assert cache.get("b", 1) is None
    assert cache.get("a", 1) == () and cache.get("c", 1) == ()


# -- a calculation on cached rules: the version checked by the INSERT itself ------------------

WHEN = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def _request() -> CalculationRequest:
    return CalculationRequest(
        currency="EUR",
        jurisdiction=Jurisdiction("DE"),
        customer=Customer("c-1"),
        price_mode=PriceMode.EXCLUSIVE,
        date=date(2026, 11, 24),
        lines=(LineInput("1", Money.of("100.00", "EUR"), Decimal(1), "standard"),),
    )


async def _put_rule(db: Any, make_rule: Callable[..., Any], rate: str) -> None:
    """The DE standard rule at `rate`, written as a script would: no cache, version bumped."""
    async with db.uow() as uow:
        await uow.rules.delete_by_key("de-standard")
        made = make_rule(rate=rate, key="de-standard", rule_id=f"de-{rate}")
        await uow.rules.add(replace(made, created_at=WHEN, updated_at=WHEN))
        await uow.commit()


async def _counts(db: Any) -> tuple[int, int]:
    async with db.uow() as uow:
        connection = await uow.session.connection()
        calculations_ = await connection.execute(text("SELECT count(*) FROM tax_calculations"))
        outbox = await connection.execute(text("SELECT count(*) FROM outbox"))
        return int(calculations_.scalar_one()), int(outbox.scalar_one())


def _statements(db: Any) -> list[str]:
    """Every statement sent on the engine's asyncpg connections from now on."""
    sent: list[str] = []
    logged: set[int] = set()

    @event.listens_for(db.engine.sync_engine, "checkout")
    def _log(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = dbapi_connection.driver_connection
        if id(driver) not in logged:
            logged.add(id(driver))
            driver.add_query_logger(lambda record: sent.append(record.query))

    return sent


async def test_a_calculation_on_cached_rules_is_one_statement_on_postgresql(
    db: Any, make_rule: Callable[..., Any]
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite reads the version in the transaction (no guarded INSERT)")
    await _put_rule(db, make_rule, "0.19")
    deps = Dependencies(uow=uow_factory(db.sessions, None, RuleCache()), clock=lambda: WHEN)
    sent = _statements(db)
    cold = await calculations.calculate("acme", _request(), deps)  # loads the cache
    assert cold.total_tax == Money.of("19.00", "EUR")
    await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon, not at once
    # The version, BEGIN (the rules load), the INSERT, COMMIT: the log sees them all.
    assert len(sent) >= 4, sent
    sent.clear()
    warm = await calculations.calculate("acme", _request(), deps)
    assert warm.total_tax == Money.of("19.00", "EUR")
    await asyncio.sleep(0.05)
    assert len(sent) == 1 and sent[0].startswith("WITH guard"), sent
    assert await _counts(db) == (2, 2)


async def test_a_calculation_on_cached_rules_opens_no_session_on_postgresql(
    db: Any, make_rule: Callable[..., Any]
) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writes go through the session")
    await _put_rule(db, make_rule, "0.19")
    deps = Dependencies(uow=uow_factory(db.sessions, None, RuleCache()), clock=lambda: WHEN)
    await calculations.calculate("acme", _request(), deps)  # loads the cache
    opened: list[object] = []
    event.listen(db.engine.sync_engine, "engine_connect", opened.append)
    warm = await calculations.calculate("acme", _request(), deps)
    assert warm.total_tax == Money.of("19.00", "EUR")
    assert opened == []  # a pooled asyncpg connection only: no session, no engine connection
    assert await _counts(db) == (2, 2)


async def test_a_stale_cached_copy_writes_nothing_and_is_calculated_again(
    db: Any, make_rule: Callable[..., Any]
) -> None:
    await _put_rule(db, make_rule, "0.19")
    cache = RuleCache()
    deps = Dependencies(uow=uow_factory(db.sessions, None, cache), clock=lambda: WHEN)
    assert (await calculations.calculate("acme", _request(), deps)).total_tax.amount == 19
    await _put_rule(db, make_rule, "0.07")  # the cached copy is now out of date
    postgres = db.engine.dialect.name == "postgresql"

    async with deps.uow("acme") as uow:
        rules = await uow.rules.for_jurisdiction(
            Jurisdiction("DE"), date(2026, 11, 24), confirmed=False
        )
        # PostgreSQL answers from the copy and lets the INSERT check it; SQLite reads.
        assert [rule.rate for rule in rules] == [Decimal("0.19" if postgres else "0.07")]
        if postgres:
            calculation = TaxCalculation.of(
                calculation_id=str(uuid.uuid4()),
                request=_request(),
                lines=calculator.calculate(_request(), rules, None),
                created_at=WHEN,
            )
            await uow.calculations.add(calculation)
            uow.emit(
                new_event(
                    source="/billing/tax",
                    event_type=TAX_CALCULATED,
                    data=TaxCalculated(
                        calculation_id=calculation.id,
                        currency="EUR",
                        price_mode="exclusive",
                        total_net=calculation.total_net.amount,
                        total_tax=calculation.total_tax.amount,
                        total_gross=calculation.total_gross.amount,
                        line_count=1,
                        customer_id="c-1",
                        reference=None,
                    ),
                    subject=calculation.id,
                    tenant="acme",
                ),
                aggregate=f"calculation:{calculation.id}",
            )
            with pytest.raises(StaleRules):
                await uow.commit()
    assert await _counts(db) == (1, 1)  # neither the calculation nor its event
    if postgres:
        assert cache.latest("acme") is None  # the stale copy is gone

    again = await calculations.calculate("acme", _request(), deps)
    assert again.total_tax == Money.of("7.00", "EUR")
    assert await _counts(db) == (2, 2)


async def test_a_rule_the_stale_copy_lacks_is_found_before_a_422(
    db: Any, make_rule: Callable[..., Any]
) -> None:
    cache = RuleCache()
    deps = Dependencies(uow=uow_factory(db.sessions, None, cache), clock=lambda: WHEN)
    with pytest.raises(UnknownJurisdiction):  # no rules: the empty set is cached
        await calculations.calculate("acme", _request(), deps)
    await _put_rule(db, make_rule, "0.19")
    assert (await calculations.calculate("acme", _request(), deps)).total_tax.amount == 19
    assert await _counts(db) == (1, 1)
