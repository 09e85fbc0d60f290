"""Which VAT treatment a supply gets: domestic, intra-EU reverse charge, intra-community
supply of goods, export, out of scope or exempt — decided from the seller, the customer and
the category's supply kind (goods or services), never taken on the caller's word.

The decision table (services/tax/README.md, "VAT treatment"), first matching row wins:

| # | tax_status     | seller / customer                                     | goods | services |
|---|----------------|-------------------------------------------------------|-------|----------|
| 1 | exempt         | any (certificate needed when a seller is given)       | E     | E        |
| 2 | reverse_charge | EU seller, business in another EU state, valid VAT id | K     | AE       |
|   |                | anything else: refused, `missing` says why            |       |          |
| 3 | standard       | EU seller, business in another EU state, valid VAT id | K     | AE       |
| 4 | standard       | EU seller, business outside the EU                    | G     | O        |
| 5 | standard       | EU seller, consumer outside the EU                    | G     | S / Z    |
| 6 | standard       | non-EU seller, customer outside the jurisdiction      | O     | O        |
| 7 | standard       | otherwise (domestic, B2C in the EU, no VAT id)        | S / Z | S / Z    |

S / Z: taxed by the jurisdiction's rules (Z when every rule of the line is zero-rated).
An absent seller is in the jurisdiction; an absent customer country is the jurisdiction's.
Pure: the VIES answer (an I/O port) comes in as a VatIdCheck.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError
from stdnum.util import clean

from tax_service.domain.errors import (
    ExemptionNotConfirmed,
    InvalidVatId,
    ReverseChargeNotConfirmed,
)
from tax_service.domain.model import (
    CalculationRequest,
    CustomerKind,
    Exemption,
    LineVat,
    Supply,
    TaxStatus,
    Treatment,
    VatCategory,
    VatIdCheck,
)

# The 27 member states (ISO 3166-1); Greece's VAT ids are prefixed EL.
EU_MEMBER_STATES: Final = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()  # noqa: SIM905
)
_VAT_PREFIX: Final = {"GR": "EL"}

_DIRECTIVE = "Council Directive 2006/112/EC"
REVERSE_CHARGE: Final = LineVat(
    VatCategory.REVERSE_CHARGE,
    Treatment.INTRA_EU_REVERSE_CHARGE,
    f"Reverse charge — Article 196 of {_DIRECTIVE}",
    "VATEX-EU-AE",
)
INTRA_COMMUNITY_SUPPLY: Final = LineVat(
    VatCategory.INTRA_COMMUNITY,
    Treatment.INTRA_EU_SUPPLY_OF_GOODS,
    f"Intra-community supply of goods — Article 138 of {_DIRECTIVE}",
    "VATEX-EU-IC",
)
EXPORT: Final = LineVat(
    VatCategory.EXPORT,
    Treatment.EXPORT,
    f"Export of goods outside the EU — Article 146 of {_DIRECTIVE}",
    "VATEX-EU-G",
)
SERVICES_OUTSIDE_EU: Final = LineVat(
    VatCategory.OUT_OF_SCOPE,
    Treatment.OUT_OF_SCOPE,
    f"Not subject to EU VAT: services to a business outside the EU — Article 44 of {_DIRECTIVE}",
    "VATEX-EU-O",
)

# The legacy `exemption` field of a line, for each relieved category.
EXEMPTION_OF: Final = {
    VatCategory.EXEMPT: Exemption.EXEMPT_CUSTOMER,
    VatCategory.REVERSE_CHARGE: Exemption.REVERSE_CHARGE,
    VatCategory.INTRA_COMMUNITY: Exemption.INTRA_EU_SUPPLY,
    VatCategory.EXPORT: Exemption.EXPORT,
    VatCategory.OUT_OF_SCOPE: Exemption.OUT_OF_SCOPE,
}


class Scenario(StrEnum):
    """The rows of the decision table, before the supply kind is looked at."""

    EXEMPT = "exempt"
    INTRA_EU_B2B = "intra_eu_b2b"
    EXPORT_TO_BUSINESS = "export_to_business"
    EXPORT_TO_CONSUMER = "export_to_consumer"
    ABROAD = "abroad"
    DOMESTIC = "domestic"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the scenario depends on, resolved from a request (countries are ISO codes)."""

    status: TaxStatus
    seller_country: str
    customer_country: str
    jurisdiction_country: str
    kind: CustomerKind
    has_tax_id: bool

    @classmethod
    def of(cls, request: CalculationRequest) -> Facts:
        return cls(
            status=request.customer.tax_status,
            seller_country=request.seller_location.country,
            customer_country=request.customer_location.country,
            jurisdiction_country=request.jurisdiction.country,
            kind=request.customer.resolved_kind,
            has_tax_id=request.customer.tax_id is not None,
        )

    @property
    def intra_eu(self) -> bool:
        """Seller and customer in two different member states."""
        return (
            self.seller_country in EU_MEMBER_STATES
            and self.customer_country in EU_MEMBER_STATES
            and self.seller_country != self.customer_country
        )

    @property
    def intra_eu_b2b(self) -> bool:
        return self.intra_eu and self.kind is CustomerKind.BUSINESS and self.has_tax_id


