"""Request and response schemas of the tax API (docs/api-contracts.md), and their mapping to
the domain.

Amounts and rates are decimal strings both ways: a JSON number is refused before it can pass
through a float. Quantities may also be JSON integers (exact), never fractions as numbers.
Shape and types are checked here; meaning (codes, ranges, consistency) is checked by the
domain constructors, whose errors become 422 problems too.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from billing_common.money import Money
from billing_common.wire import DecimalOut, DecimalString, DecimalText, Quantity, fraction_pattern
from tax_service.domain.model import (
    MAX_RATE_PLACES,
    AppliedTax,
    CalculationRequest,
    Jurisdiction,
    LineInput,
    LineResult,
    PriceMode,
    Supply,
    TaxCalculation,
    TaxRounding,
    TaxRule,
)
from tax_service.entrypoints.vat_schemas import (
    BreakdownOut,
    CustomerIO,
    EvidenceOut,
    PartiesOut,
    SellerIO,
    TreatmentName,
    VatCategoryCode,
    VatIdCheckOut,
)

# A fraction 0..1 ("0.19" is 19 %), at most MAX_RATE_PLACES decimals: the domain's bounds.
Rate = Annotated[Decimal, DecimalText(fraction_pattern(MAX_RATE_PLACES, zero=True), "0.19")]
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _parse_date(value: Any) -> dt.date:
    # JSON has no date type: only an ISO 8601 calendar date string is a date here, never a
    # number of seconds or a date-time (pydantic's lax mode would accept both).
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError('dates are ISO 8601 strings such as "2026-11-24"')
    return dt.date.fromisoformat(value)


IsoDate = Annotated[
    dt.date,
    PlainValidator(_parse_date),
    WithJsonSchema({"type": "string", "format": "date", "examples": ["2026-11-24"]}),
]
Priority = Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- shared -----------------------------------------------------------------------------


class JurisdictionIO(_In):
    country: StrictStr = Field(
        min_length=2, max_length=2, description="ISO 3166-1 alpha-2", examples=["DE"]
    )
    region: StrictStr | None = Field(
        default=None,
        max_length=3,
        description="ISO 3166-2 subdivision part, e.g. CA for US-CA, QC for CA-QC",
        examples=[None],
    )

    def to_domain(self) -> Jurisdiction:
        return Jurisdiction(self.country, self.region)

    @classmethod
    def of(cls, jurisdiction: Jurisdiction) -> JurisdictionIO:
        return cls(country=jurisdiction.country, region=jurisdiction.region)


# --- rules ------------------------------------------------------------------------------


class RuleDefinition(_In):
    """A rule without its external key (the key comes from the path on upsert-by-key)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "jurisdiction": {"country": "DE", "region": None},
                    "category": "standard",
                    "name": "DE VAT standard",
                    "rate": "0.19",
                    "valid_from": "2021-01-01",
                    "valid_to": None,
                    "compound": False,
                    "priority": 0,
                }
            ]
        },
    )

    jurisdiction: JurisdictionIO
    category: StrictStr = Field(
        min_length=1,
        max_length=64,
        description='product category, a free string such as "standard", "food", "books"',
        examples=["standard"],
    )
    name: StrictStr = Field(min_length=1, max_length=200, examples=["DE VAT standard"])
    rate: Rate = Field(description='fraction 0..1: "0.19" is 19 %, "0" is zero-rated')
    valid_from: IsoDate | None = Field(
        default=None, description="first day the rule applies (inclusive); null: always"
    )
    valid_to: IsoDate | None = Field(
        default=None,
        description="first day the rule no longer applies (exclusive); null: no end",
    )
    zero_rated: StrictBool | None = Field(
        default=None,
        description=(
            'the category is taxed at 0 % here; default: true exactly when rate is "0" '
            "(an explicit value must agree with the rate)"
        ),
    )
    compound: StrictBool = Field(
        default=False, description="charged on the net plus the taxes ordered before it"
    )
    priority: Priority = Field(default=0, description="higher applies first (as for discounts)")
    supply: Literal["goods", "services"] = Field(
        default="services",
        description="what the category sells: decides reverse charge (services) versus "
        "intra-community supply (goods), and exports",
    )

    def to_domain(self, *, rule_id: str, key: str | None) -> TaxRule:
        return TaxRule(
            id=rule_id,
            key=key,
            jurisdiction=self.jurisdiction.to_domain(),
            category=self.category,
            name=self.name,
            rate=self.rate,
            valid_from=self.valid_from,
            valid_to=self.valid_to,
            zero_rated=self.rate == 0 if self.zero_rated is None else self.zero_rated,
            compound=self.compound,
            priority=self.priority,
            supply=Supply(self.supply),
        )


