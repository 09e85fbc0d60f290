"""Bodies of /v1/sellers, and the seller and VAT parts of the invoice JSON. Identifiers (VAT
id, IBAN, BIC) are checked by the domain (python-stdnum, schwifty): a bad one is a 422 problem
naming the field and the checker's reason."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from invoice_service.domain.model import InvoiceLine, VatBreakdown
from invoice_service.domain.sellers import (
    BankAccount,
    Seller,
    SellerAddress,
    SellerSnapshot,
    TaxRegistration,
)
from invoice_service.service_layer.wire import DecimalString

Country = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$", examples=["DE"])]
# The subdivision part of ISO 3166-2 (CA for US-CA, QC for CA-QC), as the tax API takes it.
Region = Annotated[str, Field(pattern=r"^[A-Za-z0-9]{1,3}$", examples=["CA"])]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Z]{2})?$", examples=["de"])]
Series = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,15}$", examples=["INV"])]

SELLER_EXAMPLE: dict[str, Any] = {
    "legal_name": "Muster Software GmbH",
    "address": {
        "country": "DE",
        "region": None,
        "postcode": "10115",
        "city": "Berlin",
        "street": ["Invalidenstraße 1"],
    },
    "vat_id": "DE136695976",
    "tax_registrations": [],
    "contact": {"email": "billing@muster.example", "phone": "+49 30 1234567"},
    "bank_account": {"iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"},
    "default_currency": "EUR",
    "language": "de",
    "invoice_series": "MS",
    "credit_note_series": "MSCN",
    "is_default": True,
}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AddressIn(_In):
    country: Country
    region: Region | None = None
    postcode: str | None = Field(default=None, min_length=1, max_length=16)
    city: str = Field(min_length=1, max_length=100)
    street: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=4
    )

    @field_validator("country", "region")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value is not None else None

    def to_domain(self) -> SellerAddress:
        return SellerAddress(
            country=self.country,
            city=self.city,
            postcode=self.postcode,
            region=self.region,
            street=tuple(self.street),
        )


class TaxRegistrationIn(_In):
    country: Country
    region: Region | None = None
    number: str = Field(min_length=1, max_length=64)

    def to_domain(self) -> TaxRegistration:
        return TaxRegistration(
            self.country, self.number, self.region.upper() if self.region else None
        )


class ContactIn(_In):
    email: str | None = Field(default=None, min_length=3, max_length=254)
    phone: str | None = Field(default=None, min_length=3, max_length=32)


class BankAccountIn(_In):
    iban: str = Field(min_length=5, max_length=42, examples=["DE89 3704 0044 0532 0130 00"])
    bic: str | None = Field(default=None, min_length=8, max_length=11, examples=["COBADEFFXXX"])

    def to_domain(self) -> BankAccount:
        return BankAccount(self.iban, self.bic)


class _SellerFields(_In):
    def _domain_fields(self, names: set[str]) -> dict[str, Any]:
        """These fields as the Seller's keyword arguments (nested parts as domain values,
        checked there)."""
        fields: dict[str, Any] = {}
        for name in sorted(names):
            value = getattr(self, name)
            if name == "address":
                fields["address"] = value.to_domain()
            elif name == "tax_registrations":
                fields[name] = tuple(r.to_domain() for r in value)
            elif name == "bank_account":
                fields[name] = value.to_domain() if value is not None else None
            elif name == "contact":
                fields["email"] = value.email if value else None
                fields["phone"] = value.phone if value else None
            else:
                fields[name] = value
        return fields


class SellerCreate(_SellerFields):
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, json_schema_extra={"examples": [SELLER_EXAMPLE]}
    )

    legal_name: str = Field(min_length=1, max_length=200)
    address: AddressIn
    vat_id: str | None = Field(default=None, min_length=4, max_length=32)
    tax_registrations: list[TaxRegistrationIn] = Field(default_factory=list, max_length=20)
    contact: ContactIn | None = None
    bank_account: BankAccountIn | None = None
    default_currency: str | None = Field(default=None, min_length=3, max_length=3)
    language: Language = "en"
    invoice_series: Series = "INV"
    credit_note_series: Series = "CN"
    is_default: StrictBool = False

    def domain_fields(self) -> dict[str, Any]:
        return self._domain_fields(set(type(self).model_fields))


class SellerUpdate(_SellerFields):
    """Only the fields sent change; `active: false` deactivates (no new invoices)."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"bank_account": {"iban": "DE02120300000000202051"}}]},
    )

    legal_name: str | None = Field(default=None, min_length=1, max_length=200)
    address: AddressIn | None = None
    vat_id: str | None = Field(default=None, min_length=4, max_length=32)
    tax_registrations: list[TaxRegistrationIn] | None = Field(default=None, max_length=20)
    contact: ContactIn | None = None
    bank_account: BankAccountIn | None = None
    default_currency: str | None = Field(default=None, min_length=3, max_length=3)
    language: Language | None = None
    invoice_series: Series | None = None
    credit_note_series: Series | None = None
    is_default: StrictBool | None = None
    active: StrictBool | None = None

    def domain_fields(self) -> dict[str, Any]:
        """Only what was sent changes."""
        return self._domain_fields(set(self.model_fields_set))

    @field_validator(
        "legal_name",
        "address",
        "language",
        "invoice_series",
        "credit_note_series",
        "is_default",
        "active",
        "tax_registrations",
    )
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, not set to null")
        return value


