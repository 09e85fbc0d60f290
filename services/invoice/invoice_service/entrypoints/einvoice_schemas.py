"""Request and response bodies of e-invoicing: the buyer's postal address (BG-8) on the
invoice creation request, the documents an issued invoice is offered with, and the
customer's default e-invoice format."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from invoice_service.domain.einvoicing import (
    MAX_STREET_LINES,
    CustomerEInvoiceSettings,
    PostalAddress,
    check_iso_country,
)
from invoice_service.domain.errors import InvalidInvoice
from invoice_service.service_layer.einvoices import AvailableDocument

DefaultFormatField = Literal["none", "facturx", "xrechnung", "ubl"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PostalAddressIn(_In):
    """The buyer's postal address as EN 16931 structures it (BG-8). XRechnung needs the
    city and the postcode (BR-DE-8, BR-DE-9)."""

    street: list[str] = Field(
        default_factory=list,
        max_length=MAX_STREET_LINES,
        description="address lines: BT-50, BT-51 and BT-163",
        examples=[["Kundenweg 5"]],
    )
    city: str | None = Field(default=None, min_length=1, max_length=100, examples=["München"])
    postcode: str | None = Field(default=None, min_length=1, max_length=16, examples=["80331"])
    subdivision: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="BT-54 country subdivision (state, region)",
        examples=["Bayern"],
    )
    country: str = Field(
        min_length=2, max_length=2, description="BT-55, ISO 3166-1 alpha-2", examples=["DE"]
    )

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        try:
            return check_iso_country(value, "postal_address.country")
        except InvalidInvoice as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("street")
    @classmethod
    def _street(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if not line.strip() or len(line) > 200 or "\n" in line:
                raise ValueError("each street line is one non-blank line of at most 200 chars")
        return [line.strip() for line in lines]

    def to_domain(self) -> PostalAddress:
        return PostalAddress(
            country=self.country,
            street=tuple(self.street),
            city=self.city,
            postcode=self.postcode,
            subdivision=self.subdivision,
        )


class PostalAddressOut(BaseModel):
    street: list[str]
    city: str | None
    postcode: str | None
    subdivision: str | None
    country: str

    @classmethod
    def of(cls, address: PostalAddress) -> PostalAddressOut:
        return cls(
            street=list(address.street),
            city=address.city,
            postcode=address.postcode,
            subdivision=address.subdivision,
            country=address.country,
        )


class DocumentOut(BaseModel):
    kind: Literal["pdf", "einvoice"]
    format: Literal["facturx", "xrechnung", "ubl"] | None = None
    media_type: str
    href: str

    @classmethod
    def of(cls, document: AvailableDocument) -> DocumentOut:
        return cls(
            kind=document.kind,  # type: ignore[arg-type]
            format=document.format.value if document.format else None,  # type: ignore[arg-type]
            media_type=document.media_type,
            href=document.href,
        )


class CustomerEInvoiceSettingsIn(_In):
    default_format: DefaultFormatField = Field(
        description="the e-invoice offered with every invoice finalized for the customer "
        "besides its PDF (when the invoice has what the format needs); none: the PDF only",
        examples=["xrechnung"],
    )


class CustomerEInvoiceSettingsOut(BaseModel):
    customer_id: str
    default_format: DefaultFormatField
    updated_at: datetime | None
    updated_by: str | None

    @classmethod
    def of(cls, settings: CustomerEInvoiceSettings) -> CustomerEInvoiceSettingsOut:
        return cls(
            customer_id=settings.customer_id,
            default_format=settings.default_format.value,  # type: ignore[arg-type]
            updated_at=settings.updated_at,
            updated_by=settings.updated_by,
        )