class RuleIn(RuleDefinition):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    **{
                        "jurisdiction": {"country": "DE", "region": None},
                        "category": "standard",
                        "name": "DE VAT standard",
                        "rate": "0.19",
                        "valid_from": "2021-01-01",
                        "valid_to": None,
                        "compound": False,
                        "priority": 0,
                    },
                    "key": "de-vat-standard",
                }
            ]
        },
    )

    key: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="optional external key, unique per tenant (e.g. a TaxRule resource name)",
        examples=["de-vat-standard"],
    )


class RuleOut(BaseModel):
    id: str
    key: str | None
    jurisdiction: JurisdictionIO
    category: str
    name: str
    rate: DecimalOut
    valid_from: dt.date | None
    valid_to: dt.date | None
    zero_rated: bool
    compound: bool
    priority: int
    supply: str
    created_at: AwareDatetime | None
    updated_at: AwareDatetime | None

    @classmethod
    def of(cls, rule: TaxRule) -> RuleOut:
        return cls(
            id=rule.id,
            key=rule.key,
            jurisdiction=JurisdictionIO.of(rule.jurisdiction),
            category=rule.category,
            name=rule.name,
            rate=rule.rate,
            valid_from=rule.valid_from,
            valid_to=rule.valid_to,
            zero_rated=rule.zero_rated,
            compound=rule.compound,
            priority=rule.priority,
            supply=rule.supply.value,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
        )


class RulePage(BaseModel):
    items: list[RuleOut]
    total: int
    limit: int
    offset: int


# --- calculations -----------------------------------------------------------------------


class LineIn(_In):
    id: StrictStr | None = Field(
        default=None, max_length=64, description="default: the line's position, from 1"
    )
    description: StrictStr | None = Field(default=None, max_length=500)
    unit_price: DecimalString
    quantity: Quantity = Field(description="greater than 0")
    category: StrictStr = Field(min_length=1, max_length=64, examples=["standard"])


class CalculationIn(_In):
    currency: StrictStr = Field(min_length=3, max_length=3, examples=["EUR"])
    jurisdiction: JurisdictionIO
    customer: CustomerIO = Field(default_factory=CustomerIO)
    seller: SellerIO | None = None
    price_mode: Literal["exclusive", "inclusive"] = "exclusive"
    tax_rounding: Literal["per_breakdown", "per_line"] = Field(
        default="per_breakdown",
        description="round each VAT breakdown (category and rate) once, as EN 16931 does "
        "(default), or each line and tax on its own",
    )
    date: IsoDate | None = Field(default=None, description="default: today (UTC)")
    reference: StrictStr | None = Field(default=None, max_length=128, examples=["inv_123"])
    lines: list[LineIn] = Field(min_length=1, max_length=1000)

    def to_domain(self, *, today: dt.date) -> CalculationRequest:
        return CalculationRequest(
            currency=self.currency,
            jurisdiction=self.jurisdiction.to_domain(),
            customer=self.customer.to_domain(),
            seller=self.seller.to_domain() if self.seller is not None else None,
            price_mode=PriceMode(self.price_mode),
            rounding=TaxRounding(self.tax_rounding),
            date=self.date or today,
            reference=self.reference,
            lines=tuple(
                LineInput(
                    id=line.id if line.id is not None else str(position),
                    description=line.description,
                    unit_price=Money.of(line.unit_price, self.currency),
                    quantity=line.quantity,
                    category=line.category,
                )
                for position, line in enumerate(self.lines, start=1)
            ),
        )


