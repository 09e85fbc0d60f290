"""Sellers: the legal entities of a tenant that issue invoices.

A seller's identity (legal name, address, VAT id, tax registrations, bank account) is printed
on every invoice it issues and is **snapshotted** into the invoice (`SellerSnapshot`): a later
change to the seller never changes an issued invoice. Identifiers are checked offline with the
libraries of the field: VAT ids of EU member states with python-stdnum (`stdnum.eu.vat`:
format and check digits), IBAN and BIC with schwifty.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from billing_common.money import UnknownCurrency, check_currency
from invoice_service.domain.errors import InvalidInvoice, InvalidSeller
from invoice_service.domain.numbering import DEFAULT_SERIES, check_series

# The EU member states (ISO 3166-1 alpha-2). Greece's VAT ids carry the prefix "EL".
EU_COUNTRIES: Final = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    ]
)
VAT_PREFIX: Final = {"GR": "EL"}
DEFAULT_CREDIT_NOTE_SERIES: Final = "CN"
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")


class DocumentType(StrEnum):
    """What a number series numbers: each type has its own gapless sequence per seller."""

    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


def check_country(country: str) -> str:
    normalised = country.strip().upper()
    if not _COUNTRY.fullmatch(normalised):
        raise InvalidSeller(f"country {country!r} must be an ISO 3166-1 alpha-2 code such as DE")
    return normalised


def check_vat_id(vat_id: str, country: str) -> str:
    """The VAT id in compact form with its country prefix. For an EU seller it must be a VAT
    id of the seller's own member state with a valid format and check digits; for others it
    is kept as given (compacted), as there is no one offline check."""
    # deferred (here and for IBAN/BIC): the API process loads them when a seller is checked
    from stdnum.eu import vat as eu_vat
    from stdnum.exceptions import ValidationError as StdnumValidationError
    from stdnum.util import clean

    compact = clean(vat_id, " -./,").upper().strip()
    if country not in EU_COUNTRIES:
        if not compact.isalnum():
            raise InvalidSeller(f"VAT id {vat_id!r} may only hold letters and digits")
        return compact
    prefix = VAT_PREFIX.get(country, country)
    if not compact.startswith(prefix):
        raise InvalidSeller(
            f"VAT id {vat_id!r} is not one of {country}: it must start with {prefix}",
            field="vat_id",
            reason="country_mismatch",
        )
    try:
        return str(eu_vat.validate(compact))
    except StdnumValidationError as exc:
        raise InvalidSeller(
            f"VAT id {vat_id!r} is invalid: {exc}",
            field="vat_id",
            reason=type(exc).__name__,
        ) from exc


@dataclass(frozen=True, slots=True)
class SellerAddress:
    country: str
    city: str
    postcode: str | None = None
    region: str | None = None
    street: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "country", check_country(self.country))
        if not self.city.strip():
            raise InvalidSeller("the address needs a city")

    @property
    def lines(self) -> list[str]:
        """As printed: street lines, postcode and city, region, country."""
        place = " ".join(part for part in (self.postcode, self.city) if part)
        printed = [*self.street, place]
        if self.region:
            printed.append(self.region)
        printed.append(self.country)
        return [line for line in printed if line.strip()]


@dataclass(frozen=True, slots=True)
class TaxRegistration:
    """A registration with a tax authority outside the VAT id (a US state sales-tax permit, a
    Canadian GST/QST number): printed, and kept with the snapshot."""

    country: str
    number: str
    region: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "country", check_country(self.country))
        if not self.number.strip():
            raise InvalidSeller("a tax registration needs a number")


@dataclass(frozen=True, slots=True)
class BankAccount:
    """IBAN and BIC in their normalised form; both checked with schwifty (IBAN: country
    format, length and check digits; BIC: structure and country)."""

    iban: str
    bic: str | None = None

    def __post_init__(self) -> None:
        from schwifty import BIC, IBAN
        from schwifty.exceptions import SchwiftyException

        try:
            iban = IBAN(self.iban)
        except (SchwiftyException, ValueError) as exc:
            raise InvalidSeller(
                f"IBAN {self.iban!r} is invalid: {exc}", field="iban", reason=type(exc).__name__
            ) from exc
        object.__setattr__(self, "iban", iban.compact)
        if self.bic is not None:
            try:
                bic = BIC(self.bic)
            except (SchwiftyException, ValueError) as exc:
                raise InvalidSeller(
                    f"BIC {self.bic!r} is invalid: {exc}", field="bic", reason=type(exc).__name__
                ) from exc
            object.__setattr__(self, "bic", bic.compact)

    @classmethod
    def stored(cls, iban: str, bic: str | None = None) -> BankAccount:
        """The account as stored: checked and normalised when it was written, so not checked
        again; a process that only reads sellers never loads schwifty (issue 11, RSS)."""
        account = object.__new__(cls)
        object.__setattr__(account, "iban", iban)
        object.__setattr__(account, "bic", bic)
        return account

    @property
    def iban_formatted(self) -> str:
        from schwifty import IBAN

        return str(IBAN(self.iban).formatted)


@dataclass(frozen=True, slots=True)
class SellerSnapshot:
    """What an invoice keeps of its seller: the identity printed on the document."""

    seller_id: str
    legal_name: str
    address: SellerAddress
    vat_id: str | None = None
    tax_registrations: tuple[TaxRegistration, ...] = ()
    email: str | None = None
    phone: str | None = None
    bank_account: BankAccount | None = None
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        a, bank = self.address, self.bank_account
        return {
            "seller_id": self.seller_id,
            "legal_name": self.legal_name,
            "address": {
                "country": a.country,
                "region": a.region,
                "postcode": a.postcode,
                "city": a.city,
                "street": list(a.street),
            },
            "vat_id": self.vat_id,
            "tax_registrations": [
                {"country": r.country, "region": r.region, "number": r.number}
                for r in self.tax_registrations
            ],
            "email": self.email,
            "phone": self.phone,
            "bank_account": None if bank is None else {"iban": bank.iban, "bic": bank.bic},
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SellerSnapshot:
        a, bank = data["address"], data.get("bank_account")
        return cls(
            seller_id=data["seller_id"],
            legal_name=data["legal_name"],
            address=SellerAddress(
                country=a["country"],
                city=a["city"],
                postcode=a.get("postcode"),
                region=a.get("region"),
                street=tuple(a.get("street") or ()),
            ),
            vat_id=data.get("vat_id"),
            tax_registrations=tuple(
                TaxRegistration(r["country"], r["number"], r.get("region"))
                for r in data.get("tax_registrations") or ()
            ),
            email=data.get("email"),
            phone=data.get("phone"),
            bank_account=None
            if bank is None
            else BankAccount.stored(bank["iban"], bank.get("bic")),
            version=int(data.get("version", 1)),
        )


@dataclass(frozen=True, slots=True)
class Seller:
    """A legal entity of the tenant. `series` names the number series of each document
    type; `version` counts changes (the snapshot records which version an invoice took)."""

    id: str
    tenant_id: str
    legal_name: str
    address: SellerAddress
    created_at: datetime
    updated_at: datetime
    vat_id: str | None = None
    tax_registrations: tuple[TaxRegistration, ...] = ()
    email: str | None = None
    phone: str | None = None
    bank_account: BankAccount | None = None
    default_currency: str | None = None
    language: str = "en"
    invoice_series: str = DEFAULT_SERIES
    credit_note_series: str = DEFAULT_CREDIT_NOTE_SERIES
    is_default: bool = False
    active: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        if not self.legal_name.strip():
            raise InvalidSeller("a seller needs a legal name")
        if self.vat_id is not None:
            object.__setattr__(self, "vat_id", check_vat_id(self.vat_id, self.address.country))
        if self.default_currency is not None:
            try:
                object.__setattr__(self, "default_currency", check_currency(self.default_currency))
            except UnknownCurrency as exc:
                raise InvalidSeller(str(exc), field="default_currency") from exc
        if not _LANGUAGE.fullmatch(self.language):
            raise InvalidSeller(
                f"language {self.language!r} must be a language tag such as en or de-AT"
            )
        for name in ("invoice_series", "credit_note_series"):
            try:
                object.__setattr__(self, name, check_series(getattr(self, name)))
            except InvalidInvoice as exc:
                raise InvalidSeller(str(exc), field=name) from exc

    @classmethod
    def stored(cls, *, vat_id: str | None, **fields: Any) -> Seller:
        """The seller as stored: its VAT id was checked and normalised when it was written, so
        it is not checked again; a process that only reads sellers never loads python-stdnum
        (issue 11, RSS). Everything else is checked as ever."""
        seller = cls(vat_id=None, **fields)
        object.__setattr__(seller, "vat_id", vat_id)
        return seller

    def stamped(self, tenant_id: str, at: datetime) -> Seller:
        """This seller for `tenant_id`, created and changed `at`: what was checked stays as it
        was, so it is not checked again."""
        seller = copy.copy(self)
        for name, value in (("tenant_id", tenant_id), ("created_at", at), ("updated_at", at)):
            object.__setattr__(seller, name, value)
        return seller

    def series_for(self, document_type: DocumentType) -> str:
        if document_type is DocumentType.CREDIT_NOTE:
            return self.credit_note_series
        return self.invoice_series

    def changed(self, at: datetime, **changes: Any) -> Seller:
        """A new version with `changes` applied and checked again."""
        return replace(self, **changes, updated_at=at, version=self.version + 1)

    def snapshot(self) -> SellerSnapshot:
        return SellerSnapshot(
            seller_id=self.id,
            legal_name=self.legal_name,
            address=self.address,
            vat_id=self.vat_id,
            tax_registrations=self.tax_registrations,
            email=self.email,
            phone=self.phone,
            bank_account=self.bank_account,
            version=self.version,
        )
