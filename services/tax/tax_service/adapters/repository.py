"""Tenant-scoped SQL repositories. Each is built for one tenant and never reads or writes
another tenant's rows."""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, or_
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.money import Money, format_amount
from billing_common.wire import parse_aware_timestamp
from tax_service.adapters.orm import TaxCalculationRow, TaxRuleRow, TaxRulesVersionRow
from tax_service.domain.errors import DuplicateRuleKey, InvalidCursor
from tax_service.domain.model import (
    AppliedTax,
    CalculationRequest,
    Customer,
    Exemption,
    Jurisdiction,
    LineInput,
    LineResult,
    PriceMode,
    TaxCalculation,
    TaxRule,
    TaxStatus,
)

# --- rules ------------------------------------------------------------------------------

_RULES: Table = TaxRuleRow.__table__  # type: ignore[attr-defined]
_RULES_VERSIONS: Table = TaxRulesVersionRow.__table__  # type: ignore[attr-defined]
_CALCULATIONS: Table = TaxCalculationRow.__table__  # type: ignore[attr-defined]


class RuleCache:
    """Each tenant's rules held in this process, tagged with the tenant's rules version.

    Every rule change bumps the version in its own transaction, and a calculation reads the
    version in its transaction before using the copy, so a copy is used only while it is
    still the tenant's current rule set, whichever replica made the last change. Bounded:
    the least recently used tenants are dropped."""

    def __init__(self, max_tenants: int = 1024) -> None:
        self._max_tenants = max_tenants
        self._entries: OrderedDict[str, tuple[int, tuple[TaxRule, ...]]] = OrderedDict()

    def get(self, tenant: str, version: int) -> tuple[TaxRule, ...] | None:
        entry = self._entries.get(tenant)
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end(tenant)
        return entry[1]

    def put(self, tenant: str, version: int, rules: Sequence[TaxRule]) -> None:
        self._entries[tenant] = (version, tuple(rules))
        self._entries.move_to_end(tenant)
        while len(self._entries) > self._max_tenants:
            self._entries.popitem(last=False)


@dataclass(frozen=True)
class RuleFilter:
    country: str | None = None
    region: str | None = None
    category: str | None = None
    key: str | None = None
    valid_on: date | None = None


