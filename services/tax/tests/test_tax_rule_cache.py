"""The per-process rules cache: a rule change written through one replica (app instance) or
straight to the database is used by the very next calculation of every other replica on the
same database, however warm its cache; and tenants never see each other's cached rules."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

from billing_common.runtime import EmbeddedPlatform
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.unit_of_work import SqlTaxUnitOfWork

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