class AppliedTaxOut(BaseModel):
    rule_id: str
    name: str
    rate: DecimalOut
    amount: DecimalOut
    compound: bool

    @classmethod
    def of(cls, tax: AppliedTax) -> AppliedTaxOut:
        return cls(
            rule_id=tax.rule_id,
            name=tax.name,
            rate=tax.rate,
            amount=tax.amount.amount,
            compound=tax.compound,
        )


class LineOut(BaseModel):
    id: str
    description: str | None
    category: str
    unit_price: DecimalOut
    quantity: DecimalOut
    net: DecimalOut
    tax: DecimalOut
    gross: DecimalOut
    exemption: (
        Literal[
            "exempt_customer",
            "zero_rated",
            "reverse_charge",
            "intra_eu_supply",
            "export",
            "out_of_scope",
        ]
        | None
    )
    taxes: list[AppliedTaxOut]
    vat_category: VatCategoryCode = Field(description="EN 16931 BT-151 (UNCL5305)")
    vat_exemption_reason: str | None = Field(description="BT-120; null for S and Z")
    vat_exemption_reason_code: str | None = Field(description="BT-121 (VATEX); may be null")
    treatment: TreatmentName

    @classmethod
    def of(cls, result: LineResult) -> LineOut:
        return cls(
            id=result.line.id,
            description=result.line.description,
            category=result.line.category,
            unit_price=result.line.unit_price.amount,
            quantity=result.line.quantity,
            net=result.net.amount,
            tax=result.tax.amount,
            gross=result.gross.amount,
            exemption=result.exemption.value if result.exemption else None,
            taxes=[AppliedTaxOut.of(tax) for tax in result.taxes],
            vat_category=result.vat.category.value,
            vat_exemption_reason=result.vat.reason,
            vat_exemption_reason_code=result.vat.reason_code,
            treatment=result.vat.treatment.value,
        )


class CustomerOut(BaseModel):
    id: str | None
    tax_status: str
    tax_id: str | None


class CalculationOut(BaseModel):
    id: str
    currency: str
    price_mode: str
    tax_rounding: str
    jurisdiction: JurisdictionIO
    customer: CustomerOut
    date: dt.date
    reference: str | None
    total_net: DecimalOut
    total_tax: DecimalOut
    total_gross: DecimalOut
    lines: list[LineOut]
    created_at: dt.datetime
    treatment: TreatmentName
    breakdown: list[BreakdownOut] = Field(
        description="one entry per VAT category, rate and reason; adds up to the totals"
    )
    evidence: EvidenceOut | None
    parties: PartiesOut

    @classmethod
    def of(cls, calculation: TaxCalculation) -> CalculationOut:
        request = calculation.request
        return cls(
            id=calculation.id,
            currency=request.currency,
            price_mode=request.price_mode.value,
            tax_rounding=request.rounding.value,
            jurisdiction=JurisdictionIO.of(request.jurisdiction),
            customer=CustomerOut(
                id=request.customer.id,
                tax_status=request.customer.tax_status.value,
                tax_id=request.customer.tax_id,
            ),
            date=request.date,
            reference=request.reference,
            total_net=calculation.total_net.amount,
            total_tax=calculation.total_tax.amount,
            total_gross=calculation.total_gross.amount,
            lines=[LineOut.of(line) for line in calculation.lines],
            created_at=calculation.created_at,
            treatment=calculation.treatment.value,
            breakdown=[BreakdownOut.of(entry) for entry in calculation.breakdown],
            evidence=EvidenceOut(vat_id_check=VatIdCheckOut.of(calculation.evidence))
            if calculation.evidence is not None
            else None,
            parties=PartiesOut.of(request),
        )


class CalculationPage(BaseModel):
    items: list[CalculationOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next (older) page")


class DiscardedOut(BaseModel):
    discarded: int = Field(description="calculations removed (0 when there were none)")