def _rule_from_row(row: TaxRuleRow) -> TaxRule:
    return TaxRule(
        id=row.id,
        key=row.key,
        jurisdiction=Jurisdiction(row.country, row.region),
        category=row.category,
        name=row.name,
        rate=row.rate,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        zero_rated=row.zero_rated,
        compound=row.compound,
        priority=row.priority,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _rule_from_mapping(row: RowMapping) -> TaxRule:
    return TaxRule(
        id=row["id"],
        key=row["key"],
        jurisdiction=Jurisdiction(row["country"], row["region"]),
        category=row["category"],
        name=row["name"],
        rate=row["rate"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        zero_rated=row["zero_rated"],
        compound=row["compound"],
        priority=row["priority"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _covers(rule: TaxRule, jurisdiction: Jurisdiction, on: date) -> bool:
    """The filter of `RuleRepository.for_jurisdiction`, applied to rules in memory."""
    return (
        rule.jurisdiction.country == jurisdiction.country
        and (rule.jurisdiction.region is None or rule.jurisdiction.region == jurisdiction.region)
        and (rule.valid_from is None or rule.valid_from <= on)
        and (rule.valid_to is None or rule.valid_to > on)
    )


def _write_rule(row: TaxRuleRow, rule: TaxRule) -> None:
    row.key = rule.key
    row.country = rule.jurisdiction.country
    row.region = rule.jurisdiction.region
    row.category = rule.category
    row.name = rule.name
    row.rate = rule.rate
    row.zero_rated = rule.zero_rated
    row.compound = rule.compound
    row.priority = rule.priority
    row.valid_from = rule.valid_from
    row.valid_to = rule.valid_to
    if rule.updated_at is not None:
        row.updated_at = rule.updated_at


class RuleRepository:
    def __init__(self, session: AsyncSession, tenant: str, cache: RuleCache | None = None) -> None:
        self._session = session
        self._tenant = tenant
        self._cache = cache

    async def _bump_version(self) -> None:
        """Move the tenant's rules version on, in the transaction of the change (every
        write to the rules goes through here), so cached copies everywhere go out of date
        exactly when the change commits."""
        dialect = self._session.get_bind().dialect.name
        upsert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = upsert(_RULES_VERSIONS).values(tenant_id=self._tenant, version=1)
        await (await self._session.connection()).execute(
            statement.on_conflict_do_update(
                index_elements=[_RULES_VERSIONS.c.tenant_id],
                set_={"version": _RULES_VERSIONS.c.version + 1},
            )
        )

    async def version(self) -> int:
        """The tenant's rules version (0: its rules were never changed)."""
        found = await (await self._session.connection()).execute(
            core_select(_RULES_VERSIONS.c.version).where(
                _RULES_VERSIONS.c.tenant_id == self._tenant
            )
        )
        return int(found.scalar_one_or_none() or 0)

    async def _row(self, rule_id: str) -> TaxRuleRow | None:
        row = await self._session.get(TaxRuleRow, rule_id)
        return row if row is not None and row.tenant_id == self._tenant else None

    async def _row_by_key(self, key: str) -> TaxRuleRow | None:
        result = await self._session.exec(
            select(TaxRuleRow).where(TaxRuleRow.tenant_id == self._tenant, TaxRuleRow.key == key)
        )
        return result.first()

    async def get(self, rule_id: str) -> TaxRule | None:
        row = await self._row(rule_id)
        return _rule_from_row(row) if row is not None else None

    async def get_by_key(self, key: str) -> TaxRule | None:
        row = await self._row_by_key(key)
        return _rule_from_row(row) if row is not None else None

    async def add(self, rule: TaxRule) -> None:
        """Insert a new rule (its created_at/updated_at must be set). Raises
        DuplicateRuleKey if its key is taken, even by a concurrent transaction."""
        if rule.created_at is None or rule.updated_at is None:
            raise ValueError("a stored rule needs created_at and updated_at")
        row = TaxRuleRow(
            id=rule.id,
            tenant_id=self._tenant,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
            country=rule.jurisdiction.country,
            category=rule.category,
            name=rule.name,
            rate=rule.rate,
        )
        _write_rule(row, rule)
        self._session.add(row)
        await self._flush(rule.key)
        await self._bump_version()

    async def update(self, rule: TaxRule) -> bool:
        """Overwrite the stored rule with this id; False if there is none for the tenant."""
        row = await self._row(rule.id)
        if row is None:
            return False
        _write_rule(row, rule)
        self._session.add(row)
        await self._flush(rule.key)
        await self._bump_version()
        return True

    async def _flush(self, key: str | None) -> None:
        try:
            await self._session.flush()
        except IntegrityError as exc:
            # The only unique constraint besides the primary key (a fresh uuid) is the key.
            raise DuplicateRuleKey(key or "") from exc

    async def delete(self, rule_id: str) -> bool:
        return await self._delete(await self._row(rule_id))

    async def delete_by_key(self, key: str) -> bool:
        return await self._delete(await self._row_by_key(key))

    async def _delete(self, row: TaxRuleRow | None) -> bool:
        if row is None:
            return False
        await self._session.delete(row)
        await self._session.flush()
        await self._bump_version()
        return True

    def _filtered(self, rule_filter: RuleFilter) -> list[Any]:
        conditions: list[Any] = [col(TaxRuleRow.tenant_id) == self._tenant]
        if rule_filter.country is not None:
            conditions.append(col(TaxRuleRow.country) == rule_filter.country)
        if rule_filter.region is not None:
            conditions.append(col(TaxRuleRow.region) == rule_filter.region)
        if rule_filter.category is not None:
            conditions.append(col(TaxRuleRow.category) == rule_filter.category)
        if rule_filter.key is not None:
            conditions.append(col(TaxRuleRow.key) == rule_filter.key)
        if rule_filter.valid_on is not None:
            conditions.append(
                or_(
                    col(TaxRuleRow.valid_from).is_(None),
                    col(TaxRuleRow.valid_from) <= rule_filter.valid_on,
                )
            )
            conditions.append(
                or_(
                    col(TaxRuleRow.valid_to).is_(None),
                    col(TaxRuleRow.valid_to) > rule_filter.valid_on,
                )
            )
        return conditions

    async def search(
        self, rule_filter: RuleFilter, *, limit: int, offset: int
    ) -> tuple[list[TaxRule], int]:
        """One page of rules in a stable order, and how many match in all."""
        conditions = self._filtered(rule_filter)
        total = (
            await self._session.exec(
                select(func.count()).select_from(TaxRuleRow).where(*conditions)
            )
        ).one()
        rows = (
            await self._session.exec(
                select(TaxRuleRow)
                .where(*conditions)
                .order_by(
                    col(TaxRuleRow.country),
                    col(TaxRuleRow.region).is_not(None),
                    col(TaxRuleRow.region),
                    col(TaxRuleRow.category),
                    col(TaxRuleRow.priority),
                    # NULL (always valid) first on both databases, which sort NULLs differently
                    col(TaxRuleRow.valid_from).is_not(None),
                    col(TaxRuleRow.valid_from),
                    col(TaxRuleRow.id),
                )
                .offset(offset)
                .limit(limit)
            )
        ).all()
        return [_rule_from_row(row) for row in rows], int(total)

    async def for_jurisdiction(self, jurisdiction: Jurisdiction, on: date) -> list[TaxRule]:
        """Every rule that covers `jurisdiction` on `on` (country-wide and regional).

        With a cache, the tenant's whole rule set comes from memory while the version read
        in this transaction says it is current, and is loaded (and cached) otherwise."""
        if self._cache is None:
            regions: list[Any] = [_RULES.c.region.is_(None)]
            if jurisdiction.region is not None:
                regions.append(_RULES.c.region == jurisdiction.region)
            conditions = self._filtered(RuleFilter(country=jurisdiction.country, valid_on=on))
            found = await (await self._session.connection()).execute(
                core_select(_RULES).where(*conditions, or_(*regions))
            )
            return [_rule_from_mapping(row) for row in found.mappings()]
        version = await self.version()
        rules = self._cache.get(self._tenant, version)
        if rules is None:
            found = await (await self._session.connection()).execute(
                core_select(_RULES).where(_RULES.c.tenant_id == self._tenant)
            )
            rules = tuple(_rule_from_mapping(row) for row in found.mappings())
            self._cache.put(self._tenant, version, rules)
        return [rule for rule in rules if _covers(rule, jurisdiction, on)]


# --- calculations -----------------------------------------------------------------------


def _amount(money: Money) -> str:
    return format_amount(money.amount)


def _lines_to_json(calculation: TaxCalculation) -> str:
    lines = [
        {
            "id": result.line.id,
            "description": result.line.description,
            "category": result.line.category,
            "unit_price": _amount(result.line.unit_price),
            "quantity": format_amount(result.line.quantity),
            "net": _amount(result.net),
            "tax": _amount(result.tax),
            "gross": _amount(result.gross),
            "exemption": result.exemption.value if result.exemption else None,
            "taxes": [
                {
                    "rule_id": tax.rule_id,
                    "name": tax.name,
                    "rate": format_amount(tax.rate),
                    "amount": _amount(tax.amount),
                    "compound": tax.compound,
                    "zero_rated": tax.zero_rated,
                }
                for tax in result.taxes
            ],
        }
        for result in calculation.lines
    ]
    return json.dumps(lines, separators=(",", ":"))


def _lines_from_json(
    raw: str, currency: str
) -> tuple[tuple[LineInput, ...], tuple[LineResult, ...]]:
    inputs: list[LineInput] = []
    results: list[LineResult] = []
    for item in json.loads(raw):
        line = LineInput(
            id=item["id"],
            unit_price=Money.of(item["unit_price"], currency),
            quantity=Decimal(item["quantity"]),
            category=item["category"],
            description=item["description"],
        )
        inputs.append(line)
        results.append(
            LineResult(
                line=line,
                net=Money.of(item["net"], currency),
                tax=Money.of(item["tax"], currency),
                gross=Money.of(item["gross"], currency),
                exemption=Exemption(item["exemption"]) if item["exemption"] else None,
                taxes=tuple(
                    AppliedTax(
                        rule_id=tax["rule_id"],
                        name=tax["name"],
                        rate=Decimal(tax["rate"]),
                        amount=Money.of(tax["amount"], currency),
                        compound=tax["compound"],
                        zero_rated=tax["zero_rated"],
                    )
                    for tax in item["taxes"]
                ),
            )
        )
    return tuple(inputs), tuple(results)


def _calculation_from_row(row: TaxCalculationRow) -> TaxCalculation:
    inputs, results = _lines_from_json(row.lines, row.currency)
    request = CalculationRequest(
        currency=row.currency,
        jurisdiction=Jurisdiction(row.country, row.region),
        customer=Customer(
            id=row.customer_id, tax_status=TaxStatus(row.tax_status), tax_id=row.tax_id
        ),
        price_mode=PriceMode(row.price_mode),
        date=row.calculation_date,
        lines=inputs,
        reference=row.reference,
    )
    return TaxCalculation(
        id=row.id,
        request=request,
        lines=results,
        total_net=Money.of(row.total_net, row.currency),
        total_tax=Money.of(row.total_tax, row.currency),
        total_gross=Money.of(row.total_gross, row.currency),
        created_at=row.created_at,
    )


def encode_cursor(calculation: TaxCalculation) -> str:
    raw = json.dumps([calculation.created_at.isoformat(), calculation.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, calculation_id = json.loads(raw)
        when = parse_aware_timestamp(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor from exc
    if not isinstance(calculation_id, str):
        raise InvalidCursor
    return when, calculation_id


@dataclass(frozen=True)
class CalculationFilter:
    reference: str | None = None
    customer_id: str | None = None


class CalculationRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def add(self, calculation: TaxCalculation) -> None:
        request = calculation.request
        # A core INSERT: the row is never read back in this transaction, so the ORM's unit of
        # work (identity map, flush planning) would be pure overhead on the hot path.
        await (await self._session.connection()).execute(
            insert(_CALCULATIONS).values(
                id=calculation.id,
                tenant_id=self._tenant,
                created_at=calculation.created_at,
                calculation_date=request.date,
                currency=request.currency,
                price_mode=request.price_mode.value,
                country=request.jurisdiction.country,
                region=request.jurisdiction.region,
                customer_id=request.customer.id,
                tax_status=request.customer.tax_status.value,
                tax_id=request.customer.tax_id,
                reference=request.reference,
                total_net=calculation.total_net.amount,
                total_tax=calculation.total_tax.amount,
                total_gross=calculation.total_gross.amount,
                line_count=len(calculation.lines),
                lines=_lines_to_json(calculation),
            )
        )

    async def discard_for_reference(self, reference: str) -> int:
        """Delete the calculations made for `reference`; returns how many."""
        result = await (await self._session.connection()).execute(
            delete(_CALCULATIONS).where(
                _CALCULATIONS.c.tenant_id == self._tenant,
                _CALCULATIONS.c.reference == reference,
            )
        )
        return int(result.rowcount)

    async def get(self, calculation_id: str) -> TaxCalculation | None:
        row = await self._session.get(TaxCalculationRow, calculation_id)
        if row is None or row.tenant_id != self._tenant:
            return None
        return _calculation_from_row(row)

    async def history(
        self,
        *,
        limit: int,
        after: tuple[datetime, str] | None = None,
        calculation_filter: CalculationFilter | None = None,
    ) -> Sequence[TaxCalculation]:
        """Newest first (created_at, then id, descending); `after` is the position of the
        last item of the previous page (keyset pagination: stable under concurrent inserts)."""
        conditions: list[Any] = [col(TaxCalculationRow.tenant_id) == self._tenant]
        if calculation_filter is not None and calculation_filter.reference is not None:
            conditions.append(col(TaxCalculationRow.reference) == calculation_filter.reference)
        if calculation_filter is not None and calculation_filter.customer_id is not None:
            conditions.append(col(TaxCalculationRow.customer_id) == calculation_filter.customer_id)
        if after is not None:
            created, calculation_id = after
            conditions.append(
                or_(
                    col(TaxCalculationRow.created_at) < created,
                    and_(
                        col(TaxCalculationRow.created_at) == created,
                        col(TaxCalculationRow.id) < calculation_id,
                    ),
                )
            )
        rows = (
            await self._session.exec(
                select(TaxCalculationRow)
                .where(*conditions)
                .order_by(
                    col(TaxCalculationRow.created_at).desc(), col(TaxCalculationRow.id).desc()
                )
                .limit(limit)
            )
        ).all()
        return [_calculation_from_row(row) for row in rows]