def scenario(facts: Facts) -> Scenario:
    """Rows 1, 3-7 of the table for a request whose claim (row 2) is confirmed or absent."""
    if facts.status is TaxStatus.EXEMPT:
        return Scenario.EXEMPT
    if facts.status is TaxStatus.REVERSE_CHARGE or facts.intra_eu_b2b:
        return Scenario.INTRA_EU_B2B
    if facts.seller_country in EU_MEMBER_STATES and facts.customer_country not in EU_MEMBER_STATES:
        if facts.kind is CustomerKind.BUSINESS:
            return Scenario.EXPORT_TO_BUSINESS
        return Scenario.EXPORT_TO_CONSUMER
    if (
        facts.seller_country not in EU_MEMBER_STATES
        and facts.customer_country != facts.jurisdiction_country
    ):
        return Scenario.ABROAD
    return Scenario.DOMESTIC


def reverse_charge_missing(facts: Facts) -> list[dict[str, str]]:
    """What a reverse-charge claim lacks (empty: nothing, the claim holds so far)."""
    missing: list[dict[str, str]] = []
    if facts.seller_country not in EU_MEMBER_STATES:
        missing.append(
            {
                "field": "seller.country",
                "detail": f"the seller must be in an EU member state (it is in "
                f"{facts.seller_country}; without `seller`, the jurisdiction's country)",
            }
        )
    if facts.customer_country not in EU_MEMBER_STATES:
        missing.append(
            {
                "field": "customer.country",
                "detail": f"the customer must be in an EU member state (it is in "
                f"{facts.customer_country}; without `customer.country`, the jurisdiction's)",
            }
        )
    elif facts.customer_country == facts.seller_country:
        missing.append(
            {
                "field": "customer.country",
                "detail": "the customer must be in another member state than the seller "
                f"(both are in {facts.customer_country})",
            }
        )
    if facts.kind is not CustomerKind.BUSINESS:
        missing.append({"field": "customer.kind", "detail": "the customer must be a business"})
    return missing


@dataclass(frozen=True, slots=True)
class VatDecision:
    """The decision for one request; `for_supply` gives each line's relief."""

    scenario: Scenario
    jurisdiction_country: str = ""
    exemption_certificate: str | None = None

    def for_supply(self, supply: Supply) -> LineVat | None:
        """The line's relief, or None: taxed by the jurisdiction's rules (S or Z)."""
        goods = supply is Supply.GOODS
        match self.scenario:
            case Scenario.EXEMPT:
                certificate = self.exemption_certificate
                reason = (
                    f"Exempt customer — exemption certificate {certificate}"
                    if certificate is not None
                    else "Exempt customer"
                )
                return LineVat(VatCategory.EXEMPT, Treatment.EXEMPT, reason)
            case Scenario.INTRA_EU_B2B:
                return INTRA_COMMUNITY_SUPPLY if goods else REVERSE_CHARGE
            case Scenario.EXPORT_TO_BUSINESS:
                return EXPORT if goods else SERVICES_OUTSIDE_EU
            case Scenario.EXPORT_TO_CONSUMER:
                return EXPORT if goods else None
            case Scenario.ABROAD:
                country = self.jurisdiction_country
                return LineVat(
                    VatCategory.OUT_OF_SCOPE,
                    Treatment.OUT_OF_SCOPE,
                    f"Outside the scope of {country} tax: the customer is outside {country}",
                )
            case Scenario.DOMESTIC:
                return None


