"""The per-process configuration cache (coupon definitions, active policies, stacking
settings): a change written through one replica (app instance) is used by the very next
quote of another replica on the same database, however warm its cache; counters are live."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from billing_common.auth import ALL_SCOPES
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from discount_service.bootstrap import create_app

QUOTES = "/v1/discounts/quotes"
COUPONS = "/v1/discounts/coupons"
REQUEST: dict[str, Any] = {
    "customer": {"id": "c-1", "type": "premium"},
    "currency": "EUR",
    "amount": "200.00",
    "coupon_codes": ["SAVE"],
}


class Api:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    def headers(self, *scopes: str, tenant: str = "acme", **extra: str) -> dict[str, str]:
        token = self.app.state.ctx.tokens.mint(
            subject="test", tenant=tenant, scopes=scopes or ALL_SCOPES
        )
        return {"authorization": f"Bearer {token}", **extra}


Replica = Callable[[], AbstractAsyncContextManager[Api]]


@pytest.fixture
def replica(
    migrated_database_url: str,
    embedded_platform: EmbeddedPlatform,
    discount_settings: Callable[..., ServiceSettings],
) -> Replica:
    """A new app instance (its own process cache) on the one test database."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Api]:
        app = create_app(discount_settings(migrated_database_url), embedded_platform)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
                yield Api(app, client)

    return start


async def discount(api: Api, **overrides: Any) -> tuple[str, list[str]]:
    response = await api.client.post(QUOTES, json={**REQUEST, **overrides}, headers=api.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    return body["total_discount"], [item["reason"] for item in body["rejected"]]


async def test_admin_changes_through_one_replica_are_seen_by_another_at_once(
    replica: Replica,
) -> None:
    async with replica() as writer, replica() as reader:
        admin = writer.headers("discount:admin")
        assert await discount(reader) == ("0.00", ["unknown"])  # warms the reader's cache

        coupon = {"code": "SAVE", "name": "Save", "discount": {"type": "percent", "rate": "0.10"}}
        assert (await writer.client.post(COUPONS, json=coupon, headers=admin)).status_code == 201
        assert await discount(reader) == ("20.00", [])
        assert await discount(reader) == ("20.00", [])  # now from the reader's cache

        replaced = await writer.client.put(
            f"{COUPONS}/SAVE",
            json={
                "name": "Save",
                "discount": {"type": "fixed", "amount": "5.00", "currency": "EUR"},
            },
            headers=admin,
        )
        assert replaced.status_code == 200, replaced.text
        assert await discount(reader) == ("5.00", [])

        policy = {
            "name": "Premium 5%",
            "kind": "user_type",
            "customer_type": "premium",
            "discount": {"type": "percent", "rate": "0.05"},
        }
        url = "/v1/discounts/policies/premium"
        assert (await writer.client.put(url, json=policy, headers=admin)).status_code == 201
        assert await discount(reader) == ("14.75", [])  # 5 % of what the coupon left
        capped = await writer.client.put(
            "/v1/discounts/settings/stacking",
            json={"max_fraction": "1", "max_amounts": {"EUR": "12.00"}},
            headers=admin,
        )
        assert capped.status_code == 200, capped.text
        assert await discount(reader) == ("12.00", [])
        assert (await writer.client.delete(url, headers=admin)).status_code == 204
        assert await discount(reader) == ("5.00", [])

        assert (await writer.client.delete(f"{COUPONS}/SAVE", headers=admin)).status_code == 204
        assert await discount(reader) == ("0.00", ["unknown"])


async def test_a_redemption_through_one_replica_counts_in_another_at_once(
    replica: Replica,
) -> None:
    """Counters are not cached: the last use of a coupon is the last on every replica."""
    async with replica() as writer, replica() as reader:
        coupon = {
            "code": "SAVE",
            "name": "Save",
            "discount": {"type": "percent", "rate": "0.10"},
            "max_redemptions": 1,
        }
        admin = writer.headers("discount:admin")
        assert (await writer.client.post(COUPONS, json=coupon, headers=admin)).status_code == 201
        assert await discount(reader) == ("20.00", [])
        redeemed = await writer.client.post(
            "/v1/discounts/redemptions",
            json=REQUEST,
            headers=writer.headers(**{"Idempotency-Key": "k-1"}),
        )
        assert redeemed.status_code == 201, redeemed.text
        assert await discount(reader) == ("0.00", ["exhausted"])


async def test_tenants_do_not_share_cached_configuration(
    replica: Replica,
) -> None:
    async with replica() as api:
        coupon = {"code": "SAVE", "name": "Save", "discount": {"type": "percent", "rate": "0.10"}}
        created = await api.client.post(COUPONS, json=coupon, headers=api.headers("discount:admin"))
        assert created.status_code == 201
        assert await discount(api) == ("20.00", [])
        other = await api.client.post(QUOTES, json=REQUEST, headers=api.headers(tenant="other"))
        assert other.json()["total_discount"] == "0.00"
