"""The tenant-scoped SQL repository of coupons and their per-customer usage counters.
Counters move only through atomic conditional UPDATEs, which are correct under real
concurrency on PostgreSQL (row locks, re-checked WHERE) and on SQLite (one writer)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, delete, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from billing_common.db import UtcDateTime, utc_instant
from billing_common.money import Money
from billing_common.outbox import utcnow
from billing_common.uniqueness import UniqueViolation
from discount_service.adapters.config_cache import TenantConfig
from discount_service.adapters.coupon_use_sql import COUNTED_COLUMNS, count_use_ctes, use_refused
from discount_service.adapters.orm import CouponRow, CouponUsageRow
from discount_service.adapters.tenant_repository import TenantRepository
from discount_service.domain.errors import DuplicateCouponCode
from discount_service.domain.model import (
    AmountOff,
    Benefit,
    Coupon,
    PercentOff,
    RejectReason,
    normalize_code,
)
from discount_service.service_layer.ports import CouponQuery, CustomerCoupons


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


def _coupon_from_row(row: Any) -> Coupon:
    # A CouponRow, a core Row, or the namespace of a driver record: columns as attributes.
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


def _coupon_from_mapping(row: Mapping[str, Any]) -> Coupon:
    """A coupon from a raw asyncpg record or a SQLAlchemy mapping. asyncpg hands
    `9999-12-31T23:59:59.999999Z` back as PostgreSQL's infinity, a naive datetime.max, where
    the column's UtcDateTime would have made it UTC: do what that type does."""
    values = {name: row[name] for name in _COUPON_FIELDS}
    for name in _INSTANT_FIELDS:
        values[name] = utc_instant(values[name])
    return _coupon_from_row(SimpleNamespace(**values))


_COUPON_FIELDS = tuple(column.name for column in _COUPONS.columns)
_INSTANT_FIELDS = tuple(c.name for c in _COUPONS.columns if isinstance(c.type, UtcDateTime))
# The hot read on PostgreSQL: the tenant's configuration version and the asked-for coupons
# in one statement (one snapshot), always one row at least (the version's).
_COUPONS_SQL = (
    "SELECT v.version AS config_version, c.*"
    " FROM (SELECT $1::varchar AS tenant_id) AS t"
    " LEFT JOIN discount_config_versions AS v ON v.tenant_id = t.tenant_id"
    " LEFT JOIN discount_coupons AS c ON c.tenant_id = t.tenant_id"
    " AND c.code_key = ANY($2::varchar[])"
)
# The same with the customer's usage of each of those coupons: an evaluation's whole read of
# coupons in one round trip.
CUSTOMER_COUPONS_SQL = (
    "SELECT v.version AS config_version, u.redeemed_count AS customer_redeemed_count, c.*"
    " FROM (SELECT $1::varchar AS tenant_id) AS t"
    " LEFT JOIN discount_config_versions AS v ON v.tenant_id = t.tenant_id"
    " LEFT JOIN discount_coupons AS c ON c.tenant_id = t.tenant_id"
    " AND c.code_key = ANY($2::varchar[])"
    " LEFT JOIN discount_coupon_usage AS u ON u.tenant_id = t.tenant_id"
    " AND u.coupon_id = c.id AND u.customer_id = $3::varchar"
)
_USAGE_SQL = (
    "SELECT coupon_id, redeemed_count FROM discount_coupon_usage"
    " WHERE tenant_id = $1 AND customer_id = $2 AND coupon_id = ANY($3::varchar[])"
)


# The counters' statements on PostgreSQL, the same as their SQLAlchemy forms below.
_COUNT_SQL = (
    "UPDATE discount_coupons SET redeemed_count = redeemed_count + 1"
    " WHERE tenant_id = $1 AND id = $2"
    " AND (max_redemptions IS NULL OR redeemed_count < max_redemptions)"
)
_COUNT_CUSTOMER_SQL = (
    "INSERT INTO discount_coupon_usage (tenant_id, coupon_id, customer_id, redeemed_count)"
    " VALUES ($1, $2, $3, 1)"
    " ON CONFLICT (tenant_id, coupon_id, customer_id) DO UPDATE"
    " SET redeemed_count = discount_coupon_usage.redeemed_count + 1"
    " WHERE $4::integer IS NULL OR discount_coupon_usage.redeemed_count < $4::integer"
    " RETURNING redeemed_count"
)
# Both counters of one coupon in one statement (the per-customer one only if the overall one
# counted), in the same order and with the same row locks as the two statements above.
_COUNT_USE_SQL = (
    f"WITH {', '.join(count_use_ctes('$1', '$2', '$3', '$4'))} SELECT {COUNTED_COLUMNS}"
)
_UNCOUNT_SQL = (
    "UPDATE discount_coupons SET redeemed_count = redeemed_count - 1"
    " WHERE tenant_id = $1 AND id = $2 AND redeemed_count > 0"
)
_UNCOUNT_CUSTOMER_SQL = (
    "UPDATE discount_coupon_usage SET redeemed_count = redeemed_count - 1"
    " WHERE tenant_id = $1 AND coupon_id = $2 AND customer_id = $3 AND redeemed_count > 0"
)


