"""The tenant-scoped SQL repository of redemptions and their applied lines."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Table, and_, delete, insert, or_
from sqlalchemy import select as core_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import utc_instant
from billing_common.money import Money
from billing_common.uniqueness import UniqueViolation
from discount_service.adapters.connection import Drivers
from discount_service.adapters.orm import RedemptionLineRow, RedemptionRow
from discount_service.domain.model import (
    AppliedDiscount,
    Coupon,
    DiscountKind,
    DiscountResult,
    Redemption,
    Rejection,
    RejectReason,
)
from discount_service.service_layer.ports import IdempotencyKeyTaken, RedemptionQuery

_REDEMPTIONS: Table = RedemptionRow.__table__  # type: ignore[attr-defined]
_LINES: Table = RedemptionLineRow.__table__  # type: ignore[attr-defined]


_KEY_COLUMNS = ("tenant_id", "idempotency_key")  # uq_discount_redemption_key
# The hot statements on PostgreSQL (asyncpg, prepared once per connection).
_BY_KEY_SQL = "SELECT * FROM discount_redemptions WHERE tenant_id = $1 AND idempotency_key = $2"
_BY_KEY_FOR_UPDATE_SQL = f"{_BY_KEY_SQL} FOR UPDATE"
_LINES_SQL = (
    "SELECT redemption_id, kind, code, name, amount FROM discount_redemption_lines"
    " WHERE tenant_id = $1 AND redemption_id = $2 ORDER BY position"
)
_REMOVE_SQL = (
    "WITH lines AS (DELETE FROM discount_redemption_lines"
    " WHERE tenant_id = $1 AND redemption_id = $2)"
    " DELETE FROM discount_redemptions WHERE tenant_id = $1 AND id = $2"
)


class _Record:
    """An asyncpg record's columns as attributes, as a SQLAlchemy row has them, instants
    in UTC as the UtcDateTime columns make them."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        value = self._record[name]
        return utc_instant(value) if isinstance(value, datetime) else value