TAXED: Final = LineVat(VatCategory.STANDARD, Treatment.DOMESTIC)
ZERO_RATED: Final = LineVat(VatCategory.ZERO_RATED, Treatment.DOMESTIC)


def taxed(*, all_zero_rated: bool) -> LineVat:
    """A line taxed by its rules: Z when every rule is zero-rated, else S."""
    return ZERO_RATED if all_zero_rated else TAXED


# --- VAT ids ------------------------------------------------------------------------------


def vat_prefix(country: str) -> str:
    return _VAT_PREFIX.get(country, country)


def normalize_vat_id(vat_id: str, country: str, *, field: str) -> str:
    """The VAT id in its compact form with the country prefix ("DE136695976"), checked for
    format and checksum by python-stdnum; raises InvalidVatId with stdnum's reason."""
    prefix = vat_prefix(country)
    text = clean(vat_id, " -./,").upper().strip()
    if not text[:2].isalpha():
        text = prefix + text
    if text[:2] != prefix:
        raise InvalidVatId(
            vat_id, f"the prefix {text[:2]} is not {country}'s ({prefix})", field=field
        )
    try:
        return str(eu_vat.validate(text))
    except ValidationError as exc:
        raise InvalidVatId(vat_id, str(exc), field=field) from exc


def vat_id_to_confirm(request: CalculationRequest) -> str | None:
    """Check the VAT ids the decision relies on offline (InvalidVatId when one fails) and
    return the customer's, normalised, when the decision rests on it (rows 2 and 3): the one
    to ask VIES about. None: no online check is needed."""
    seller, facts = request.seller, Facts.of(request)
    if (
        seller is not None
        and seller.vat_id is not None
        and seller.location.country in EU_MEMBER_STATES
    ):
        normalize_vat_id(seller.vat_id, seller.location.country, field="seller.vat_id")
    tax_id = request.customer.tax_id
    claim = facts.status is TaxStatus.REVERSE_CHARGE
    relied = facts.intra_eu_b2b and facts.status is not TaxStatus.EXEMPT
    if tax_id is None or facts.customer_country not in EU_MEMBER_STATES:
        return None
    if not (claim or relied):
        return None
    normalised = normalize_vat_id(tax_id, facts.customer_country, field="customer.tax_id")
    return normalised if facts.intra_eu_b2b else None


def decide(request: CalculationRequest, check: VatIdCheck | None = None) -> VatDecision:
    """The request's VAT decision. `check` is the VIES answer for vat_id_to_confirm's id.
    Raises ReverseChargeNotConfirmed / ExemptionNotConfirmed with what is missing, and
    InvalidVatId when the register does not know the customer's VAT id."""
    facts = Facts.of(request)
    customer = request.customer
    vat_id_to_confirm(request)  # the offline check, whoever calls
    # A request that describes its seller is decided by the engine, so an exemption needs
    # its evidence; one without a seller keeps the behaviour it always had.
    if (
        facts.status is TaxStatus.EXEMPT
        and request.seller is not None
        and customer.exemption_certificate is None
    ):
        raise ExemptionNotConfirmed(
            [
                {
                    "field": "customer.exemption_certificate",
                    "detail": "the reference of the customer's exemption certificate",
                }
            ]
        )
    if facts.status is TaxStatus.REVERSE_CHARGE:
        missing = reverse_charge_missing(facts)
        if missing:
            raise ReverseChargeNotConfirmed(missing)
    if check is not None and not check.valid and facts.status is not TaxStatus.EXEMPT:
        raise InvalidVatId(
            check.vat_id,
            f"the VAT register ({check.source}) does not know it",
            field="customer.tax_id",
        )
    return VatDecision(
        scenario(facts),
        jurisdiction_country=facts.jurisdiction_country,
        exemption_certificate=customer.exemption_certificate,
    )