def _definition(cached: TenantConfig | None, key: str, row: Mapping[Any, Any]) -> Coupon:
    """The coupon of `row`: its definition from the cache when it holds it at the version
    read, with the row's live counter."""
    coupon = cached.coupons.get(key) if cached is not None else None
    if coupon is None:
        coupon = _coupon_from_mapping(row)
        if cached is not None:
            cached.coupons[key] = coupon
        return coupon
    counted = coupon.with_redeemed_count(row["redeemed_count"])
    if cached is not None:
        cached.coupons[key] = counted  # the same definition: the next read copies no more
    return counted


def coupon_keys(codes: Iterable[str]) -> list[str]:
    """The normalised codes, each once, in one order (the statements' parameter)."""
    return sorted({normalize_code(code) for code in codes})


def config_version(rows: Sequence[Mapping[Any, Any]]) -> int:
    """The configuration version a CUSTOMER_COUPONS_SQL answer read (0: never changed)."""
    return int(rows[0]["config_version"] or 0)


def customer_coupons(
    rows: Iterable[Mapping[Any, Any]], cached: TenantConfig | None
) -> CustomerCoupons:
    """The coupons and the customer's usage in the rows of CUSTOMER_COUPONS_SQL (or of its
    SQLite equivalent), definitions from `cached` where it holds them."""
    coupons: dict[str, Coupon] = {}
    usage: dict[str, int] = {}
    for row in rows:
        if row["id"] is None:  # the version's row when no coupon matched
            continue
        coupons[row["code_key"]] = _definition(cached, row["code_key"], row)
        if row["customer_redeemed_count"] is not None:
            usage[row["id"]] = row["customer_redeemed_count"]
    return CustomerCoupons(coupons, usage)


