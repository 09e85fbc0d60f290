"""The parties and VAT parts of the calculation schemas: customer and seller in, the parties
as the engine saw them, the EN 16931 breakdown and the VAT id evidence out. Amounts are
decimal strings, as everywhere in the API."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from billing_common.money import format_amount
from tax_service.domain.errors import InvalidCalculationRequest
from tax_service.domain.model import (
    BreakdownEntry,
    CalculationRequest,
    Customer,
    CustomerKind,
    Jurisdiction,
    Seller,
    TaxStatus,
    VatIdCheck,
)

_DECIMAL = Field(json_schema_extra={"format": "decimal"})


class CustomerIO(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = Field(default=None, max_length=128, examples=["c-1"])
    tax_status: Literal["standard", "exempt", "reverse_charge"] = Field(
        default="standard",
        description='"reverse_charge" is a claim the engine confirms (or refuses with 422 '
        "`reverse-charge-not-confirmed`)",
    )
    tax_id: StrictStr | None = Field(
        default=None,
        max_length=128,
        description="the VAT id (country prefix optional) when the customer is in the EU; "
        "required for reverse_charge",
        examples=[None],
    )
    country: StrictStr | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="ISO 3166-1 alpha-2; default: the jurisdiction's country",
        examples=[None],
    )
    region: StrictStr | None = Field(default=None, max_length=3, examples=[None])
    kind: Literal["business", "consumer"] | None = Field(
        default=None, description='default: "business" with a tax_id, else "consumer"'
    )
    exemption_certificate: StrictStr | None = Field(
        default=None,
        max_length=128,
        description="reference of the exemption certificate of an exempt customer (required "
        "with tax_status exempt when a seller is given); kept in the history",
        examples=[None],
    )

    def to_domain(self) -> Customer:
        if self.country is None and self.region is not None:
            raise InvalidCalculationRequest(
                "customer.region needs customer.country", field="customer.region"
            )
        return Customer(
            id=self.id,
            tax_status=TaxStatus(self.tax_status),
            tax_id=self.tax_id,
            location=Jurisdiction(self.country, self.region) if self.country else None,
            kind=CustomerKind(self.kind) if self.kind else None,
            exemption_certificate=self.exemption_certificate,
        )


class SellerIO(BaseModel):
    """Who supplies; absent: a seller in the calculation's jurisdiction (domestic)."""

    model_config = ConfigDict(extra="forbid")

    country: StrictStr = Field(
        min_length=2, max_length=2, description="ISO 3166-1 alpha-2", examples=["DE"]
    )
    region: StrictStr | None = Field(default=None, max_length=3, examples=[None])
    vat_id: StrictStr | None = Field(
        default=None,
        max_length=128,
        description="with the country prefix",
        examples=["DE136695976"],
    )

    def to_domain(self) -> Seller:
        return Seller(Jurisdiction(self.country, self.region), self.vat_id)


VatCategoryCode = Literal["S", "Z", "E", "AE", "K", "G", "O"]
TreatmentName = Literal[
    "domestic",
    "intra_eu_reverse_charge",
    "intra_eu_supply_of_goods",
    "export",
    "out_of_scope",
    "exempt",
]


class BreakdownOut(BaseModel):
    vat_category: VatCategoryCode
    rate: str = _DECIMAL
    taxable_amount: str = _DECIMAL
    tax_amount: str = _DECIMAL
    exemption_reason: str | None
    exemption_reason_code: str | None

    @classmethod
    def of(cls, entry: BreakdownEntry) -> BreakdownOut:
        return cls(
            vat_category=entry.category.value,
            rate=format_amount(entry.rate),
            taxable_amount=format_amount(entry.taxable.amount),
            tax_amount=format_amount(entry.tax.amount),
            exemption_reason=entry.reason,
            exemption_reason_code=entry.reason_code,
        )


class VatIdCheckOut(BaseModel):
    vat_id: str
    valid: bool
    source: Literal["vies", "sandbox", "format-only"]
    checked_at: dt.datetime
    request_id: str | None
    detail: str | None = Field(description="why VIES did not confirm it (format-only)")

    @classmethod
    def of(cls, check: VatIdCheck) -> VatIdCheckOut:
        return cls(
            vat_id=check.vat_id,
            valid=check.valid,
            source=check.source,  # type: ignore[arg-type]  # the adapters' three sources
            checked_at=check.checked_at,
            request_id=check.request_id,
            detail=check.detail,
        )


class EvidenceOut(BaseModel):
    vat_id_check: VatIdCheckOut


class SellerOut(BaseModel):
    country: str
    region: str | None
    vat_id: str | None
    given: bool = Field(description="false: no seller was sent; assumed in the jurisdiction")


class CustomerPartyOut(BaseModel):
    country: str
    region: str | None
    kind: Literal["business", "consumer"]
    exemption_certificate: str | None


class PartiesOut(BaseModel):
    """The parties as the engine saw them, defaults resolved."""

    seller: SellerOut
    customer: CustomerPartyOut

    @classmethod
    def of(cls, request: CalculationRequest) -> PartiesOut:
        seller, customer = request.seller_location, request.customer_location
        return cls(
            seller=SellerOut(
                country=seller.country,
                region=seller.region,
                vat_id=request.seller.vat_id if request.seller else None,
                given=request.seller is not None,
            ),
            customer=CustomerPartyOut(
                country=customer.country,
                region=customer.region,
                kind=request.customer.resolved_kind.value,
                exemption_certificate=request.customer.exemption_certificate,
            ),
        )
