"""The last use of a coupon taken by another redemption gives one answer on every database:
422 /problems/coupon-not-applicable with reason `exhausted` — whether the evaluation already
saw the other redemption (it committed first) or the atomic counter update found the use gone
(it committed between this redemption's evaluation and its update, which only PostgreSQL's
concurrency lets happen; here the competing commit is made at exactly that moment)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from billing_common.runtime import EmbeddedPlatform
from discount_service.adapters.unit_of_work import DiscountUnitOfWork
from discount_service.bootstrap import create_app
from discount_service.domain.model import Coupon, Redemption, RejectReason

from .conftest import Api


def body(customer: str) -> dict[str, Any]:
    return {
        "customer": {"id": customer, "type": None},
        "currency": "EUR",
        "amount": "100.00",
        "coupon_codes": ["LAST"],
    }


async def create_last(api: Any) -> None:
    response = await api.client.post(
        "/v1/discounts/coupons",
        json={
            "code": "LAST",
            "name": "Last one",
            "discount": {"type": "percent", "rate": "0.10"},
            "max_redemptions": 1,
        },
        headers=api.headers(),
    )
    assert response.status_code == 201, response.text


async def redeem(api: Any, customer: str, key: str) -> Any:
    return await api.client.post(
        "/v1/discounts/redemptions",
        json=body(customer),
        headers=api.headers(**{"Idempotency-Key": key}),
    )


def assert_exhausted(response: Any) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/coupon-not-applicable"
    assert (problem["code"], problem["reason"]) == ("LAST", "exhausted")


async def test_the_use_taken_before_the_evaluation(api: Any) -> None:
    await create_last(api)
    assert (await redeem(api, "c-1", "first")).status_code == 201
    assert_exhausted(await redeem(api, "c-2", "second"))


@pytest.fixture
async def postgres_api(
    postgres_url: str, embedded_platform: EmbeddedPlatform, discount_settings: Any
) -> AsyncIterator[Api]:
    app = create_app(discount_settings(postgres_url), embedded_platform)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://discount") as client:
            yield Api(app, client, embedded_platform)


async def test_the_use_taken_between_evaluation_and_counter_update(
    postgres_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL only: SQLite serialises writers, so no use can be taken in between there."""
    api = postgres_api
    await create_last(api)
    engine = api.app.state.ctx.engine
    original = DiscountUnitOfWork.add_redemption

    async def another_redemption_commits_first(
        self: DiscountUnitOfWork, redemption: Redemption, coupons: Sequence[Coupon]
    ) -> tuple[Coupon, RejectReason] | None:
        # A concurrent redemption takes the last use and commits, after this one evaluated
        # the coupon as still available.
        async with engine.begin() as conn:
            for coupon in coupons:
                await conn.execute(
                    text("UPDATE discount_coupons SET redeemed_count = 1 WHERE id = :id"),
                    {"id": coupon.id},
                )
        return await original(self, redemption, coupons)

    # The redemption's claim and its counter update (one statement on PostgreSQL) come next.
    monkeypatch.setattr(DiscountUnitOfWork, "add_redemption", another_redemption_commits_first)
    assert_exhausted(await redeem(api, "c-1", "raced"))
