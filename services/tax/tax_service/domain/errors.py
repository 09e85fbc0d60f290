"""Domain exceptions of the tax service. Each says its HTTP status; the class name becomes
the problem type (`UnknownCategory` -> `/problems/unknown-category`), and keyword arguments
become extra problem members (billing_common.errors)."""

from __future__ import annotations

from datetime import date

from billing_common.errors import DomainError


class TaxError(DomainError):
    """Base of every tax domain error (422 unless it says otherwise)."""


class InvalidRule(TaxError):
    """A rule definition that cannot be stored (bad rate, dates, codes...)."""


class InvalidJurisdiction(TaxError):
    """A country or region code that is not well formed or not assigned."""


class InvalidCalculationRequest(TaxError):
    """A calculation request that is well typed but makes no sense (duplicate line ids,
    non-positive quantity, more lines than allowed...)."""


class TaxIdRequired(TaxError):
    """Reverse charge needs the customer's tax id: it is what makes the buyer liable."""


class UnknownJurisdiction(TaxError):
    """No rule at all covers the jurisdiction on the date: never guess a 0 % rate."""

    def __init__(self, jurisdiction: str, on: date) -> None:
        super().__init__(
            f"no tax rules for jurisdiction {jurisdiction} valid on {on.isoformat()}",
            jurisdiction=jurisdiction,
            date=on.isoformat(),
        )


class UnknownCategory(TaxError):
    """The jurisdiction has rules, but none for this category (and it is not declared
    zero-rated): never guess a 0 % rate."""

    def __init__(self, category: str, jurisdiction: str, on: date, line_id: str) -> None:
        super().__init__(
            f"no tax rule for category {category!r} in {jurisdiction} valid on "
            f"{on.isoformat()} (line {line_id!r}); add a rule, or a zero-rated rule if the "
            "category is not taxed",
            category=category,
            jurisdiction=jurisdiction,
            date=on.isoformat(),
            line_id=line_id,
        )


class RuleNotFound(TaxError):
    status = 404

    def __init__(self, reference: str) -> None:
        super().__init__(f"no tax rule {reference}")


class DuplicateRuleKey(TaxError):
    status = 409

    def __init__(self, key: str) -> None:
        super().__init__(f"a tax rule with key {key!r} already exists", key=key)


class CalculationNotFound(TaxError):
    status = 404

    def __init__(self, calculation_id: str) -> None:
        super().__init__(f"no tax calculation {calculation_id}")


class InvalidVatId(TaxError):
    """A VAT id that fails python-stdnum's format/checksum check for its country, or that
    the VAT register (VIES) does not know."""

    def __init__(self, vat_id: str, reason: str, *, field: str) -> None:
        super().__init__(f"{field} {vat_id!r} is not a valid VAT id: {reason}", field=field)


class ReverseChargeNotConfirmed(TaxError):
    """A reverse-charge claim the parties' data do not support: `missing` says what would
    make it one (each item: the field, and what it must be)."""

    def __init__(self, missing: list[dict[str, str]]) -> None:
        details = "; ".join(f"{item['field']}: {item['detail']}" for item in missing)
        super().__init__(f"reverse charge cannot be confirmed: {details}", missing=missing)


class ExemptionNotConfirmed(TaxError):
    """An exempt customer without the reference of its exemption certificate."""

    def __init__(self, missing: list[dict[str, str]]) -> None:
        details = "; ".join(f"{item['field']}: {item['detail']}" for item in missing)
        super().__init__(f"the exemption cannot be confirmed: {details}", missing=missing)
