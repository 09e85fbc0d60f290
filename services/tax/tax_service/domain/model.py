"""The tax domain: jurisdictions, rules, calculation requests and results.

Pure values (frozen dataclasses, Decimal, Money). Constructors validate, so an object that
exists is one the calculator can trust.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from billing_common.money import Money, check_currency
from tax_service.domain.countries import ISO_3166_ALPHA2
from tax_service.domain.errors import (
    InvalidCalculationRequest,
    InvalidJurisdiction,
    InvalidRule,
    TaxIdRequired,
)

# ISO 3166-2 subdivision part ("CA" in US-CA, "QC" in CA-QC): one to three letters or digits.
_REGION = re.compile(r"^[A-Z0-9]{1,3}$")
# Categories are free strings, normalised to lower case so "Food" and "food" are one category.
_CATEGORY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# External keys look like Kubernetes object names, so the operator can use a resource's name.
_KEY = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$")

MAX_NAME_LENGTH: Final = 200
MAX_PRIORITY: Final = 1_000_000
# A rate is a fraction of the base; above 100 % is far more likely a typo (19 for 0.19).
MAX_RATE: Final = Decimal(1)
MAX_RATE_PLACES: Final = 8
MAX_LINES: Final = 1000
MAX_LINE_ID_LENGTH: Final = 64
MAX_DESCRIPTION_LENGTH: Final = 500
MAX_QUANTITY: Final = Decimal(1_000_000_000)
# Bounded decimal places keep every product exact inside the calculator's 50-digit context.
MAX_QUANTITY_PLACES: Final = 6
MAX_UNIT_PRICE_PLACES: Final = 10
MAX_REFERENCE_LENGTH: Final = 128
MAX_CUSTOMER_FIELD_LENGTH: Final = 128


class PriceMode(StrEnum):
    EXCLUSIVE = "exclusive"  # prices are net; tax is added
    INCLUSIVE = "inclusive"  # prices are gross; tax is backed out


class TaxRounding(StrEnum):
    """Where a calculation rounds its taxes (see calculator)."""

    PER_BREAKDOWN = "per_breakdown"  # once per VAT category and rate (EN 16931); default
    PER_LINE = "per_line"  # once per line and tax, as the engine did before issue 13


class TaxStatus(StrEnum):
    STANDARD = "standard"
    EXEMPT = "exempt"
    REVERSE_CHARGE = "reverse_charge"


class Exemption(StrEnum):
    EXEMPT_CUSTOMER = "exempt_customer"
    ZERO_RATED = "zero_rated"
    REVERSE_CHARGE = "reverse_charge"
    INTRA_EU_SUPPLY = "intra_eu_supply"
    EXPORT = "export"
    OUT_OF_SCOPE = "out_of_scope"


class Supply(StrEnum):
    """What a rule's category sells: it decides between reverse charge (services) and an
    intra-community supply (goods), and whether a sale abroad is an export."""

    GOODS = "goods"
    SERVICES = "services"


class CustomerKind(StrEnum):
    BUSINESS = "business"
    CONSUMER = "consumer"


class VatCategory(StrEnum):
    """EN 16931 VAT category codes (UNCL5305 subset, BT-118 / BT-151)."""

    STANDARD = "S"
    ZERO_RATED = "Z"
    EXEMPT = "E"
    REVERSE_CHARGE = "AE"
    INTRA_COMMUNITY = "K"
    EXPORT = "G"
    OUT_OF_SCOPE = "O"


class Treatment(StrEnum):
    """How the engine treats a supply (see vat_treatment's decision table)."""

    DOMESTIC = "domestic"
    INTRA_EU_REVERSE_CHARGE = "intra_eu_reverse_charge"
    INTRA_EU_SUPPLY_OF_GOODS = "intra_eu_supply_of_goods"
    EXPORT = "export"
    OUT_OF_SCOPE = "out_of_scope"
    EXEMPT = "exempt"


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only reach here
    return max(0, -exponent)


def normalize_category(category: str) -> str:
    text = category.strip().lower()
    if not _CATEGORY.fullmatch(text):
        raise InvalidRule(
            f"category {category!r} must be 1-64 characters: lower-case letters, digits, "
            "'_', '.', '-'",
            field="category",
        )
    return text


def normalize_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise InvalidRule(
            f"key {key!r} must be 1-253 characters: lower-case letters, digits, '.', '_', '-', "
            "starting and ending with a letter or digit",
            field="key",
        )
    return key


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """A country (ISO 3166-1 alpha-2) and optionally a region (the ISO 3166-2 subdivision
    part, e.g. "CA" for California in US-CA)."""

    country: str
    region: str | None = None

    def __post_init__(self) -> None:
        country = self.country.strip().upper() if isinstance(self.country, str) else ""
        if country not in ISO_3166_ALPHA2:
            raise InvalidJurisdiction(
                f"country {self.country!r} is not an ISO 3166-1 alpha-2 code (e.g. DE, US, GB)",
                field="country",
            )
        region = self.region.strip().upper() if isinstance(self.region, str) else None
        if region == "":
            region = None
        if region is not None and not _REGION.fullmatch(region):
            raise InvalidJurisdiction(
                f"region {self.region!r} must be the ISO 3166-2 subdivision part: 1-3 letters "
                "or digits (e.g. CA for US-CA, QC for CA-QC)",
                field="region",
            )
        object.__setattr__(self, "country", country)
        object.__setattr__(self, "region", region)

    def covers(self, other: Jurisdiction) -> bool:
        """Whether a rule for this jurisdiction applies in `other`: a country-wide rule
        applies in every region of the country, a regional rule only in its region."""
        if self.country != other.country:
            return False
        return self.region is None or self.region == other.region

    def __str__(self) -> str:
        return self.country if self.region is None else f"{self.country}-{self.region}"


@dataclass(frozen=True, slots=True)
class TaxRule:
    """One tax on one product category in one jurisdiction for a period.

    `rate` is a fraction (0.19 is 19 %). A rule with rate 0 must be declared `zero_rated`
    (and a zero-rated rule must have rate 0): a category is never untaxed by accident.
    `priority` orders the taxes of a line, higher first (as discounts); a `compound` tax is
    charged on the net plus the taxes ordered before it. Validity is half-open: from
    `valid_from` (inclusive; None: always) up to `valid_to`, the first day the rule no longer
    applies (None: no end), so a rate change is `valid_to` of the old rule == `valid_from` of
    the new one. `supply` says whether the category is goods or services (default)."""

    id: str
    jurisdiction: Jurisdiction
    category: str
    name: str
    rate: Decimal
    valid_from: date | None
    valid_to: date | None = None
    zero_rated: bool = False
    compound: bool = False
    priority: int = 0
    key: str | None = None
    supply: Supply = Supply.SERVICES
    created_at: datetime | None = field(default=None, compare=False)
    updated_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "category", normalize_category(self.category))
        name = self.name.strip()
        if not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidRule(f"name must be 1-{MAX_NAME_LENGTH} characters", field="name")
        object.__setattr__(self, "name", name)
        if self.key is not None:
            object.__setattr__(self, "key", normalize_key(self.key))
        rate = self.rate
        if not isinstance(rate, Decimal) or not rate.is_finite():
            raise InvalidRule("rate must be a finite decimal fraction", field="rate")
        if rate < 0 or rate > MAX_RATE:
            raise InvalidRule(
                f"rate {rate} must be a fraction between 0 and 1 (0.19 is 19 %)", field="rate"
            )
        if _places(rate) > MAX_RATE_PLACES:
            raise InvalidRule(
                f"rate {rate} has more than {MAX_RATE_PLACES} decimal places", field="rate"
            )
        # One spelling per rate ("0.190" and "0.19" are the same rule), so that an upsert of
        # an unchanged definition is recognised as unchanged.
        object.__setattr__(self, "rate", _canonical(rate))
        if self.zero_rated and rate != 0:
            raise InvalidRule("a zero-rated rule must have rate 0", field="rate")
        if rate == 0 and not self.zero_rated:
            raise InvalidRule(
                "a rate of 0 must be declared with zero_rated: true, so that untaxed "
                "categories are always explicit",
                field="zero_rated",
            )
        if (
            self.valid_from is not None
            and self.valid_to is not None
            and self.valid_to <= self.valid_from
        ):
            raise InvalidRule(
                "valid_to (the first day the rule no longer applies) must be after valid_from",
                field="valid_to",
            )
        if not -MAX_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise InvalidRule(f"priority must be within ±{MAX_PRIORITY}", field="priority")

    def is_valid_on(self, day: date) -> bool:
        started = self.valid_from is None or self.valid_from <= day
        return started and (self.valid_to is None or day < self.valid_to)

    def applies(self, jurisdiction: Jurisdiction, day: date) -> bool:
        return self.jurisdiction.covers(jurisdiction) and self.is_valid_on(day)

    def same_definition(self, other: TaxRule) -> bool:
        """Equal in everything an administrator defines (not id, key or timestamps)."""
        return (
            self.jurisdiction == other.jurisdiction
            and self.category == other.category
            and self.name == other.name
            and self.rate == other.rate
            and self.valid_from == other.valid_from
            and self.valid_to == other.valid_to
            and self.zero_rated == other.zero_rated
            and self.compound == other.compound
            and self.priority == other.priority
            and self.supply == other.supply
        )

    def order_key(self) -> tuple[int, int, str, str]:
        """Higher priority first (the convention of discounts too); on a tie the country-wide
        tax before the regional one, then by name and id so the order never depends on the
        database."""
        return (-self.priority, 0 if self.jurisdiction.region is None else 1, self.name, self.id)