class SqlRedemptionRepository:
    def __init__(self, session: Callable[[], AsyncSession], tenant: str, drivers: Drivers) -> None:
        self._session_of = session
        self._drivers = drivers
        self._tenant = tenant

    @property
    def _session(self) -> AsyncSession:
        return self._session_of()

    async def add(self, redemption: Redemption) -> None:
        """Insert the redemption with its lines, so the (tenant, key) unique constraint
        claims the idempotency key before any counter moves. On PostgreSQL all rows are one
        statement in the unit of work's transaction (with the outbox rows emitted so far on
        its hot connection); elsewhere core INSERTs."""
        rows = self._rows(redemption)
        # The key's claim folded into the INSERT (ON CONFLICT DO NOTHING): a key taken
        # writes nothing and leaves the transaction usable.
        written = await self._drivers.insert_unless_taken(rows, _KEY_COLUMNS)
        if written is not None:
            if not written:
                raise IdempotencyKeyTaken(redemption.idempotency_key)
            return
        connection = await self._session.connection()
        (_, header), *lines = rows
        try:
            await connection.execute(insert(_REDEMPTIONS).values(header))
        except UniqueViolation as exc:
            raise IdempotencyKeyTaken(redemption.idempotency_key) from exc
        if lines:
            await connection.execute(insert(_LINES), [values for _, values in lines])

    async def add_counting(
        self, redemption: Redemption, coupon: Coupon
    ) -> tuple[bool, bool] | None:
        """`add`, and one use of `coupon` counted for the redemption's customer as
        SqlCouponRepository.try_count_uses counts it, in ONE statement on PostgreSQL's hot
        connection: whether the use counted overall and for the customer; None (nothing
        done) elsewhere. IdempotencyKeyTaken, nothing written or counted, if the key is
        taken."""
        use = (self._tenant, coupon.id, redemption.customer_id, coupon.max_redemptions_per_customer)
        found = await self._drivers.insert_unless_taken_counting(
            self._rows(redemption), _KEY_COLUMNS, use
        )
        if found is None:
            return None
        written, counted, customer_counted = found
        if not written:
            raise IdempotencyKeyTaken(redemption.idempotency_key)
        return counted, customer_counted

    def _rows(self, redemption: Redemption) -> list[tuple[str, dict[str, Any]]]:
        result = redemption.result
        header = {
            "id": redemption.id,
            "tenant_id": self._tenant,
            "idempotency_key": redemption.idempotency_key,
            "request_hash": redemption.request_hash,
            "customer_id": redemption.customer_id,
            "customer_type": redemption.customer_type,
            "reference": redemption.reference,
            "currency": result.currency,
            "amount": result.amount.amount,
            "total_discount": result.total_discount.amount,
            "amount_after": result.amount_after.amount,
            "rejected": json.dumps(
                [{"code": r.code, "reason": r.reason.value} for r in result.rejected]
            ),
            "created_at": redemption.created_at,
        }
        lines = [
            {
                "redemption_id": redemption.id,
                "tenant_id": self._tenant,
                "position": position,
                "kind": line.kind.value,
                "code": line.code,
                "name": line.name,
                "amount": line.amount.amount,
            }
            for position, line in enumerate(result.applied)
        ]
        return [(_REDEMPTIONS.name, header), *((_LINES.name, line) for line in lines)]

    async def remove(self, redemption_id: str) -> None:
        """Delete the redemption and its lines (a released redemption never happened; its
        idempotency key is free again)."""
        driver = await self._drivers.writes()
        if driver is not None:
            await driver.execute(_REMOVE_SQL, self._tenant, redemption_id)
            return
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
        # Every redemption starts with it: on PostgreSQL one prepared statement (in
        # autocommit unless locking), elsewhere SQLAlchemy core, plain rows.
        driver = await (self._drivers.writes() if for_update else self._drivers.reads())
        if driver is not None:
            sql = _BY_KEY_FOR_UPDATE_SQL if for_update else _BY_KEY_SQL
            record = await driver.fetchrow(sql, self._tenant, idempotency_key)
            if record is None:
                return None
            lines = await driver.fetch(_LINES_SQL, self._tenant, record["id"])
            return _redemption_from_rows(_Record(record), [_Record(line) for line in lines])
        query = core_select(_REDEMPTIONS).where(
            _REDEMPTIONS.c.tenant_id == self._tenant,
            _REDEMPTIONS.c.idempotency_key == idempotency_key,
        )
        if for_update:
            query = query.with_for_update()
        row = (await (await self._session.connection()).execute(query)).first()
        return (await self._load([row]))[0] if row else None

    async def get(self, redemption_id: str) -> Redemption | None:
        rows = await self._session.exec(
            select(RedemptionRow).where(
                RedemptionRow.tenant_id == self._tenant, RedemptionRow.id == redemption_id
            )
        )
        row = rows.first()
        return (await self._load([row]))[0] if row else None

    async def page(self, query: RedemptionQuery) -> list[Redemption]:
        """Newest first; `query.before` is the (created_at, id) of the last item already seen."""
        statement = select(RedemptionRow).where(RedemptionRow.tenant_id == self._tenant)
        if query.customer_id is not None:
            statement = statement.where(RedemptionRow.customer_id == query.customer_id)
        if query.before is not None:
            moment, last_id = query.before
            statement = statement.where(
                or_(
                    col(RedemptionRow.created_at) < moment,
                    and_(col(RedemptionRow.created_at) == moment, col(RedemptionRow.id) < last_id),
                )
            )
        statement = statement.order_by(
            col(RedemptionRow.created_at).desc(), col(RedemptionRow.id).desc()
        ).limit(query.limit)
        rows = (await self._session.exec(statement)).all()
        return await self._load(rows)

    async def _load(self, rows: Sequence[RedemptionRow | Row[Any]]) -> list[Redemption]:
        if not rows:
            return []
        lines_by_id: dict[str, list[Any]] = {row.id: [] for row in rows}
        lines = await (await self._session.connection()).execute(
            core_select(
                _LINES.c.redemption_id, _LINES.c.kind, _LINES.c.code, _LINES.c.name, _LINES.c.amount
            )
            .where(
                _LINES.c.tenant_id == self._tenant,
                _LINES.c.redemption_id.in_(list(lines_by_id)),
            )
            .order_by(_LINES.c.redemption_id, _LINES.c.position)
        )
        for line in lines:
            lines_by_id[line.redemption_id].append(line)
        return [_redemption_from_rows(row, lines_by_id[row.id]) for row in rows]


def _redemption_from_rows(
    row: RedemptionRow | Row[Any] | _Record, lines: Sequence[Any]
) -> Redemption:
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
