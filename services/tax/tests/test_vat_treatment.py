"""Unit tests of the VAT decision (tax_service.domain.vat_treatment): the decision table row
by row, what a refused claim says is missing, the offline VAT id check, and hypothesis
properties over the whole table and the breakdown. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_common.money import Money
from tax_service.domain import vat_treatment
from tax_service.domain.calculator import calculate
from tax_service.domain.errors import (
    ExemptionNotConfirmed,
    InvalidVatId,
    ReverseChargeNotConfirmed,
)
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    CustomerKind,
    Jurisdiction,
    LineInput,
    PriceMode,
    Seller,
    Supply,
    TaxCalculation,
    TaxRule,
    TaxStatus,
    Treatment,
    VatCategory,
    VatIdCheck,
)

DAY = date(2026, 11, 24)
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
# Ids that pass python-stdnum's format and checksum (public example numbers).
VALID_IDS = {
    "DE": "DE136695976",
    "FR": "FR40303265045",
    "GR": "EL094259216",
    "AT": "ATU13585627",
}
NON_EU = ["US", "GB", "CH", "CA"]


def line(category: str = "standard", price: str = "100.00", line_id: str = "1") -> LineInput:
    return LineInput(
        id=line_id, unit_price=Money.of(price, "EUR"), quantity=Decimal(1), category=category
    )


def req(
    *,
    status: TaxStatus = TaxStatus.STANDARD,
    seller: str | None = "DE",
    seller_vat_id: str | None = None,
    customer: str | None = None,
    tax_id: str | None = None,
    kind: CustomerKind | None = None,
    jurisdiction: str = "DE",
    certificate: str | None = None,
    lines: tuple[LineInput, ...] = (line(),),
) -> CalculationRequest:
    return CalculationRequest(
        currency="EUR",
        jurisdiction=Jurisdiction(jurisdiction),
        customer=Customer(
            "c",
            status,
            tax_id,
            location=Jurisdiction(customer) if customer else None,
            kind=kind,
            exemption_certificate=certificate,
        ),
        price_mode=PriceMode.EXCLUSIVE,
        date=DAY,
        lines=lines,
        seller=Seller(Jurisdiction(seller), seller_vat_id) if seller else None,
    )


def relief(request: CalculationRequest, supply: Supply = Supply.SERVICES) -> Any:
    return vat_treatment.decide(request).for_supply(supply)


# --- the table, row by row -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("supply", "category", "code", "treatment"),
    [
        (Supply.SERVICES, VatCategory.REVERSE_CHARGE, "VATEX-EU-AE", "intra_eu_reverse_charge"),
        (Supply.GOODS, VatCategory.INTRA_COMMUNITY, "VATEX-EU-IC", "intra_eu_supply_of_goods"),
    ],
)
@pytest.mark.parametrize("status", [TaxStatus.STANDARD, TaxStatus.REVERSE_CHARGE])
def test_intra_eu_b2b_is_reverse_charge_or_intra_community_supply(
    supply: Supply, category: VatCategory, code: str, treatment: str, status: TaxStatus
) -> None:
    found = relief(req(status=status, customer="FR", tax_id=VALID_IDS["FR"]), supply)
    assert (found.category, found.reason_code, found.treatment.value) == (category, code, treatment)
    assert "Council Directive 2006/112/EC" in found.reason


def test_reverse_charge_reason_names_article_196() -> None:
    found = relief(req(customer="FR", tax_id=VALID_IDS["FR"]))
    assert found.reason == "Reverse charge — Article 196 of Council Directive 2006/112/EC"


@pytest.mark.parametrize(
    ("kind", "supply", "expected"),
    [
        (CustomerKind.BUSINESS, Supply.GOODS, (VatCategory.EXPORT, "VATEX-EU-G")),
        (CustomerKind.CONSUMER, Supply.GOODS, (VatCategory.EXPORT, "VATEX-EU-G")),
        (CustomerKind.BUSINESS, Supply.SERVICES, (VatCategory.OUT_OF_SCOPE, "VATEX-EU-O")),
        (CustomerKind.CONSUMER, Supply.SERVICES, None),  # taxed where the seller is
    ],
)
def test_eu_seller_to_a_customer_outside_the_eu(
    kind: CustomerKind, supply: Supply, expected: tuple[VatCategory, str] | None
) -> None:
    found = relief(req(customer="US", kind=kind), supply)
    assert (found.category, found.reason_code) == expected if expected else found is None


def test_b2c_within_the_eu_and_business_without_vat_id_are_taxed() -> None:
    assert relief(req(customer="FR", kind=CustomerKind.CONSUMER)) is None
    assert relief(req(customer="FR", kind=CustomerKind.BUSINESS)) is None


def test_non_eu_seller_with_a_customer_abroad_is_out_of_scope() -> None:
    found = relief(req(seller="US", jurisdiction="US", customer="CA"), Supply.GOODS)
    assert (found.category, found.reason_code) == (VatCategory.OUT_OF_SCOPE, None)
    assert found.reason == "Outside the scope of US tax: the customer is outside US"
    # ...but a customer in the jurisdiction is taxed there (e.g. OSS, a US remote seller).
    assert relief(req(seller="US", jurisdiction="FR", customer="FR")) is None


def test_requests_without_parties_stay_domestic() -> None:
    assert relief(req(seller=None, tax_id="1")) is None
    assert relief(req(seller=None, jurisdiction="US", tax_id="anything")) is None


# --- refused claims: what is missing --------------------------------------------------------


def test_a_us_customer_with_tax_id_1_gets_no_reverse_charge() -> None:
    """The defect of issue 12: a bare claim was enough for 0 %."""
    with pytest.raises(ReverseChargeNotConfirmed) as refused:
        vat_treatment.decide(
            req(status=TaxStatus.REVERSE_CHARGE, seller=None, tax_id="1", jurisdiction="US")
        )
    fields = [item["field"] for item in refused.value.problem_extensions["missing"]]
    assert fields == ["seller.country", "customer.country"]


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"customer": "DE", "tax_id": VALID_IDS["DE"]}, ["customer.country"]),
        (
            {"customer": "FR", "tax_id": VALID_IDS["FR"], "kind": CustomerKind.CONSUMER},
            ["customer.kind"],
        ),
        (
            {"seller": "US", "jurisdiction": "US", "customer": "FR", "tax_id": VALID_IDS["FR"]},
            ["seller.country"],
        ),
    ],
)
def test_refused_claims_say_what_is_missing(changes: dict[str, Any], fields: list[str]) -> None:
    with pytest.raises(ReverseChargeNotConfirmed) as refused:
        vat_treatment.decide(req(status=TaxStatus.REVERSE_CHARGE, **changes))
    assert [item["field"] for item in refused.value.problem_extensions["missing"]] == fields
    assert all(item["detail"] for item in refused.value.problem_extensions["missing"])


def test_exemption_needs_its_certificate_when_a_seller_is_given() -> None:
    with pytest.raises(ExemptionNotConfirmed) as refused:
        vat_treatment.decide(req(status=TaxStatus.EXEMPT))
    assert refused.value.problem_extensions["missing"][0]["field"] == (
        "customer.exemption_certificate"
    )
    found = relief(req(status=TaxStatus.EXEMPT, certificate="EX-2026-17"), Supply.GOODS)
    assert (found.category, found.treatment) == (VatCategory.EXEMPT, Treatment.EXEMPT)
    assert found.reason == "Exempt customer — exemption certificate EX-2026-17"
    # Without a seller: as before, exempt on the caller's word.
    assert relief(req(status=TaxStatus.EXEMPT, seller=None)).category is VatCategory.EXEMPT


# --- VAT ids ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vat_id", "country", "reason"),
    [
        ("FR123", "FR", "invalid length"),
        ("DE136695975", "DE", "checksum"),
        ("DE136695976", "FR", "prefix DE is not FR's (FR)"),
        ("13669597", "DE", "invalid length"),
    ],
)
def test_invalid_vat_ids_are_refused_with_stdnum_s_reason(
    vat_id: str, country: str, reason: str
) -> None:
    with pytest.raises(InvalidVatId) as refused:
        vat_treatment.normalize_vat_id(vat_id, country, field="customer.tax_id")
    assert reason in str(refused.value)
    assert refused.value.problem_extensions == {"field": "customer.tax_id"}


def test_vat_ids_are_normalised_with_the_country_prefix() -> None:
    assert vat_treatment.normalize_vat_id("de 136 695 976", "DE", field="x") == "DE136695976"
    assert vat_treatment.normalize_vat_id("094259216", "GR", field="x") == "EL094259216"


def test_the_decision_checks_the_vat_id_it_relies_on() -> None:
    with pytest.raises(InvalidVatId):
        vat_treatment.decide(req(customer="FR", tax_id="FR123"))
    with pytest.raises(InvalidVatId):  # a claim, even when the customer is "at home"
        vat_treatment.decide(req(status=TaxStatus.REVERSE_CHARGE, customer="DE", tax_id="DE1"))
    with pytest.raises(InvalidVatId):
        vat_treatment.decide(req(seller_vat_id="DE000"))
    # A domestic customer's tax id is not relied on, so it is not checked.
    assert vat_treatment.vat_id_to_confirm(req(customer="DE", tax_id="12/345/67890")) is None
    assert vat_treatment.vat_id_to_confirm(req(customer="FR", tax_id="FR 40303265045")) == (
        "FR40303265045"
    )


def test_a_vat_id_the_register_does_not_know_is_refused() -> None:
    unknown = VatIdCheck("FR40303265045", valid=False, source="vies", checked_at=NOW)
    with pytest.raises(InvalidVatId) as refused:
        vat_treatment.decide(req(customer="FR", tax_id=VALID_IDS["FR"]), unknown)
    assert "does not know it" in str(refused.value)


# --- properties over the table --------------------------------------------------------------

countries = st.sampled_from([*VALID_IDS, *NON_EU])


@st.composite
def requests(draw: st.DrawFn) -> CalculationRequest:
    status = draw(st.sampled_from(list(TaxStatus)))
    seller = draw(st.one_of(st.none(), countries))
    customer = draw(st.one_of(st.none(), countries))
    jurisdiction = draw(countries)
    where = customer or jurisdiction
    tax_id = draw(st.sampled_from([VALID_IDS.get(where, "1"), None]))
    if status is TaxStatus.REVERSE_CHARGE and tax_id is None:
        tax_id = "1"
    return req(
        status=status,
        seller=seller,
        customer=customer,
        tax_id=tax_id,
        kind=draw(st.sampled_from([None, *CustomerKind])),
        jurisdiction=jurisdiction,
        certificate=draw(st.sampled_from([None, "EX-1"])),
    )


@settings(max_examples=400, deadline=None)
@given(requests(), st.sampled_from(list(Supply)))
def test_the_decision_table_holds_for_any_parties(
    request: CalculationRequest, supply: Supply
) -> None:
    facts = vat_treatment.Facts.of(request)
    try:
        decision = vat_treatment.decide(request)
    except ReverseChargeNotConfirmed as refused:
        # Refused exactly when the claim lacks something, and it says what.
        assert facts.status is TaxStatus.REVERSE_CHARGE
        assert refused.problem_extensions["missing"] == vat_treatment.reverse_charge_missing(facts)
        return
    except ExemptionNotConfirmed:
        assert facts.status is TaxStatus.EXEMPT
        assert request.seller is not None and request.customer.exemption_certificate is None
        return
    except InvalidVatId:
        assert request.customer.tax_id == "1" and facts.customer_country in VALID_IDS
        return
    found = decision.for_supply(supply)
    category = found.category if found else None
    # Exempt customers: E, and only they.
    assert (category is VatCategory.EXEMPT) == (facts.status is TaxStatus.EXEMPT)
    # Reverse charge / intra-community supply only between two member states, to a business.
    if category in (VatCategory.REVERSE_CHARGE, VatCategory.INTRA_COMMUNITY):
        assert facts.intra_eu and facts.kind is CustomerKind.BUSINESS
        assert category is (
            VatCategory.INTRA_COMMUNITY if supply is Supply.GOODS else VatCategory.REVERSE_CHARGE
        )
    # A confirmed claim is always relieved.
    if facts.status is TaxStatus.REVERSE_CHARGE:
        assert category in (VatCategory.REVERSE_CHARGE, VatCategory.INTRA_COMMUNITY)
    # Exports are goods leaving the EU.
    if category is VatCategory.EXPORT:
        assert supply is Supply.GOODS
        assert facts.seller_country in vat_treatment.EU_MEMBER_STATES
        assert facts.customer_country not in vat_treatment.EU_MEMBER_STATES
    # Everyone in one country, no claim: taxed by the rules.
    same = {facts.seller_country, facts.customer_country, facts.jurisdiction_country}
    if len(same) == 1 and facts.status is TaxStatus.STANDARD:
        assert found is None
    # Every relief but E and a non-EU seller's O names its VATEX code and legal reason.
    if found is not None:
        assert found.reason
        if category not in (VatCategory.EXEMPT, VatCategory.OUT_OF_SCOPE):
            assert found.reason_code and found.reason_code.startswith("VATEX-EU-")


def _rule(category: str, rate: str, supply: Supply, index: int) -> TaxRule:
    return TaxRule(
        id=f"r{index}",
        jurisdiction=Jurisdiction("DE"),
        category=category,
        name=f"{category} {rate}",
        rate=Decimal(rate),
        valid_from=date(2020, 1, 1),
        zero_rated=Decimal(rate) == 0,
        supply=supply,
    )


RULES = (
    _rule("standard", "0.19", Supply.SERVICES, 1),
    _rule("food", "0.07", Supply.GOODS, 2),
    _rule("books", "0", Supply.GOODS, 3),
    _rule("digital", "0.19", Supply.SERVICES, 4),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["standard", "food", "books", "digital"]),
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999"), places=2),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from(
        [
            {},
            {"customer": "FR", "tax_id": VALID_IDS["FR"]},
            {"customer": "US", "kind": CustomerKind.BUSINESS},
            {"customer": "US", "kind": CustomerKind.CONSUMER},
            {"status": TaxStatus.EXEMPT, "certificate": "EX-1"},
        ]
    ),
)
def test_the_breakdown_adds_up_to_the_totals_exactly(
    items: list[tuple[str, Decimal]], parties: dict[str, Any]
) -> None:
    lines = tuple(line(cat, str(price), str(i)) for i, (cat, price) in enumerate(items))
    request = req(lines=lines, **parties)
    calculation = TaxCalculation.of(
        calculation_id="c", request=request, lines=calculate(request, RULES), created_at=NOW
    )
    entries = calculation.breakdown
    assert sum((e.taxable for e in entries), Money.zero("EUR")) == calculation.total_net
    assert sum((e.tax for e in entries), Money.zero("EUR")) == calculation.total_tax
    # One entry per category, rate and reason; every line is in the entry of its category.
    keys = [(e.category, e.rate, e.reason) for e in entries]
    assert len(keys) == len(set(keys))
    assert {e.category for e in entries} == {r.vat.category for r in calculation.lines}
    for entry in entries:
        if entry.category not in (VatCategory.STANDARD, VatCategory.ZERO_RATED):
            assert entry.tax.is_zero and entry.rate == 0


def test_mixed_goods_and_services_take_the_precedence_of_the_treatments() -> None:
    request = req(
        customer="FR",
        tax_id=VALID_IDS["FR"],
        lines=(line("food", line_id="1"), line("standard", line_id="2")),
    )
    results = calculate(request, RULES)
    assert [r.vat.category for r in results] == [
        VatCategory.INTRA_COMMUNITY,
        VatCategory.REVERSE_CHARGE,
    ]
    calculation = TaxCalculation.of(
        calculation_id="c", request=request, lines=results, created_at=NOW
    )
    assert calculation.treatment is Treatment.INTRA_EU_REVERSE_CHARGE
    assert [e.category for e in calculation.breakdown] == [
        VatCategory.INTRA_COMMUNITY,
        VatCategory.REVERSE_CHARGE,
    ]


def test_taxed_lines_are_s_or_z_by_their_rules() -> None:
    results = calculate(
        req(lines=(line("standard", line_id="1"), line("books", line_id="2"))), RULES
    )
    assert [(r.vat.category, str(r.tax.amount)) for r in results] == [
        (VatCategory.STANDARD, "19.00"),
        (VatCategory.ZERO_RATED, "0.00"),
    ]


def test_sample_goods_categories_are_goods() -> None:
    from tax_service.samples import SAMPLE_RULES

    goods = {(str(r.jurisdiction), r.category) for r in SAMPLE_RULES if r.supply is Supply.GOODS}
    assert {category for _, category in goods} == {"food", "books", "export"}
    assert ("FR", "export") in goods and ("DE", "standard") not in goods
