"""E-invoicing data of the domain: the formats, the buyer's structured postal address (BG-8)
and reference (BT-10) an invoice keeps, and the customer's default e-invoice format.

Countries are checked against ISO 3166-1 alpha-2 with `pycountry` (the ISO code list as a
library), not only by their shape, so "XX" or "UK" are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from invoice_service.domain.errors import InvalidInvoice

MAX_STREET_LINES: Final = 3  # BT-50, BT-51, BT-163
MAX_BUYER_REFERENCE: Final = 200


class EInvoiceFormat(StrEnum):
    FACTURX = "facturx"  # PDF/A-3 with factur-x.xml (CII, EN 16931 profile)
    XRECHNUNG = "xrechnung"  # XRechnung 3.0 CII
    UBL = "ubl"  # Peppol BIS Billing 3.0 UBL (Invoice, or CreditNote for credit notes)


class DefaultEInvoiceFormat(StrEnum):
    """What a customer receives by default besides the PDF: nothing, or one format."""

    NONE = "none"
    FACTURX = "facturx"
    XRECHNUNG = "xrechnung"
    UBL = "ubl"

    def einvoice_format(self) -> EInvoiceFormat | None:
        return None if self is DefaultEInvoiceFormat.NONE else EInvoiceFormat(self.value)


def check_iso_country(country: str, field: str) -> str:
    """The ISO 3166-1 alpha-2 code, upper case; InvalidInvoice naming `field` otherwise."""
    import pycountry  # deferred: the code list is loaded by the e-invoice settings only

    code = country.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise InvalidInvoice(
            f"{field} {country!r} is not an ISO 3166-1 alpha-2 country code", field=field
        )
    return code


def _text(value: str | None, field: str, max_length: int) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        raise InvalidInvoice(f"{field} cannot be blank", field=field)
    if len(text) > max_length or "\n" in text or "\r" in text:
        raise InvalidInvoice(
            f"{field} must be one line of at most {max_length} characters", field=field
        )
    return text


@dataclass(frozen=True, slots=True)
class PostalAddress:
    """The buyer's postal address, BG-8 of EN 16931."""

    country: str  # BT-55 (ISO 3166-1 alpha-2)
    street: tuple[str, ...] = ()  # BT-50 address line 1, BT-51 line 2, BT-163 line 3
    city: str | None = None  # BT-52
    postcode: str | None = None  # BT-53
    subdivision: str | None = None  # BT-54 country subdivision (a state, a region)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "country", check_iso_country(self.country, "postal_address.country")
        )
        if len(self.street) > MAX_STREET_LINES:
            raise InvalidInvoice(
                f"postal_address.street has at most {MAX_STREET_LINES} lines",
                field="postal_address.street",
            )
        street = tuple(_text(line, "postal_address.street", 200) or "" for line in self.street)
        object.__setattr__(self, "street", street)
        object.__setattr__(self, "city", _text(self.city, "postal_address.city", 100))
        object.__setattr__(self, "postcode", _text(self.postcode, "postal_address.postcode", 16))
        object.__setattr__(
            self, "subdivision", _text(self.subdivision, "postal_address.subdivision", 100)
        )


def check_buyer_reference(value: str | None) -> str | None:
    """BT-10: the buyer's reference (for XRechnung the Leitweg-ID), one line."""
    return _text(value, "buyer_reference", MAX_BUYER_REFERENCE)


@dataclass(frozen=True, slots=True)
class CustomerEInvoiceSettings:
    """A customer's default e-invoice format: offered with every invoice finalized for the
    customer (when the invoice has the data the format needs), and named in the
    `billing.invoice.finalized.v1` event."""

    customer_id: str
    default_format: DefaultEInvoiceFormat
    updated_at: datetime | None = None
    updated_by: str | None = None
