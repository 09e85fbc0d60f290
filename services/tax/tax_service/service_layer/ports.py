"""The ports the tax use cases depend on: the repositories and the unit of work as
protocols, and the queries and positions they take. Adapters implement them; bootstrap
wires them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Protocol, Self

from billing_common.events import CloudEvent
from tax_service.domain.model import Jurisdiction, TaxCalculation, TaxRule, VatIdCheck


@dataclass(frozen=True)
class RuleQuery:
    country: str | None = None
    region: str | None = None
    category: str | None = None
    key: str | None = None
    valid_on: date | None = None


@dataclass(frozen=True)
class CalculationQuery:
    reference: str | None = None
    customer_id: str | None = None


CalculationPosition = tuple[datetime, str]
"""A calculation's place in the newest-first history: (created_at, id)."""


class StaleRules(Exception):
    """The rules a calculation used (unconfirmed, see `RuleRepository.for_jurisdiction`)
    were changed meanwhile: nothing was written; calculate again with confirmed rules."""


class RuleRepository(Protocol):
    """One tenant's rules. Every change bumps the tenant's rules version in its
    transaction (see adapters.rule_cache)."""

    async def get(self, rule_id: str) -> TaxRule | None: ...

    async def get_by_key(self, key: str) -> TaxRule | None: ...

    async def add(self, rule: TaxRule) -> None:
        """Insert a new rule (its created_at/updated_at must be set). Raise
        DuplicateRuleKey if its key is taken, even by a concurrent transaction."""

    async def update(self, rule: TaxRule) -> bool:
        """Overwrite the stored rule with this id; False if there is none for the tenant.
        Raise DuplicateRuleKey if its new key is taken."""

    async def delete(self, rule_id: str) -> bool: ...

    async def delete_by_key(self, key: str) -> bool: ...

    async def search(
        self, query: RuleQuery, *, limit: int, offset: int
    ) -> tuple[list[TaxRule], int]:
        """One page of rules in a stable order, and how many match in all."""

    async def for_jurisdiction(
        self, jurisdiction: Jurisdiction, on: date, *, confirmed: bool = True
    ) -> list[TaxRule]:
        """Every rule that covers `jurisdiction` on `on` (country-wide and regional).

        `confirmed=False` lets the repository answer from a copy it has not yet confirmed
        to be the tenant's current rule set; the unit of work's `commit` then raises
        StaleRules (writing nothing) if it was not."""

    async def version(self) -> int:
        """The tenant's rules version (0: its rules were never changed)."""


class CalculationRepository(Protocol):
    """One tenant's calculation history."""

    async def add(self, calculation: TaxCalculation) -> None: ...

    async def get(self, calculation_id: str) -> TaxCalculation | None: ...

    async def discard_for_reference(self, reference: str) -> int:
        """Delete the calculations made for `reference`; return how many."""

    async def history(
        self,
        *,
        limit: int,
        after: CalculationPosition | None = None,
        calculation_query: CalculationQuery | None = None,
    ) -> Sequence[TaxCalculation]:
        """Newest first (created_at, then id, descending); `after` is the position of the
        last item of the previous page (keyset pagination: stable under inserts)."""


class VatIdChecker(Protocol):
    """The online check of a VAT id against the register (VIES). Called outside any
    transaction. Answers valid False only when the register says the id is unknown; when
    the register cannot answer, a `format-only` check (valid True, `detail` says why)."""

    async def check(self, vat_id: str, *, requester: str | None = None) -> VatIdCheck:
        """`vat_id` with its country prefix, already format-checked; `requester` the
        seller's VAT id, for VIES to issue a consultation number (`request_id`)."""

    async def close(self) -> None: ...


class UnitOfWork(Protocol):
    """One transaction of one tenant: its repositories, and the outbox (an emitted event
    commits atomically with the change, or not at all)."""

    tenant: str
    rules: RuleRepository
    calculations: CalculationRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def emit(self, event: CloudEvent, *, aggregate: str) -> None: ...

    async def commit(self) -> None:
        """Commit the transaction; StaleRules (nothing written) if a calculation in it used
        unconfirmed rules that are no longer current."""


UnitOfWorkFactory = Callable[[str], UnitOfWork]
"""Builds a unit of work for one tenant."""