def _canonical(value: Decimal) -> Decimal:
    normalised = value.normalize()
    exponent = normalised.as_tuple().exponent
    # normalize() writes 10 as 1E+1; give such values their integer spelling back.
    if isinstance(exponent, int) and exponent > 0:
        return normalised.quantize(Decimal(1))
    return normalised


@dataclass(frozen=True, slots=True)
class Customer:
    """The buyer. `location` None: in the calculation's jurisdiction. `kind` None: a
    business when it has a tax id, else a consumer (see `resolved_kind`)."""

    id: str | None = None
    tax_status: TaxStatus = TaxStatus.STANDARD
    tax_id: str | None = None
    location: Jurisdiction | None = None
    kind: CustomerKind | None = None
    exemption_certificate: str | None = None

    def __post_init__(self) -> None:
        tax_id = self.tax_id.strip() if self.tax_id is not None else None
        object.__setattr__(self, "tax_id", tax_id or None)
        certificate = self.exemption_certificate
        certificate = certificate.strip() if certificate is not None else None
        object.__setattr__(self, "exemption_certificate", certificate or None)
        for name, value in (
            ("customer.id", self.id),
            ("customer.tax_id", self.tax_id),
            ("customer.exemption_certificate", self.exemption_certificate),
        ):
            if value is not None and len(value) > MAX_CUSTOMER_FIELD_LENGTH:
                raise InvalidCalculationRequest(
                    f"{name} is longer than {MAX_CUSTOMER_FIELD_LENGTH} characters", field=name
                )
        if self.tax_status == TaxStatus.REVERSE_CHARGE and self.tax_id is None:
            raise TaxIdRequired(
                "reverse charge needs the customer's tax id (customer.tax_id)",
                field="customer.tax_id",
            )

    @property
    def resolved_kind(self) -> CustomerKind:
        if self.kind is not None:
            return self.kind
        return CustomerKind.BUSINESS if self.tax_id is not None else CustomerKind.CONSUMER


