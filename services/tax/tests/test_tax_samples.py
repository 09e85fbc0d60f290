"""The documented sample rule set: loaded once for tenant "demo" in the embedded runtime, and
giving the results services/tax/README.md promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from billing_common.runtime import EmbeddedPlatform
from tax_service.samples import SAMPLE_RULES, SAMPLE_TENANT, parse_sample_rules

CALCS = "/v1/tax/calculations"
RULES = "/v1/tax/rules"


def test_sample_file_is_valid_and_covers_the_documented_jurisdictions() -> None:
    jurisdictions = {str(rule.jurisdiction) for rule in SAMPLE_RULES}
    assert jurisdictions == {"DE", "FR", "GB", "US-CA", "CA", "CA-QC"}
    assert len({rule.id for rule in SAMPLE_RULES}) == len(SAMPLE_RULES)
    assert any(rule.compound for rule in SAMPLE_RULES)
    assert all(rule.key and rule.key.startswith("sample-") for rule in SAMPLE_RULES)
    today_qst = [r for r in SAMPLE_RULES if r.key == "sample-ca-qc-qst-standard"]
    assert [r.compound for r in today_qst] == [False]


def test_sample_parser_refuses_mistakes() -> None:
    with pytest.raises(ValueError, match="unknown fields"):
        parse_sample_rules(
            'rules = [{ key = "k", jurisdiction = "DE", category = "c", rate = "0.1",'
            ' valid_from = 2020-01-01, name = "n", colour = "red" }]'
        )
    with pytest.raises(ValueError, match="rate must be a string"):
        parse_sample_rules(
            'rules = [{ key = "k", jurisdiction = "DE", category = "c", rate = 0.1,'
            ' valid_from = 2020-01-01, name = "n" }]'
        )


def _calc(country: str, region: str | None, currency: str, *lines: Any, **extra: Any) -> Any:
    return {
        "currency": currency,
        "jurisdiction": {"country": country, "region": region},
        "date": "2026-11-24",
        "lines": [
            {"id": str(n), "unit_price": price, "quantity": quantity, "category": category}
            for n, (price, quantity, category) in enumerate(lines, start=1)
        ],
        **extra,
    }


@pytest.fixture
async def demo(tmp_path: Path, embedded_platform: EmbeddedPlatform, start_api: Any) -> Any:
    async with start_api(
        f"sqlite+aiosqlite:///{tmp_path / 'tax.db'}", embedded_platform, load_sample_data=True
    ) as api:
        yield api


async def test_samples_give_the_documented_results(demo: Any) -> None:
    headers = demo.headers(tenant=SAMPLE_TENANT)

    async def post(body: Any) -> Any:
        response = await demo.client.post(CALCS, json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    de = await post(_calc("DE", None, "EUR", ("100.00", "2", "standard"), ("10.00", "1", "food")))
    assert [(ln["tax"], ln["taxes"][0]["name"]) for ln in de["lines"]] == [
        ("38.00", "DE VAT standard"),
        ("0.70", "DE VAT reduced (food)"),
    ]

    qc = await post(_calc("CA", "QC", "CAD", ("100.00", "1", "standard")))
    assert [(t["name"], t["amount"], t["compound"]) for t in qc["lines"][0]["taxes"]] == [
        ("CA GST", "5.00", False),
        ("QC QST", "9.98", False),
    ]
    assert qc["total_gross"] == "114.98"

    qc_2012 = await post(_calc("CA", "QC", "CAD", ("200.00", "1", "standard"), date="2012-06-01"))
    # Historical compound QST: 9.5 % of (200.00 + 10.00 GST) = 19.95.
    assert [(t["amount"], t["compound"]) for t in qc_2012["lines"][0]["taxes"]] == [
        ("10.00", False),
        ("19.95", True),
    ]

    ca = await post(
        _calc("US", "CA", "USD", ("100.00", "1", "standard"), ("50.00", "1", "services"))
    )
    assert [(ln["tax"], ln["exemption"]) for ln in ca["lines"]] == [
        ("7.25", None),
        ("0.00", "zero_rated"),
    ]
    assert ca["lines"][1]["taxes"][0]["name"] == "California sales tax: services not taxable"

    fr = await post(_calc("FR", None, "EUR", ("100.00", "1", "food"), ("100.00", "1", "export")))
    assert [(ln["tax"], ln["exemption"]) for ln in fr["lines"]] == [
        ("5.50", None),
        ("0.00", "zero_rated"),
    ]

    gb = await post(
        _calc(
            "GB",
            None,
            "GBP",
            ("120.00", "1", "standard"),
            ("9.99", "1", "books"),
            price_mode="inclusive",
        )
    )
    assert [(ln["net"], ln["tax"], ln["exemption"]) for ln in gb["lines"]] == [
        ("100.00", "20.00", None),
        ("9.99", "0.00", "zero_rated"),
    ]

    for body, problem in [
        (_calc("US", "CA", "USD", ("1.00", "1", "reduced")), "/problems/unknown-category"),
        (_calc("US", "NY", "USD", ("1.00", "1", "standard")), "/problems/unknown-jurisdiction"),
        (_calc("US", None, "USD", ("1.00", "1", "standard")), "/problems/unknown-jurisdiction"),
        (
            _calc("DE", None, "EUR", ("1.00", "1", "standard"), date="2020-12-31"),
            "/problems/unknown-jurisdiction",
        ),
    ]:
        response = await demo.client.post(CALCS, json=body, headers=headers)
        assert (response.status_code, response.json()["type"]) == (422, problem)


async def test_samples_belong_to_the_demo_tenant_only(demo: Any) -> None:
    listed = await demo.client.get(
        RULES, params={"limit": 200}, headers=demo.headers(tenant="demo")
    )
    assert listed.json()["total"] == len(SAMPLE_RULES)
    other = await demo.client.get(RULES, headers=demo.headers(tenant="acme"))
    assert other.json()["total"] == 0


async def test_samples_load_once_and_deletions_stick(
    tmp_path: Path, embedded_platform: EmbeddedPlatform, start_api: Any
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tax.db'}"
    key_path = f"{RULES}/by-key/sample-de-vat-standard"
    async with start_api(url, embedded_platform, load_sample_data=True) as api:
        assert (
            await api.client.delete(key_path, headers=api.headers(tenant="demo"))
        ).status_code == 204
    async with start_api(url, embedded_platform, load_sample_data=True) as api:
        headers = api.headers(tenant="demo")
        assert (await api.client.get(key_path, headers=headers)).status_code == 404
        listed = await api.client.get(RULES, params={"limit": 200}, headers=headers)
        assert listed.json()["total"] == len(SAMPLE_RULES) - 1


async def test_samples_are_not_loaded_unless_asked(
    tmp_path: Path, embedded_platform: EmbeddedPlatform, start_api: Any
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tax.db'}"
    async with start_api(url, embedded_platform, load_sample_data=False) as api:
        listed = await api.client.get(RULES, headers=api.headers(tenant="demo"))
        assert listed.json()["total"] == 0
    # The default (None) loads them only in the embedded runtime.
    async with start_api(url, embedded_platform, load_sample_data=None) as api:
        listed = await api.client.get(RULES, headers=api.headers(tenant="demo"))
        assert listed.json()["total"] == len(SAMPLE_RULES)
