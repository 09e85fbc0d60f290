"""One priority convention across the platform: higher applies first, for the taxes of a line
as for discounts (docs/api-contracts.md)."""

from __future__ import annotations

from decimal import Decimal

from tests.conftest import Platform


async def test_higher_priority_applies_first_for_taxes_and_discounts(platform: Platform) -> None:
    h = platform.headers(tenant="prio")
    tax, discount = platform.clients["tax"], platform.clients["discount"]
    rule = {"jurisdiction": {"country": "DE"}, "category": "standard", "rate": "0.10"}
    for name, priority, compound in (("low compound", 1, True), ("high", 5, False)):
        created = await tax.post(
            "/v1/tax/rules",
            json={**rule, "name": name, "priority": priority, "compound": compound},
            headers=h,
        )
        assert created.status_code == 201, created.text
    calculation = await tax.post(
        "/v1/tax/calculations",
        json={
            "currency": "EUR",
            "jurisdiction": {"country": "DE"},
            "lines": [{"unit_price": "100.00", "quantity": "1", "category": "standard"}],
        },
        headers=h,
    )
    assert calculation.status_code == 201, calculation.text
    # "high" first (10.00 on 100.00), then the compound one on 110.00.
    assert [(t["name"], t["amount"]) for t in calculation.json()["lines"][0]["taxes"]] == [
        ("high", "10.00"),
        ("low compound", "11.00"),
    ]

    for code, priority, amount in (("LOW", 1, "5.00"), ("HIGH", 5, "10.00")):
        created = await discount.post(
            "/v1/discounts/coupons",
            json={
                "code": code,
                "name": code,
                "priority": priority,
                "discount": {"type": "fixed", "amount": amount, "currency": "EUR"},
            },
            headers=h,
        )
        assert created.status_code == 201, created.text
    quote = await discount.post(
        "/v1/discounts/quotes",
        json={
            "customer": {"id": "c-1"},
            "currency": "EUR",
            "amount": "100.00",
            "coupon_codes": ["LOW", "HIGH"],
        },
        headers=h,
    )
    assert quote.status_code == 200, quote.text
    assert [a["code"] for a in quote.json()["applied"]] == ["HIGH", "LOW"]
    assert Decimal(quote.json()["total_discount"]) == Decimal("15.00")
