"""Exactly-once redemption under real concurrency, on SQLite and on PostgreSQL: ~20 requests
race for the last redemption through the whole HTTP stack; one wins, the rest get 422
coupon-not-applicable."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import text

N = 20


def body(customer: str, code: str = "LAST") -> dict:
    return {
        "customer": {"id": customer, "type": None},
        "currency": "EUR",
        "amount": "100.00",
        "coupon_codes": [code],
    }


async def create(api, **coupon) -> None:
    response = await api.client.post(
        "/v1/discounts/coupons",
        json={"name": "Race", "discount": {"type": "percent", "rate": "0.10"}, **coupon},
        headers=api.headers(),
    )
    assert response.status_code == 201, response.text


async def race(api, bodies: list[dict]) -> Counter[int]:
    async def one(i: int, payload: dict):
        return await api.client.post(
            "/v1/discounts/redemptions",
            json=payload,
            headers=api.headers(**{"Idempotency-Key": f"race-{i}"}),
        )

    responses = await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    for response in responses:
        # One situation, one answer on every database: a lost race is the same 422 as a
        # redemption that came after the winner.
        assert response.status_code in (201, 422), response.text
        if response.status_code != 201:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == "/problems/coupon-not-applicable"
    return Counter(r.status_code for r in responses)


async def counts(api, code: str) -> tuple[int, list[int], int]:
    async with api.app.state.ctx.engine.connect() as conn:
        coupon_count = (
            await conn.execute(
                text("SELECT redeemed_count FROM discount_coupons WHERE code_key = :c"), {"c": code}
            )
        ).scalar_one()
        usage = (
            (await conn.execute(text("SELECT redeemed_count FROM discount_coupon_usage")))
            .scalars()
            .all()
        )
        redemptions = (
            await conn.execute(text("SELECT count(*) FROM discount_redemptions"))
        ).scalar_one()
    return coupon_count, list(usage), redemptions


async def test_last_redemption_goes_to_exactly_one_of_many(api) -> None:
    await create(api, code="LAST", max_redemptions=1)
    statuses = await race(api, [body(f"c-{i}") for i in range(N)])
    assert statuses[201] == 1
    assert statuses[422] == N - 1
    coupon_count, _, redemptions = await counts(api, "LAST")
    assert coupon_count == 1
    assert redemptions == 1


async def test_per_customer_limit_holds_under_concurrency(api) -> None:
    await create(api, code="ONCE", max_redemptions_per_customer=1)
    statuses = await race(api, [body("same-customer", "ONCE") for _ in range(N)])
    assert statuses[201] == 1
    assert statuses[422] == N - 1
    coupon_count, usage, redemptions = await counts(api, "ONCE")
    assert coupon_count == 1
    assert usage == [1]
    assert redemptions == 1


async def test_concurrent_retries_of_one_key_apply_once(api) -> None:
    await create(api, code="RETRY", max_redemptions=5)

    async def one():
        return await api.client.post(
            "/v1/discounts/redemptions",
            json=body("c-1", "RETRY"),
            headers=api.headers(**{"Idempotency-Key": "the-same-key"}),
        )

    responses = await asyncio.gather(*(one() for _ in range(10)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == Counter({201: 1, 200: 9})
    assert len({r.json()["id"] for r in responses}) == 1
    coupon_count, _, redemptions = await counts(api, "RETRY")
    assert (coupon_count, redemptions) == (1, 1)
