"""Invoice request bodies: the creation body (customer, lines, coupons) and a reason.
Amounts are decimal strings; JSON numbers are refused for amounts (quantities may be JSON
integers)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from billing_common.idempotency import request_fingerprint
from billing_common.wire import Currency, DecimalString, Quantity
from invoice_service.domain.errors import InvalidInvoice
from invoice_service.domain.languages import (
    MAX_TAG_LENGTH,
    SUPPORTED_LANGUAGES,
    normalise_language,
)
from invoice_service.domain.model import Customer, CustomerKind, PriceMode, TaxStatus
from invoice_service.domain.numbering import DEFAULT_SERIES, check_series
from invoice_service.domain.pricing import LineDraft
from invoice_service.entrypoints.einvoice_schemas import PostalAddressIn
from invoice_service.entrypoints.seller_schemas import CustomerKindField
from invoice_service.service_layer.creation import CreateInvoice


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class JurisdictionIn(_In):
    country: str = Field(pattern=r"^[A-Za-z]{2}$", examples=["DE"])
    region: str | None = Field(default=None, min_length=1, max_length=16, examples=[None])

    @field_validator("country", "region")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None


class CustomerIn(_In):
    id: str = Field(min_length=1, max_length=128, examples=["c-1"])
    type: str | None = Field(default=None, min_length=1, max_length=64, examples=["premium"])
    jurisdiction: JurisdictionIn
    tax_status: Literal["standard", "exempt", "reverse_charge"] = "standard"
    tax_id: str | None = Field(default=None, min_length=1, max_length=64)
    name: str | None = Field(default=None, min_length=1, max_length=200, examples=["Acme GmbH"])
    email: str | None = Field(default=None, min_length=3, max_length=254)
    address: str | None = Field(default=None, max_length=1000, description="lines separated by \\n")
    # Issue 12, all optional (sent to the tax service only when given).
    country: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{2}$",
        description="where the customer is established, if not the jurisdiction's country",
    )
    region: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,3}$")
    kind: CustomerKindField | None = Field(
        default=None, description="default (tax service): business with a tax_id, else consumer"
    )
    exemption_certificate: str | None = Field(default=None, min_length=1, max_length=128)
    # Issue 13 (e-invoices), optional.
    postal_address: PostalAddressIn | None = Field(
        default=None, description="the structured address e-invoices carry (BG-8)"
    )
    buyer_reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="BT-10: the reference the buyer gives (for XRechnung the Leitweg-ID)",
        examples=["04011000-12345-34"],
    )

    @field_validator("country", "region")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None


class LineIn(_In):
    description: str = Field(min_length=1, max_length=500, examples=["Widget"])
    quantity: Quantity = Field(description="positive; decimal string or integer")
    unit_price: DecimalString = Field(description="decimal string, >= 0")
    category: str = Field(default="standard", min_length=1, max_length=64)


class InvoiceCreate(_In):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "customer": {
                        "id": "c-1",
                        "type": "premium",
                        "jurisdiction": {"country": "DE"},
                        "name": "Acme GmbH",
                        "email": "billing@acme.example",
                        "address": "Hauptstr. 1\n10115 Berlin",
                    },
                    "currency": "EUR",
                    "lines": [
                        {
                            "description": "Widget",
                            "quantity": "2",
                            "unit_price": "100.00",
                            "category": "standard",
                        },
                        {
                            "description": "Cookbook",
                            "quantity": 1,
                            "unit_price": "20.00",
                            "category": "books",
                        },
                    ],
                    "coupon_codes": ["WELCOME10"],
                    "due_days": 30,
                    "memo": "Thank you for your order",
                }
            ]
        },
    )

    customer: CustomerIn
    currency: Currency
    lines: list[LineIn] = Field(min_length=1, max_length=200)
    coupon_codes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20
    )
    price_mode: Literal["exclusive", "inclusive"] = "exclusive"
    series: str = Field(
        default=DEFAULT_SERIES,
        min_length=1,
        max_length=16,
        description="default: the seller's invoice series (INV without a seller)",
    )
    due_days: StrictInt = Field(default=30, ge=0, le=365)
    memo: str | None = Field(default=None, max_length=2000)
    seller_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="the issuing seller; default: the tenant's default seller, if any",
    )
    language: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TAG_LENGTH,
        description=(
            "the customer's language for the documents (PDF, Factur-X), a BCP 47 tag: "
            f"{', '.join(SUPPORTED_LANGUAGES)}, optionally with a region (de-CH, fr-BE, "
            "en-GB); default: the seller's default language, else en. Others: 422"
        ),
        examples=["de"],
    )

    @field_validator("series")
    @classmethod
    def _series(cls, value: str) -> str:
        try:
            return check_series(value)
        except InvalidInvoice as exc:
            raise ValueError(str(exc)) from exc

    def fingerprint(self) -> str:
        """Hash of the normalised body: the same request under the same key is a replay."""
        body = self.model_dump(mode="json")
        if self.language is not None:
            # "de-ch" and "de-CH" are one request (an unsupported tag is refused before).
            body["language"] = normalise_language(self.language)
        # Fields added later count only when sent, so a request made before they existed
        # keeps its fingerprint (and its replay) under the same key.
        for name in _ADDED_FIELDS:
            if body.get(name) is None:
                body.pop(name, None)
        for name in _ADDED_CUSTOMER_FIELDS:
            if body["customer"].get(name) is None:
                body["customer"].pop(name, None)
        return request_fingerprint(body)

    def to_command(self, *, tenant: str, actor: str, idempotency_key: str) -> CreateInvoice:
        """Raises UnsupportedLanguage (422) for a language without translations."""
        c = self.customer
        language = normalise_language(self.language) if self.language is not None else None
        return CreateInvoice(
            tenant=tenant,
            actor=actor,
            idempotency_key=idempotency_key,
            request_hash=self.fingerprint(),
            customer=Customer(
                id=c.id,
                type=c.type,
                country=c.jurisdiction.country,
                region=c.jurisdiction.region,
                tax_status=TaxStatus(c.tax_status),
                tax_id=c.tax_id,
                name=c.name,
                email=c.email,
                address=c.address,
                location_country=c.country,
                location_region=c.region,
                kind=CustomerKind(c.kind) if c.kind else None,
                exemption_certificate=c.exemption_certificate,
                postal_address=c.postal_address.to_domain() if c.postal_address else None,
                buyer_reference=c.buyer_reference,
            ),
            currency=self.currency,
            lines=tuple(
                LineDraft(
                    description=line.description,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    category=line.category,
                )
                for line in self.lines
            ),
            coupon_codes=tuple(self.coupon_codes),
            price_mode=PriceMode(self.price_mode),
            # A series left out is the seller's (see CreateInvoice.series).
            series=self.series if "series" in self.model_fields_set else None,
            due_days=self.due_days,
            memo=self.memo,
            seller_id=self.seller_id,
            language=language,
        )


_ADDED_FIELDS = ("seller_id", "language")
_ADDED_CUSTOMER_FIELDS = (
    "country",
    "region",
    "kind",
    "exemption_certificate",
    "postal_address",
    "buyer_reference",
)


class ReasonIn(_In):
    reason: str | None = Field(default=None, max_length=500, examples=["duplicate order"])
