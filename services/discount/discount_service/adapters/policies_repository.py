"""The tenant-scoped SQL repository of discount policies (their rule stored as JSON)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, Table
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select

from billing_common.db import PostgresDriver, utc_instant
from billing_common.money import Money, format_amount
from billing_common.outbox import utcnow
from billing_common.uniqueness import UniqueViolation
from discount_service.adapters.orm import PolicyRow
from discount_service.adapters.tenant_repository import TenantRepository
from discount_service.domain.model import (
    AmountOff,
    Benefit,
    DiscountKind,
    DiscountPolicy,
    PercentOff,
    PolicyRule,
    ThresholdRule,
    ThresholdTier,
    UserTypeRule,
)
from discount_service.service_layer.ports import PolicyKeyTaken

# The hot read (active policies, on every quote) selects with SQLAlchemy core: plain rows.
_POLICIES: Table = PolicyRow.__table__  # type: ignore[attr-defined]


def benefit_to_json(benefit: Benefit) -> dict[str, str]:
    if isinstance(benefit, PercentOff):
        return {"type": "percent", "rate": format_amount(benefit.rate)}
    return {
        "type": "fixed",
        "amount": format_amount(benefit.amount.amount),
        "currency": benefit.amount.currency,
    }


def benefit_from_json(data: dict[str, str]) -> Benefit:
    if data["type"] == "percent":
        return PercentOff(Decimal(data["rate"]))
    return AmountOff(Money(Decimal(data["amount"]), data["currency"]))


def _rule_to_json(rule: PolicyRule) -> str:
    body: dict[str, Any]
    if isinstance(rule, UserTypeRule):
        body = {"customer_type": rule.customer_type, "discount": benefit_to_json(rule.benefit)}
    else:
        body = {
            "currency": rule.currency,
            "tiers": [
                {
                    "minimum": format_amount(tier.minimum.amount),
                    "discount": benefit_to_json(tier.benefit),
                }
                for tier in rule.tiers
            ],
        }
    return json.dumps(body, sort_keys=True)


def _rule_from_json(kind: str, text: str) -> PolicyRule:
    body = json.loads(text)
    if kind == DiscountKind.USER_TYPE:
        return UserTypeRule(body["customer_type"], benefit_from_json(body["discount"]))
    return ThresholdRule(
        body["currency"],
        tuple(
            ThresholdTier(
                Money(Decimal(tier["minimum"]), body["currency"]),
                benefit_from_json(tier["discount"]),
            )
            for tier in body["tiers"]
        ),
    )


def _policy_from_row(row: PolicyRow | Row[Any]) -> DiscountPolicy:
    return DiscountPolicy(
        key=row.key,
        name=row.name,
        rule=_rule_from_json(row.kind, row.parameters),
        priority=row.priority,
        exclusive=row.exclusive,
        active=row.active,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
    )


def _policy_columns(policy: DiscountPolicy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "kind": policy.kind.value,
        "parameters": _rule_to_json(policy.rule),
        "priority": policy.priority,
        "exclusive": policy.exclusive,
        "active": policy.active,
        "starts_at": policy.starts_at,
        "ends_at": policy.ends_at,
    }


async def load_active_policies(connection: AsyncConnection, tenant: str) -> list[DiscountPolicy]:
    """The tenant's active policies in key order, read on `connection`."""
    rows = await connection.execute(
        core_select(_POLICIES)
        .where(_POLICIES.c.tenant_id == tenant, _POLICIES.c.active.is_(True))
        .order_by(_POLICIES.c.key)
    )
    return [_policy_from_row(row) for row in rows]


_ACTIVE_SQL = (
    "SELECT key, name, kind, parameters, priority, exclusive, active, starts_at, ends_at"
    " FROM discount_policies WHERE tenant_id = $1 AND active ORDER BY key"
)


def _policy_from_record(row: Mapping[str, Any]) -> DiscountPolicy:
    return DiscountPolicy(
        key=row["key"],
        name=row["name"],
        rule=_rule_from_json(row["kind"], row["parameters"]),
        priority=row["priority"],
        exclusive=row["exclusive"],
        active=row["active"],
        starts_at=utc_instant(row["starts_at"]),
        ends_at=utc_instant(row["ends_at"]),
    )


async def fetch_active_policies(driver: PostgresDriver, tenant: str) -> list[DiscountPolicy]:
    """`load_active_policies` on the asyncpg connection (PostgreSQL): the same policies in
    the same order, with none of SQLAlchemy's statement and result machinery."""
    return [_policy_from_record(row) for row in await driver.fetch(_ACTIVE_SQL, tenant)]


class SqlPolicyRepository(TenantRepository):
    """The active policies come from the process's cache while the tenant's configuration
    version says they are current (discount_service.adapters.config_cache)."""

    async def _row(self, key: str) -> PolicyRow | None:
        result = await self._session.exec(
            select(PolicyRow).where(PolicyRow.tenant_id == self._tenant, PolicyRow.key == key)
        )
        return result.first()

    async def get(self, key: str) -> DiscountPolicy | None:
        row = await self._row(key)
        return _policy_from_row(row) if row else None

    async def all(self) -> list[DiscountPolicy]:
        rows = await self._session.exec(
            select(PolicyRow)
            .where(PolicyRow.tenant_id == self._tenant)
            .order_by(col(PolicyRow.key))
        )
        return [_policy_from_row(row) for row in rows.all()]

    async def active(self) -> list[DiscountPolicy]:
        cached = await self._config.current()
        if cached is not None and cached.active_policies is not None:
            return list(cached.active_policies)
        driver = await self._drivers.reads()
        if driver is not None:
            policies = await fetch_active_policies(driver, self._tenant)
        else:
            policies = await load_active_policies(await self._session.connection(), self._tenant)
        if cached is not None:
            # Read after the version: at worst newer than it, never older.
            cached.active_policies = tuple(policies)
        return policies

    async def upsert(self, policy: DiscountPolicy) -> bool:
        """Create or replace the policy under its key; True if it was created."""
        now = utcnow()
        row = await self._row(policy.key)
        created = row is None
        if row is None:
            row = PolicyRow(
                id=str(uuid.uuid4()),
                tenant_id=self._tenant,
                key=policy.key,
                created_at=now,
                updated_at=now,
                **_policy_columns(policy),
            )
        else:
            for name, value in _policy_columns(policy).items():
                setattr(row, name, value)
            row.updated_at = now
        self._session.add(row)
        try:
            await self._session.flush()
        except UniqueViolation as exc:
            raise PolicyKeyTaken(policy.key) from exc
        await self._config.changed()
        return created

    async def delete(self, key: str) -> bool:
        row = await self._row(key)
        if row is None:
            return False
        await self._session.delete(row)
        await self._session.flush()
        await self._config.changed()
        return True
