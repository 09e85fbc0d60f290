"""The engine-decided VAT treatment through the HTTP API: refused claims, reverse charge,
intra-community supplies, exports, exemptions with their certificate, non-EU sales tax, the
breakdown, and the evidence kept in the history (SQLite, and PostgreSQL where stored)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from tax_service.adapters.orm import TaxCalculationRow
from tax_service.domain.model import Treatment, VatCategory
from tax_service.service_layer import calculations

from .conftest import rule
from .test_tax_api import CALCS, RULES, assert_problem, calc_body, rule_body

DE_SELLER = {"country": "DE", "vat_id": "DE136695976"}
FR_BUSINESS = {"id": "b2b", "tax_id": "FR40303265045", "country": "FR"}
US_BUSINESS = {"id": "us", "tax_id": "12-3456789", "country": "US", "kind": "business"}


async def seed(api: Any, tenant: str = "acme") -> None:
    """DE: services at 19 %, food (goods) at 7 %; US-CA: goods taxed, services not."""
    headers = api.headers("tax:admin", tenant=tenant)
    for body in (
        rule_body(),
        rule_body(category="food", rate="0.07", name="DE VAT food", supply="goods"),
        rule_body(
            jurisdiction={"country": "US", "region": "CA"},
            rate="0.0725",
            name="CA sales tax",
            supply="goods",
        ),
        rule_body(
            jurisdiction={"country": "US", "region": "CA"},
            category="services",
            rate="0",
            name="CA services not taxable",
        ),
    ):
        response = await api.client.post(RULES, json=body, headers=headers)
        assert response.status_code == 201, response.text


def lines(*categories: str) -> list[dict[str, Any]]:
    return [
        {"id": str(n), "unit_price": "100.00", "quantity": "2", "category": category}
        for n, category in enumerate(categories, start=1)
    ]


async def post(api: Any, **body: Any) -> Any:
    return await api.client.post(
        CALCS, json=calc_body(**body), headers=api.headers("tax:calculate", "tax:read")
    )


def vat(body: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [
        (ln["vat_category"], ln["tax"], ln["vat_exemption_reason_code"]) for ln in body["lines"]
    ]


def assert_breakdown_adds_up(body: dict[str, Any]) -> None:
    entries = body["breakdown"]
    assert sum(Decimal(e["taxable_amount"]) for e in entries) == Decimal(body["total_net"])
    assert sum(Decimal(e["tax_amount"]) for e in entries) == Decimal(body["total_tax"])


async def test_a_us_customer_with_tax_id_1_gets_no_reverse_charge(api: Any) -> None:
    """Issue 12's defect: the bare claim was a 201 with 0 % tax. Now it is refused, saying
    what is missing, and nothing is stored."""
    us_ca = rule_body(jurisdiction={"country": "US", "region": "CA"}, rate="0.0725")
    created = await api.client.post(RULES, json=us_ca, headers=api.headers("tax:admin"))
    assert created.status_code == 201, created.text
    response = await post(
        api,
        jurisdiction={"country": "US", "region": "CA"},
        currency="USD",
        customer={"id": "us", "tax_status": "reverse_charge", "tax_id": "1"},
    )
    problem = assert_problem(response, 422, "reverse-charge-not-confirmed")
    assert [item["field"] for item in problem["missing"]] == ["seller.country", "customer.country"]
    history = await api.client.get(CALCS, headers=api.headers("tax:read"))
    assert history.json()["items"] == []


async def test_intra_eu_reverse_charge_is_decided_stored_and_read_back(api_any_db: Any) -> None:
    api = api_any_db
    await seed(api)
    response = await post(api, seller=DE_SELLER, customer=FR_BUSINESS, lines=lines("standard"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["treatment"] == "intra_eu_reverse_charge"
    assert vat(body) == [("AE", "0.00", "VATEX-EU-AE")]
    assert body["lines"][0]["vat_exemption_reason"] == (
        "Reverse charge — Article 196 of Council Directive 2006/112/EC"
    )
    assert body["breakdown"] == [
        {
            "vat_category": "AE",
            "rate": "0",
            "taxable_amount": "200.00",
            "tax_amount": "0.00",
            "exemption_reason": "Reverse charge — Article 196 of Council Directive 2006/112/EC",
            "exemption_reason_code": "VATEX-EU-AE",
        }
    ]
    check = body["evidence"]["vat_id_check"]
    assert (check["vat_id"], check["valid"], check["source"], check["request_id"]) == (
        "FR40303265045",
        True,
        "sandbox",
        "SANDBOX-FR40303265045",
    )
    assert body["parties"] == {
        "seller": {"country": "DE", "region": None, "vat_id": "DE136695976", "given": True},
        "customer": {
            "country": "FR",
            "region": None,
            "kind": "business",
            "exemption_certificate": None,
        },
    }
    stored = await api.client.get(f"{CALCS}/{body['id']}", headers=api.headers("tax:read"))
    assert stored.json() == body


async def test_goods_to_an_eu_business_are_an_intra_community_supply(api: Any) -> None:
    await seed(api)
    response = await post(
        api, seller=DE_SELLER, customer=FR_BUSINESS, lines=lines("food", "standard")
    )
    body = response.json()
    assert vat(body) == [("K", "0.00", "VATEX-EU-IC"), ("AE", "0.00", "VATEX-EU-AE")]
    assert [e["vat_category"] for e in body["breakdown"]] == ["K", "AE"]
    assert body["treatment"] == "intra_eu_reverse_charge"  # the services part shifts liability
    assert [ln["treatment"] for ln in body["lines"]] == [
        "intra_eu_supply_of_goods",
        "intra_eu_reverse_charge",
    ]


async def test_exports_and_services_outside_the_eu(api: Any) -> None:
    await seed(api)
    business = (
        await post(api, seller=DE_SELLER, customer=US_BUSINESS, lines=lines("food", "standard"))
    ).json()
    assert vat(business) == [("G", "0.00", "VATEX-EU-G"), ("O", "0.00", "VATEX-EU-O")]
    assert business["evidence"] is None  # no EU VAT id was relied on
    consumer = {"id": "p", "country": "US"}
    response = await post(api, seller=DE_SELLER, customer=consumer, lines=lines("food", "standard"))
    body = response.json()
    assert vat(body) == [("G", "0.00", "VATEX-EU-G"), ("S", "38.00", None)]
    assert (body["treatment"], body["total_tax"]) == ("export", "38.00")
    assert_breakdown_adds_up(body)


async def test_b2c_within_the_eu_is_taxed_by_the_jurisdiction(api: Any) -> None:
    await seed(api)
    body = (await post(api, seller=DE_SELLER, customer={"country": "FR"})).json()
    assert (body["treatment"], vat(body)) == ("domestic", [("S", "38.00", None)])


async def test_invalid_and_unregistered_vat_ids_are_refused(api: Any) -> None:
    await seed(api)
    bad = await post(api, seller=DE_SELLER, customer={**FR_BUSINESS, "tax_id": "FR123"})
    problem = assert_problem(bad, 422, "invalid-vat-id")
    assert "invalid length" in problem["detail"] and problem["field"] == "customer.tax_id"
    seller = await post(api, seller={"country": "DE", "vat_id": "DE1"}, customer=FR_BUSINESS)
    assert assert_problem(seller, 422, "invalid-vat-id")["field"] == "seller.vat_id"
    # The sandbox's documented unregistered id passes stdnum, but "VIES" does not know it.
    unknown = await post(
        api,
        seller={"country": "FR"},
        customer={"tax_id": "DE123456788", "country": "DE"},
    )
    assert "does not know it" in assert_problem(unknown, 422, "invalid-vat-id")["detail"]


async def test_exemptions_need_their_certificate_and_keep_it(api_any_db: Any) -> None:
    api = api_any_db
    await seed(api)
    missing = await post(api, seller=DE_SELLER, customer={"id": "ngo", "tax_status": "exempt"})
    problem = assert_problem(missing, 422, "exemption-not-confirmed")
    assert problem["missing"][0]["field"] == "customer.exemption_certificate"
    response = await post(
        api,
        seller=DE_SELLER,
        customer={"id": "ngo", "tax_status": "exempt", "exemption_certificate": "EX-2026-17"},
    )
    body = response.json()
    assert (body["treatment"], vat(body)) == ("exempt", [("E", "0.00", None)])
    assert body["lines"][0]["vat_exemption_reason"] == (
        "Exempt customer — exemption certificate EX-2026-17"
    )
    history = await api.client.get(
        CALCS, params={"customer_id": "ngo"}, headers=api.headers("tax:read")
    )
    [kept] = history.json()["items"]
    assert kept["parties"]["customer"]["exemption_certificate"] == "EX-2026-17"


async def test_us_sales_tax_keeps_s_z_and_o(api: Any) -> None:
    await seed(api)
    us = {"jurisdiction": {"country": "US", "region": "CA"}, "currency": "USD"}
    body = (await post(api, **us, lines=lines("standard", "services"))).json()
    assert vat(body) == [("S", "14.50", None), ("Z", "0.00", None)]
    assert [(e["vat_category"], e["rate"]) for e in body["breakdown"]] == [
        ("S", "0.0725"),
        ("Z", "0"),
    ]
    abroad = (
        await post(
            api,
            **us,
            seller={"country": "US", "region": "CA"},
            customer={"country": "CA"},
            lines=lines("standard"),
        )
    ).json()
    assert (abroad["treatment"], vat(abroad)) == ("out_of_scope", [("O", "0.00", None)])
    assert abroad["lines"][0]["exemption"] == "out_of_scope"


async def test_rules_carry_their_supply_kind(api: Any) -> None:
    headers = api.headers("tax:admin")
    created = await api.client.post(RULES, json=rule_body(supply="goods"), headers=headers)
    assert created.json()["supply"] == "goods"
    default = await api.client.post(RULES, json=rule_body(category="services"), headers=headers)
    assert default.json()["supply"] == "services"
    wrong = await api.client.post(RULES, json=rule_body(supply="both"), headers=headers)
    assert_problem(wrong, 422, "validation")


async def test_calculations_stored_before_the_vat_decision_read_back(db: Any) -> None:
    """Rows of migration 0002's shape (no treatment, parties or evidence; lines without
    `vat`) read back with their categories derived from `exemption`."""
    from .test_tax_repository import NOW, calc_request, stamped

    async with db.uow() as uow:
        await uow.rules.add(stamped(rule(rule_id="std")))
        await uow.rules.add(stamped(rule(category="food", rate="0", rule_id="food")))
        await uow.commit()
    calc = await calculations.calculate("acme", calc_request(), db.deps(NOW))
    async with db.sessions() as session, session.begin():
        row = await session.get(TaxCalculationRow, calc.id)
        assert row is not None
        legacy_lines = json.loads(row.lines)
        for item in legacy_lines:
            del item["vat"]
        await (await session.connection()).execute(
            update(TaxCalculationRow)
            .where(col(TaxCalculationRow.id) == calc.id)
            .values(treatment=None, parties=None, evidence=None, lines=json.dumps(legacy_lines))
        )
    async with db.uow() as uow:
        stored = await uow.calculations.get(calc.id)
    assert stored is not None
    assert [r.vat.category for r in stored.lines] == [VatCategory.STANDARD, VatCategory.ZERO_RATED]
    assert (stored.treatment, stored.evidence, stored.request.seller) == (
        Treatment.DOMESTIC,
        None,
        None,
    )