@dataclass(frozen=True, slots=True)
class Seller:
    """Who supplies: where it is established, and its VAT id (with the country prefix)."""

    location: Jurisdiction
    vat_id: str | None = None

    def __post_init__(self) -> None:
        vat_id = self.vat_id.strip() if self.vat_id is not None else None
        if vat_id is not None and len(vat_id) > MAX_CUSTOMER_FIELD_LENGTH:
            raise InvalidCalculationRequest(
                f"seller.vat_id is longer than {MAX_CUSTOMER_FIELD_LENGTH} characters",
                field="seller.vat_id",
            )
        object.__setattr__(self, "vat_id", vat_id or None)


@dataclass(frozen=True, slots=True)
class LineInput:
    id: str
    unit_price: Money
    quantity: Decimal
    category: str
    description: str | None = None

    def __post_init__(self) -> None:
        if not self.id or len(self.id) > MAX_LINE_ID_LENGTH:
            raise InvalidCalculationRequest(
                f"line id must be 1-{MAX_LINE_ID_LENGTH} characters", field="lines.id"
            )
        where = f"line {self.id!r}"
        try:
            object.__setattr__(self, "category", normalize_category(self.category))
        except InvalidRule as exc:
            raise InvalidCalculationRequest(f"{where}: {exc}", field="lines.category") from exc
        if self.unit_price.is_negative:
            raise InvalidCalculationRequest(
                f"{where}: unit_price must not be negative", field="lines.unit_price"
            )
        if _places(self.unit_price.amount) > MAX_UNIT_PRICE_PLACES:
            raise InvalidCalculationRequest(
                f"{where}: unit_price has more than {MAX_UNIT_PRICE_PLACES} decimal places",
                field="lines.unit_price",
            )
        quantity = self.quantity
        if not quantity.is_finite() or quantity <= 0 or quantity > MAX_QUANTITY:
            raise InvalidCalculationRequest(
                f"{where}: quantity must be greater than 0 and at most {MAX_QUANTITY}",
                field="lines.quantity",
            )
        if _places(quantity) > MAX_QUANTITY_PLACES:
            raise InvalidCalculationRequest(
                f"{where}: quantity has more than {MAX_QUANTITY_PLACES} decimal places",
                field="lines.quantity",
            )
        if self.description is not None and len(self.description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidCalculationRequest(
                f"{where}: description is longer than {MAX_DESCRIPTION_LENGTH} characters",
                field="lines.description",
            )


@dataclass(frozen=True, slots=True)
class CalculationRequest:
    currency: str
    jurisdiction: Jurisdiction
    customer: Customer
    price_mode: PriceMode
    date: date
    lines: tuple[LineInput, ...]
    reference: str | None = None
    seller: Seller | None = None
    """None: the seller is in `jurisdiction` (a domestic supply, as before sellers existed)."""
    rounding: TaxRounding = TaxRounding.PER_BREAKDOWN

    def __post_init__(self) -> None:
        object.__setattr__(self, "currency", check_currency(self.currency))
        if not self.lines:
            raise InvalidCalculationRequest("a calculation needs at least one line", field="lines")
        if len(self.lines) > MAX_LINES:
            raise InvalidCalculationRequest(
                f"a calculation has at most {MAX_LINES} lines", field="lines"
            )
        seen: set[str] = set()
        for line in self.lines:
            if line.unit_price.currency != self.currency:
                raise InvalidCalculationRequest(
                    f"line {line.id!r} is priced in {line.unit_price.currency}, "
                    f"the calculation in {self.currency}",
                    field="lines.unit_price",
                )
            if line.id in seen:
                raise InvalidCalculationRequest(
                    f"line id {line.id!r} appears more than once", field="lines.id"
                )
            seen.add(line.id)
        if self.reference is not None and len(self.reference) > MAX_REFERENCE_LENGTH:
            raise InvalidCalculationRequest(
                f"reference is longer than {MAX_REFERENCE_LENGTH} characters", field="reference"
            )

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(line.category for line in self.lines)

    @property
    def seller_location(self) -> Jurisdiction:
        return self.seller.location if self.seller is not None else self.jurisdiction

    @property
    def customer_location(self) -> Jurisdiction:
        location = self.customer.location
        return location if location is not None else self.jurisdiction


@dataclass(frozen=True, slots=True)
class AppliedTax:
    """One rule's tax on one line, with the rule's name and rate as they were at the time
    (the history must not change when the rule is edited later)."""

    rule_id: str
    name: str
    rate: Decimal
    amount: Money
    compound: bool = False
    zero_rated: bool = False


@dataclass(frozen=True, slots=True)
class LineVat:
    """A line's EN 16931 classification: category (BT-151), exemption reason text and VATEX
    code (BT-120/BT-121; None for S and Z), and the treatment that led to it."""

    category: VatCategory
    treatment: Treatment
    reason: str | None = None
    reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class LineResult:
    line: LineInput
    net: Money
    tax: Money
    gross: Money
    exemption: Exemption | None
    taxes: tuple[AppliedTax, ...]
    vat: LineVat


@dataclass(frozen=True, slots=True)
class VatIdCheck:
    """The evidence for a VAT id the decision relied on: who confirmed it, when, and VIES's
    consultation number when there is one. `valid` False: the register does not know it."""

    vat_id: str
    valid: bool
    source: str  # "vies" | "sandbox" | "format-only"
    checked_at: datetime
    request_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BreakdownEntry:
    """One VAT category and rate of a calculation (EN 16931 BG-23)."""

    category: VatCategory
    rate: Decimal
    taxable: Money
    tax: Money
    reason: str | None
    reason_code: str | None


def _line_rate(result: LineResult) -> Decimal:
    # A line's nominal rate: its rules' rates added up (CA-QC: GST 5 % + QST 9.975 %); a
    # relieved line is charged nothing, whatever its rules say.
    if result.vat.category not in (VatCategory.STANDARD, VatCategory.ZERO_RATED):
        return Decimal(0)
    return _canonical(sum((tax.rate for tax in result.taxes), Decimal(0)))


def breakdown(lines: tuple[LineResult, ...], currency: str) -> tuple[BreakdownEntry, ...]:
    """Lines grouped by category, rate and reason, in order of first appearance: each line
    is in exactly one group, so the groups add up to the totals exactly."""
    zero = Money.zero(currency).rounded()
    groups: dict[tuple[VatCategory, Decimal, str | None, str | None], tuple[Money, Money]] = {}
    for result in lines:
        key = (result.vat.category, _line_rate(result), result.vat.reason, result.vat.reason_code)
        taxable, tax = groups.get(key, (zero, zero))
        groups[key] = (taxable + result.net, tax + result.tax)
    return tuple(
        BreakdownEntry(category, rate, taxable, tax, reason, code)
        for (category, rate, reason, code), (taxable, tax) in groups.items()
    )


def overall_treatment(lines: tuple[LineResult, ...]) -> Treatment:
    """The calculation's treatment: its lines' when they agree; for a mix (goods and
    services on one invoice) the first of _TREATMENT_PRECEDENCE that occurs."""
    found = {result.vat.treatment for result in lines}
    return next(t for t in _TREATMENT_PRECEDENCE if t in found)


_TREATMENT_PRECEDENCE: Final = (
    Treatment.EXEMPT,
    Treatment.INTRA_EU_REVERSE_CHARGE,
    Treatment.INTRA_EU_SUPPLY_OF_GOODS,
    Treatment.EXPORT,
    Treatment.OUT_OF_SCOPE,
    Treatment.DOMESTIC,
)


@dataclass(frozen=True, slots=True)
class TaxCalculation:
    """A stored calculation: the request and its result, per tenant."""

    id: str
    request: CalculationRequest
    lines: tuple[LineResult, ...]
    total_net: Money
    total_tax: Money
    total_gross: Money
    created_at: datetime
    treatment: Treatment = Treatment.DOMESTIC
    evidence: VatIdCheck | None = None

    @property
    def breakdown(self) -> tuple[BreakdownEntry, ...]:
        return breakdown(self.lines, self.request.currency)

    @classmethod
    def of(
        cls,
        *,
        calculation_id: str,
        request: CalculationRequest,
        lines: tuple[LineResult, ...],
        created_at: datetime,
        evidence: VatIdCheck | None = None,
    ) -> TaxCalculation:
        zero = Money.zero(request.currency)
        total_net = sum((line.net for line in lines), zero)
        total_tax = sum((line.tax for line in lines), zero)
        # Money refuses sums above MAX_AMOUNT (MoneyError, a 422), so totals stay storable.
        total_gross = sum((line.gross for line in lines), zero)
        return cls(
            id=calculation_id,
            request=request,
            lines=lines,
            total_net=total_net,
            total_tax=total_tax,
            total_gross=total_gross,
            created_at=created_at,
            treatment=overall_treatment(lines),
            evidence=evidence,
        )