# ---- responses --------------------------------------------------------------------------


class AddressOut(BaseModel):
    country: str
    region: str | None
    postcode: str | None
    city: str
    street: list[str]

    @classmethod
    def of(cls, address: SellerAddress) -> AddressOut:
        return cls(
            country=address.country,
            region=address.region,
            postcode=address.postcode,
            city=address.city,
            street=list(address.street),
        )


class TaxRegistrationOut(BaseModel):
    country: str
    region: str | None
    number: str


class ContactOut(BaseModel):
    email: str | None
    phone: str | None


class BankAccountOut(BaseModel):
    iban: str
    bic: str | None


class _Identity(BaseModel):
    legal_name: str
    address: AddressOut
    vat_id: str | None
    tax_registrations: list[TaxRegistrationOut]
    contact: ContactOut
    bank_account: BankAccountOut | None

    @staticmethod
    def identity(seller: Seller | SellerSnapshot) -> dict[str, Any]:
        bank = seller.bank_account
        return {
            "legal_name": seller.legal_name,
            "address": AddressOut.of(seller.address),
            "vat_id": seller.vat_id,
            "tax_registrations": [
                TaxRegistrationOut(country=r.country, region=r.region, number=r.number)
                for r in seller.tax_registrations
            ],
            "contact": ContactOut(email=seller.email, phone=seller.phone),
            "bank_account": BankAccountOut(iban=bank.iban, bic=bank.bic) if bank else None,
        }


class SellerOut(_Identity):
    id: str
    default_currency: str | None
    language: str
    invoice_series: str
    credit_note_series: str
    is_default: bool
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, seller: Seller) -> SellerOut:
        return cls(
            id=seller.id,
            default_currency=seller.default_currency,
            language=seller.language,
            invoice_series=seller.invoice_series,
            credit_note_series=seller.credit_note_series,
            is_default=seller.is_default,
            active=seller.active,
            version=seller.version,
            created_at=seller.created_at,
            updated_at=seller.updated_at,
            **cls.identity(seller),
        )


class SellerPageOut(BaseModel):
    items: list[SellerOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class SellerSnapshotOut(_Identity):
    """The seller as the invoice keeps it (taken again at finalization, then fixed)."""

    seller_id: str
    version: int = Field(description="the seller's version the snapshot was taken from")

    @classmethod
    def of(cls, snapshot: SellerSnapshot) -> SellerSnapshotOut:
        return cls(seller_id=snapshot.seller_id, version=snapshot.version, **cls.identity(snapshot))


class VatBreakdownOut(BaseModel):
    vat_category: str
    rate: DecimalString
    taxable_amount: DecimalString
    tax_amount: DecimalString
    exemption_reason: str | None
    exemption_reason_code: str | None

    @classmethod
    def of(cls, entry: VatBreakdown) -> VatBreakdownOut:
        return cls(
            vat_category=entry.vat_category,
            rate=entry.rate,
            taxable_amount=entry.taxable_amount,
            tax_amount=entry.tax_amount,
            exemption_reason=entry.exemption_reason,
            exemption_reason_code=entry.exemption_reason_code,
        )


def line_vat(line: InvoiceLine) -> dict[str, str | None]:
    return {
        "vat_category": line.vat_category,
        "vat_exemption_reason": line.vat_exemption_reason,
        "vat_exemption_reason_code": line.vat_exemption_reason_code,
    }


CustomerKindField = Literal["business", "consumer"]
