"""Tenant-scoped SQL repositories. Each is built for one tenant and never reads or writes
another tenant's rows. Counters move only through atomic conditional UPDATEs, which are
correct under real concurrency on PostgreSQL (row locks, re-checked WHERE) and on SQLite
(one writer)."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, Table, and_, delete, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.money import Money, format_amount
from billing_common.wire import parse_aware_timestamp
from discount_service.adapters.orm import (
    CouponRow,
    CouponUsageRow,
    PolicyRow,
    RedemptionLineRow,
    RedemptionRow,
    StackingSettingsRow,
)
from discount_service.domain.errors import DuplicateCouponCode, InvalidCursor
from discount_service.domain.model import (
    AmountOff,
    AppliedDiscount,
    Benefit,
    Coupon,
    DiscountKind,
    DiscountPolicy,
    DiscountResult,
    PercentOff,
    PolicyRule,
    Redemption,
    Rejection,
    RejectReason,
    StackingSettings,
    ThresholdRule,
    ThresholdTier,
    UserTypeRule,
    normalize_code,
)


class IdempotencyKeyTaken(Exception):
    """Another transaction stored a redemption under this key first."""


class PolicyKeyTaken(Exception):
    """Another transaction created a policy with this key first."""


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- coupons ----------------------------------------------------------------------------


def _benefit_columns(benefit: Benefit) -> dict[str, Any]:
    if isinstance(benefit, PercentOff):
        return {"discount_type": "percent", "rate": benefit.rate, "amount": None, "currency": None}
    return {
        "discount_type": "fixed",
        "rate": None,
        "amount": benefit.amount.amount,
        "currency": benefit.amount.currency,
    }


# Hot read paths (every quote and redemption) select with SQLAlchemy core: plain rows, no ORM
# identity map or instance state, converted straight to the domain objects.
_COUPONS: Table = CouponRow.__table__  # type: ignore[attr-defined]
_USAGE: Table = CouponUsageRow.__table__  # type: ignore[attr-defined]
_POLICIES: Table = PolicyRow.__table__  # type: ignore[attr-defined]
_SETTINGS: Table = StackingSettingsRow.__table__  # type: ignore[attr-defined]


def _coupon_from_row(row: CouponRow | Row[Any]) -> Coupon:
    benefit: Benefit
    if row.discount_type == "percent":
        assert row.rate is not None
        benefit = PercentOff(row.rate)
    else:
        assert row.amount is not None and row.currency is not None
        benefit = AmountOff(Money(row.amount, row.currency))
    minimum = (
        Money(row.minimum_amount, row.minimum_currency)
        if row.minimum_amount is not None and row.minimum_currency is not None
        else None
    )
    return Coupon(
        id=row.id,
        code=row.code,
        name=row.name,
        benefit=benefit,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        max_redemptions=row.max_redemptions,
        max_redemptions_per_customer=row.max_redemptions_per_customer,
        minimum=minimum,
        active=row.active,
        priority=row.priority,
        exclusive=row.exclusive,
        redeemed_count=row.redeemed_count,
    )


def _coupon_columns(coupon: Coupon) -> dict[str, Any]:
    return {
        "code": coupon.code,
        "code_key": coupon.key,
        "name": coupon.name,
        **_benefit_columns(coupon.benefit),
        "starts_at": coupon.starts_at,
        "ends_at": coupon.ends_at,
        "max_redemptions": coupon.max_redemptions,
        "max_redemptions_per_customer": coupon.max_redemptions_per_customer,
        "minimum_amount": coupon.minimum.amount if coupon.minimum else None,
        "minimum_currency": coupon.minimum.currency if coupon.minimum else None,
        "active": coupon.active,
        "priority": coupon.priority,
        "exclusive": coupon.exclusive,
    }


class CouponRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def _row(self, code: str) -> CouponRow | None:
        result = await self._session.exec(
            select(CouponRow).where(
                CouponRow.tenant_id == self._tenant, CouponRow.code_key == normalize_code(code)
            )
        )
        return result.first()

    async def get(self, code: str) -> Coupon | None:
        row = await self._row(code)
        return _coupon_from_row(row) if row else None

    async def add(self, coupon: Coupon) -> Coupon:
        now = utcnow()
        row = CouponRow(
            id=coupon.id,
            tenant_id=self._tenant,
            redeemed_count=0,
            created_at=now,
            updated_at=now,
            **_coupon_columns(coupon),
        )
        self._session.add(row)
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise DuplicateCouponCode(coupon.code) from exc
        return _coupon_from_row(row)

    async def replace(self, coupon: Coupon) -> Coupon | None:
        """Store the new definition of an existing coupon; its counter is kept."""
        row = await self._row(coupon.code)
        if row is None:
            return None
        for name, value in _coupon_columns(coupon).items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        self._session.add(row)
        await self._session.flush()
        return _coupon_from_row(row)

    async def delete(self, code: str) -> bool:
        row = await self._row(code)
        if row is None:
            return False
        await self._session.exec(
            delete(CouponUsageRow).where(
                col(CouponUsageRow.tenant_id) == self._tenant,
                col(CouponUsageRow.coupon_id) == row.id,
            )
        )
        await self._session.delete(row)
        await self._session.flush()
        return True

    async def page(self, *, limit: int, after: str | None = None) -> list[Coupon]:
        query = select(CouponRow).where(CouponRow.tenant_id == self._tenant)
        if after:
            query = query.where(col(CouponRow.code_key) > normalize_code(after))
        rows = await self._session.exec(query.order_by(col(CouponRow.code_key)).limit(limit))
        return [_coupon_from_row(row) for row in rows.all()]

    async def by_codes(self, codes: Iterable[str]) -> dict[str, Coupon]:
        keys = sorted({normalize_code(code) for code in codes})
        if not keys:
            return {}
        rows = await (await self._session.connection()).execute(
            core_select(_COUPONS).where(
                _COUPONS.c.tenant_id == self._tenant, _COUPONS.c.code_key.in_(keys)
            )
        )
        return {row.code_key: _coupon_from_row(row) for row in rows}

    async def customer_usage(self, coupon_ids: Iterable[str], customer_id: str) -> dict[str, int]:
        ids = sorted(set(coupon_ids))
        if not ids:
            return {}
        rows = await (await self._session.connection()).execute(
            core_select(_USAGE.c.coupon_id, _USAGE.c.redeemed_count).where(
                _USAGE.c.tenant_id == self._tenant,
                _USAGE.c.customer_id == customer_id,
                _USAGE.c.coupon_id.in_(ids),
            )
        )
        return {row.coupon_id: row.redeemed_count for row in rows}

    async def try_count_redemption(self, coupon_id: str) -> bool:
        """redeemed_count += 1 unless that would pass max_redemptions, atomically.

        On PostgreSQL a concurrent transaction waits on the row lock and re-evaluates the
        WHERE clause against the committed count, so the last redemption goes to one only."""
        result = await self._session.exec(
            update(CouponRow)
            .where(
                col(CouponRow.tenant_id) == self._tenant,
                col(CouponRow.id) == coupon_id,
                or_(
                    col(CouponRow.max_redemptions).is_(None),
                    col(CouponRow.redeemed_count) < col(CouponRow.max_redemptions),
                ),
            )
            .values(redeemed_count=col(CouponRow.redeemed_count) + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)

    async def try_count_customer_redemption(
        self, coupon_id: str, customer_id: str, limit: int | None
    ) -> bool:
        """The per-customer counter row's += 1 below `limit` (None: no limit), atomically.
        The row is created first if missing; a concurrent creator wins quietly."""
        values = {
            "tenant_id": self._tenant,
            "coupon_id": coupon_id,
            "customer_id": customer_id,
            "redeemed_count": 0,
        }
        dialect = self._session.bind.dialect.name if self._session.bind else "sqlite"
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await self._session.exec(
            insert(CouponUsageRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["tenant_id", "coupon_id", "customer_id"])
        )
        condition = and_(
            col(CouponUsageRow.tenant_id) == self._tenant,
            col(CouponUsageRow.coupon_id) == coupon_id,
            col(CouponUsageRow.customer_id) == customer_id,
        )
        if limit is not None:
            condition = and_(condition, col(CouponUsageRow.redeemed_count) < limit)
        result = await self._session.exec(
            update(CouponUsageRow)
            .where(condition)
            .values(redeemed_count=col(CouponUsageRow.redeemed_count) + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)

    async def uncount_redemption(self, coupon_id: str, customer_id: str) -> None:
        """Give a counted use back (overall and for the customer), never below zero."""
        await self._session.exec(
            update(CouponRow)
            .where(
                col(CouponRow.tenant_id) == self._tenant,
                col(CouponRow.id) == coupon_id,
                col(CouponRow.redeemed_count) > 0,
            )
            .values(redeemed_count=col(CouponRow.redeemed_count) - 1)
            .execution_options(synchronize_session=False)
        )
        await self._session.exec(
            update(CouponUsageRow)
            .where(
                col(CouponUsageRow.tenant_id) == self._tenant,
                col(CouponUsageRow.coupon_id) == coupon_id,
                col(CouponUsageRow.customer_id) == customer_id,
                col(CouponUsageRow.redeemed_count) > 0,
            )
            .values(redeemed_count=col(CouponUsageRow.redeemed_count) - 1)
            .execution_options(synchronize_session=False)
        )


# --- policies ---------------------------------------------------------------------------


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


class PolicyRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

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
        rows = await (await self._session.connection()).execute(
            core_select(_POLICIES)
            .where(_POLICIES.c.tenant_id == self._tenant, _POLICIES.c.active.is_(True))
            .order_by(_POLICIES.c.key)
        )
        return [_policy_from_row(row) for row in rows]

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
        except IntegrityError as exc:
            raise PolicyKeyTaken(policy.key) from exc
        return created

    async def delete(self, key: str) -> bool:
        row = await self._row(key)
        if row is None:
            return False
        await self._session.delete(row)
        await self._session.flush()
        return True


# --- stacking settings ------------------------------------------------------------------


class SettingsRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def get(self) -> StackingSettings:
        row = (
            await (await self._session.connection()).execute(
                core_select(_SETTINGS.c.max_fraction, _SETTINGS.c.max_amounts).where(
                    _SETTINGS.c.tenant_id == self._tenant
                )
            )
        ).first()
        if row is None:
            return StackingSettings()
        caps = json.loads(row.max_amounts)
        return StackingSettings(
            max_fraction=row.max_fraction,
            max_amounts=tuple(Money(Decimal(v), c) for c, v in sorted(caps.items())),
        )

    async def put(self, settings: StackingSettings) -> None:
        row = await self._session.get(StackingSettingsRow, self._tenant)
        caps = json.dumps(
            {cap.currency: format_amount(cap.amount) for cap in settings.max_amounts},
            sort_keys=True,
        )
        if row is None:
            row = StackingSettingsRow(
                tenant_id=self._tenant,
                max_fraction=settings.max_fraction,
                max_amounts=caps,
                updated_at=utcnow(),
            )
        else:
            row.max_fraction = settings.max_fraction
            row.max_amounts = caps
            row.updated_at = utcnow()
        self._session.add(row)
        await self._session.flush()

    async def exists(self) -> bool:
        return await self._session.get(StackingSettingsRow, self._tenant) is not None


# --- redemptions ------------------------------------------------------------------------


def encode_cursor(created_at: datetime, redemption_id: str) -> str:
    raw = f"{created_at.astimezone(UTC).isoformat()}|{redemption_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, redemption_id = raw.split("|", 1)
        when = parse_aware_timestamp(moment)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursor("the cursor is not one this service handed out") from exc
    return when, redemption_id


class RedemptionRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def add(self, redemption: Redemption) -> None:
        """Insert the redemption with its lines and flush, so the (tenant, key) unique
        constraint claims the idempotency key before any counter moves."""
        result = redemption.result
        self._session.add(
            RedemptionRow(
                id=redemption.id,
                tenant_id=self._tenant,
                idempotency_key=redemption.idempotency_key,
                request_hash=redemption.request_hash,
                customer_id=redemption.customer_id,
                customer_type=redemption.customer_type,
                reference=redemption.reference,
                currency=result.currency,
                amount=result.amount.amount,
                total_discount=result.total_discount.amount,
                amount_after=result.amount_after.amount,
                rejected=json.dumps(
                    [{"code": r.code, "reason": r.reason.value} for r in result.rejected]
                ),
                created_at=redemption.created_at,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError as exc:
            raise IdempotencyKeyTaken(redemption.idempotency_key) from exc
        for position, line in enumerate(result.applied):
            self._session.add(
                RedemptionLineRow(
                    redemption_id=redemption.id,
                    tenant_id=self._tenant,
                    position=position,
                    kind=line.kind.value,
                    code=line.code,
                    name=line.name,
                    amount=line.amount.amount,
                )
            )
        await self._session.flush()

    async def remove(self, redemption_id: str) -> None:
        """Delete the redemption and its lines (a released redemption never happened; its
        idempotency key is free again)."""
        await self._session.exec(
            delete(RedemptionLineRow).where(
                col(RedemptionLineRow.tenant_id) == self._tenant,
                col(RedemptionLineRow.redemption_id) == redemption_id,
            )
        )
        await self._session.exec(
            delete(RedemptionRow).where(
                col(RedemptionRow.tenant_id) == self._tenant,
                col(RedemptionRow.id) == redemption_id,
            )
        )

    async def by_key(self, idempotency_key: str, *, for_update: bool = False) -> Redemption | None:
        query = select(RedemptionRow).where(
            RedemptionRow.tenant_id == self._tenant,
            RedemptionRow.idempotency_key == idempotency_key,
        )
        if for_update:
            query = query.with_for_update()
        rows = await self._session.exec(query)
        row = rows.first()
        return (await self._load([row]))[0] if row else None

    async def get(self, redemption_id: str) -> Redemption | None:
        rows = await self._session.exec(
            select(RedemptionRow).where(
                RedemptionRow.tenant_id == self._tenant, RedemptionRow.id == redemption_id
            )
        )
        row = rows.first()
        return (await self._load([row]))[0] if row else None

    async def page(
        self, *, limit: int, before: tuple[datetime, str] | None = None, customer_id: str | None
    ) -> list[Redemption]:
        """Newest first; `before` is the (created_at, id) of the last item already seen."""
        query = select(RedemptionRow).where(RedemptionRow.tenant_id == self._tenant)
        if customer_id is not None:
            query = query.where(RedemptionRow.customer_id == customer_id)
        if before is not None:
            moment, last_id = before
            query = query.where(
                or_(
                    col(RedemptionRow.created_at) < moment,
                    and_(col(RedemptionRow.created_at) == moment, col(RedemptionRow.id) < last_id),
                )
            )
        query = query.order_by(
            col(RedemptionRow.created_at).desc(), col(RedemptionRow.id).desc()
        ).limit(limit)
        rows = (await self._session.exec(query)).all()
        return await self._load(rows)

    async def _load(self, rows: Sequence[RedemptionRow]) -> list[Redemption]:
        if not rows:
            return []
        lines_by_id: dict[str, list[RedemptionLineRow]] = {row.id: [] for row in rows}
        lines = await self._session.exec(
            select(RedemptionLineRow)
            .where(
                RedemptionLineRow.tenant_id == self._tenant,
                col(RedemptionLineRow.redemption_id).in_(list(lines_by_id)),
            )
            .order_by(col(RedemptionLineRow.redemption_id), col(RedemptionLineRow.position))
        )
        for line in lines.all():
            lines_by_id[line.redemption_id].append(line)
        return [_redemption_from_rows(row, lines_by_id[row.id]) for row in rows]


def _redemption_from_rows(row: RedemptionRow, lines: Sequence[RedemptionLineRow]) -> Redemption:
    result = DiscountResult(
        amount=Money(row.amount, row.currency),
        applied=tuple(
            AppliedDiscount(
                DiscountKind(line.kind), line.code, line.name, Money(line.amount, row.currency)
            )
            for line in lines
        ),
        rejected=tuple(
            Rejection(item["code"], RejectReason(item["reason"]))
            for item in json.loads(row.rejected)
        ),
    )
    return Redemption(
        id=row.id,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        customer_id=row.customer_id,
        customer_type=row.customer_type,
        reference=row.reference,
        result=result,
        created_at=row.created_at,
    )