class SqlCouponRepository(TenantRepository):
    """Coupon definitions come from the process's cache while the tenant's configuration
    version (read with them) says they are current; counters are always read live."""

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
        except UniqueViolation as exc:
            raise DuplicateCouponCode(coupon.code) from exc
        await self._config.changed()
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
        await self._config.changed()
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
        await self._config.changed()
        return True

    async def page(self, query: CouponQuery) -> list[Coupon]:
        statement = select(CouponRow).where(CouponRow.tenant_id == self._tenant)
        if query.after:
            statement = statement.where(col(CouponRow.code_key) > normalize_code(query.after))
        rows = await self._session.exec(
            statement.order_by(col(CouponRow.code_key)).limit(query.limit)
        )
        return [_coupon_from_row(row) for row in rows.all()]

    async def by_codes(self, codes: Iterable[str]) -> dict[str, Coupon]:
        keys = sorted({normalize_code(code) for code in codes})
        if not keys:
            return {}
        driver = await self._drivers.reads()
        if driver is not None:
            rows = await driver.fetch(_COUPONS_SQL, self._tenant, keys)
            cached = self._config.observe(int(rows[0]["config_version"] or 0))
            return {
                row["code_key"]: _definition(cached, row["code_key"], row)
                for row in rows
                if row["id"] is not None
            }
        cached = await self._config.current()
        found = await (await self._session.connection()).execute(
            core_select(_COUPONS).where(
                _COUPONS.c.tenant_id == self._tenant, _COUPONS.c.code_key.in_(keys)
            )
        )
        return {row.code_key: _definition(cached, row.code_key, row._mapping) for row in found}

    async def customer_usage(self, coupon_ids: Iterable[str], customer_id: str) -> dict[str, int]:
        ids = sorted(set(coupon_ids))
        if not ids:
            return {}
        driver = await self._drivers.reads()
        if driver is not None:
            found = await driver.fetch(_USAGE_SQL, self._tenant, customer_id, ids)
            return {row["coupon_id"]: row["redeemed_count"] for row in found}
        rows = await (await self._session.connection()).execute(
            core_select(_USAGE.c.coupon_id, _USAGE.c.redeemed_count).where(
                _USAGE.c.tenant_id == self._tenant,
                _USAGE.c.customer_id == customer_id,
                _USAGE.c.coupon_id.in_(ids),
            )
        )
        return {row.coupon_id: row.redeemed_count for row in rows}

    async def for_customer(self, codes: Iterable[str], customer_id: str) -> CustomerCoupons:
        keys = coupon_keys(codes)
        if not keys:
            return CustomerCoupons({}, {})
        driver = await self._drivers.reads()
        if driver is not None:
            rows = await driver.fetch(CUSTOMER_COUPONS_SQL, self._tenant, keys, customer_id)
            return customer_coupons(rows, self._config.observe(config_version(rows)))
        cached = await self._config.current()
        found = await (await self._session.connection()).execute(
            core_select(_COUPONS, _USAGE.c.redeemed_count.label("customer_redeemed_count"))
            .outerjoin(
                _USAGE,
                (_USAGE.c.tenant_id == _COUPONS.c.tenant_id)
                & (_USAGE.c.coupon_id == _COUPONS.c.id)
                & (_USAGE.c.customer_id == customer_id),
            )
            .where(_COUPONS.c.tenant_id == self._tenant, _COUPONS.c.code_key.in_(keys))
        )
        return customer_coupons([row._mapping for row in found], cached)

    async def try_count_redemption(self, coupon_id: str) -> bool:
        """redeemed_count += 1 unless that would pass max_redemptions, atomically.

        On PostgreSQL a concurrent transaction waits on the row lock and re-evaluates the
        WHERE clause against the committed count, so the last redemption goes to one only."""
        driver = await self._drivers.writes()
        if driver is not None:
            # Every redemption runs it: asyncpg's prepared statement, not SQLAlchemy's
            # compile, execution context and result (most of the statement's CPU).
            return await driver.execute(_COUNT_SQL, self._tenant, coupon_id) == "UPDATE 1"
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
        # One statement: the counter row is created at 1 (every limit is at least 1) or
        # moved on below the limit; a row is returned only if it counted. On PostgreSQL a
        # concurrent creator or counter waits on the row and the WHERE is re-checked.
        driver = await self._drivers.writes()
        if driver is not None:
            counted_row = await driver.fetchrow(
                _COUNT_CUSTOMER_SQL, self._tenant, coupon_id, customer_id, limit
            )
            return counted_row is not None
        dialect = self._session.get_bind().dialect.name
        upsert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            upsert(_USAGE)
            .values(
                tenant_id=self._tenant,
                coupon_id=coupon_id,
                customer_id=customer_id,
                redeemed_count=1,
            )
            .on_conflict_do_update(
                index_elements=[_USAGE.c.tenant_id, _USAGE.c.coupon_id, _USAGE.c.customer_id],
                set_={"redeemed_count": _USAGE.c.redeemed_count + 1},
                where=_USAGE.c.redeemed_count < limit if limit is not None else None,
            )
            .returning(_USAGE.c.redeemed_count)
        )
        counted = await (await self._session.connection()).execute(statement)
        return counted.first() is not None

    async def try_count_uses(
        self, coupons: Sequence[Coupon], customer_id: str
    ) -> tuple[Coupon, RejectReason] | None:
        if len(coupons) == 1:  # most redemptions: one statement on PostgreSQL
            driver = await self._drivers.writes()
            if driver is not None:
                [coupon] = coupons
                row = await driver.fetchrow(
                    _COUNT_USE_SQL,
                    self._tenant,
                    coupon.id,
                    customer_id,
                    coupon.max_redemptions_per_customer,
                )
                return use_refused(coupon, row[0], row[1])
        for coupon in coupons:
            if not await self.try_count_redemption(coupon.id):
                return coupon, RejectReason.EXHAUSTED
        for coupon in coupons:
            limit = coupon.max_redemptions_per_customer
            if not await self.try_count_customer_redemption(coupon.id, customer_id, limit):
                return coupon, RejectReason.CUSTOMER_LIMIT_REACHED
        return None

    async def uncount_redemption(self, coupon_id: str, customer_id: str) -> None:
        """Give a counted use back (overall and for the customer), never below zero."""
        driver = await self._drivers.writes()
        if driver is not None:
            await driver.execute(_UNCOUNT_SQL, self._tenant, coupon_id)
            await driver.execute(_UNCOUNT_CUSTOMER_SQL, self._tenant, coupon_id, customer_id)
            return
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
