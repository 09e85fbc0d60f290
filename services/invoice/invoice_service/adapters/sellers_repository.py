"""Sellers in SQL, for one tenant: every query filters by it.

With a SellerCache, `get` and `default` answer from this process's copy while the tenant's
seller version (one small statement) is still the copy's; every write bumps that version in
its own transaction. A unit of work that wrote neither reads nor fills the copy."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    Row,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    literal_column,
    or_,
    update,
)
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters import postgres_writes
from invoice_service.adapters.orm import (
    InvoiceDefaultSellerRow,
    InvoiceRow,
    InvoiceSellerRow,
    InvoiceSellerVersionRow,
)
from invoice_service.adapters.seller_cache import SellerCache
from invoice_service.domain.errors import ConcurrentModification
from invoice_service.domain.sellers import BankAccount, Seller, SellerAddress, TaxRegistration
from invoice_service.service_layer.ports import SellerQuery

_SELLERS: Table = InvoiceSellerRow.__table__  # type: ignore[attr-defined]
_DEFAULTS: Table = InvoiceDefaultSellerRow.__table__  # type: ignore[attr-defined]
_VERSIONS: Table = InvoiceSellerVersionRow.__table__  # type: ignore[attr-defined]
_VERSION_SQL = f"SELECT version FROM {_VERSIONS.name} WHERE tenant_id = $1"  # noqa: S608


def _fill_statement() -> Any:
    """The tenant's seller version, its default seller's id and one seller (the one named
    by `seller_id`, else the default) in one statement, so in one snapshot: always one row,
    the seller's columns NULL when there is none."""
    tenant = bindparam("tenant_id", type_=String)
    default_id = (
        core_select(_DEFAULTS.c.seller_id).where(_DEFAULTS.c.tenant_id == tenant).scalar_subquery()
    )
    version = core_select(_VERSIONS.c.version).where(_VERSIONS.c.tenant_id == tenant)
    one = core_select(literal_column("1").label("one")).subquery("one")
    return core_select(
        version.scalar_subquery().label("cached_version"),
        default_id.label("cached_default_id"),
        *_SELLERS.c,
    ).select_from(
        one.outerjoin(
            _SELLERS,
            and_(
                _SELLERS.c.tenant_id == tenant,
                _SELLERS.c.id == func.coalesce(bindparam("seller_id", type_=String), default_id),
            ),
        )
    )


_FILL = _fill_statement()


def _columns(seller: Seller) -> dict[str, Any]:
    a, bank = seller.address, seller.bank_account
    return {
        "legal_name": seller.legal_name,
        "country": a.country,
        "region": a.region,
        "postcode": a.postcode,
        "city": a.city,
        "street": json.dumps(list(a.street)),
        "vat_id": seller.vat_id,
        "tax_registrations": json.dumps(
            [
                {"country": r.country, "region": r.region, "number": r.number}
                for r in seller.tax_registrations
            ]
        ),
        "email": seller.email,
        "phone": seller.phone,
        "iban": bank.iban if bank else None,
        "bic": bank.bic if bank else None,
        "default_currency": seller.default_currency,
        "language": seller.language,
        "invoice_series": seller.invoice_series,
        "credit_note_series": seller.credit_note_series,
        "active": seller.active,
        "updated_at": seller.updated_at,
        "version": seller.version,
    }


def _seller(row: InvoiceSellerRow | Row[Any], default_id: str | None) -> Seller:
    # As stored: the VAT id and bank account were checked when written (issue 11: reading a
    # seller loads neither python-stdnum nor schwifty).
    return Seller.stored(
        id=row.id,
        tenant_id=row.tenant_id,
        legal_name=row.legal_name,
        address=SellerAddress(
            country=row.country,
            city=row.city,
            postcode=row.postcode,
            region=row.region,
            street=tuple(json.loads(row.street)),
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
        vat_id=row.vat_id,
        tax_registrations=tuple(
            TaxRegistration(r["country"], r["number"], r.get("region"))
            for r in json.loads(row.tax_registrations)
        ),
        email=row.email,
        phone=row.phone,
        bank_account=BankAccount.stored(row.iban, row.bic) if row.iban else None,
        default_currency=row.default_currency,
        language=row.language,
        invoice_series=row.invoice_series,
        credit_note_series=row.credit_note_series,
        is_default=row.id == default_id,
        active=row.active,
        version=row.version,
    )


class SqlSellerRepository:
    def __init__(
        self,
        session: AsyncSession,
        tenant: str,
        cache: SellerCache | None = None,
        drivers: postgres_writes.Drivers | None = None,
    ) -> None:
        self._session = session
        self._drivers = drivers or postgres_writes.session_drivers(session)
        self._tenant = tenant
        self._cache = cache
        self._changed = False  # this unit of work bumped the version: the cache is off
        self._observed: int | None = None  # the version another statement of it read

    def observe_version(self, version: int) -> None:
        """The tenant's seller version, as a statement of this unit of work just read it
        (the creation's idempotency lookup): the next cached lookup need not read it."""
        self._observed = version

    async def _scalar(self, statement: Any) -> Any:
        return (await (await self._session.connection()).execute(statement)).scalar()

    async def _default_id(self) -> str | None:
        table = InvoiceDefaultSellerRow.__table__  # type: ignore[attr-defined]
        found = await self._scalar(
            core_select(table.c.seller_id).where(table.c.tenant_id == self._tenant)
        )
        return str(found) if found is not None else None

    async def _version(self) -> int:
        async with self._drivers() as driver:
            if driver is not None:
                found = await driver.fetchval(_VERSION_SQL, self._tenant)
        if driver is None:
            found = await self._scalar(
                core_select(_VERSIONS.c.version).where(_VERSIONS.c.tenant_id == self._tenant)
            )
        return int(found) if found is not None else 0

    async def _cached(self, cache: SellerCache, seller_id: str | None) -> Seller | None:
        """The seller `seller_id` (None: the default) from the copy at the tenant's current
        version, read with the version (and kept) when the copy does not have it yet."""
        version, self._observed = self._observed, None
        entry = cache.at(self._tenant, version if version is not None else await self._version())
        wanted = entry.default_id if seller_id is None else seller_id
        if seller_id is None and entry.default_known and wanted is None:
            return None
        if (seller_id is not None or entry.default_known) and wanted in entry.sellers:
            return entry.sellers[wanted]  # type: ignore[index]
        found = (
            await (await self._session.connection()).execute(
                _FILL, {"tenant_id": self._tenant, "seller_id": seller_id}
            )
        ).one()
        # Kept at the version read with the rows, which may be newer than the one above.
        entry = cache.at(self._tenant, int(found.cached_version or 0))
        default_id = found.cached_default_id
        entry.default_id, entry.default_known = default_id, True
        seller = None if found.id is None else _seller(found, default_id)
        wanted = default_id if seller_id is None else seller_id
        if wanted is not None:
            entry.sellers[wanted] = seller
        return seller

    async def _bump_version(self) -> None:
        """Move the tenant's seller version on, in the transaction of the change (every
        write calls this first), so cached copies everywhere go out of date exactly when the
        change commits. Once per unit of work."""
        if self._changed:
            return
        self._changed = True
        dialect = self._session.bind.dialect.name  # type: ignore[union-attr]
        upsert: Any = pg_insert if dialect == "postgresql" else sqlite_insert
        await (await self._session.connection()).execute(
            upsert(_VERSIONS)
            .values(tenant_id=self._tenant, version=1)
            .on_conflict_do_update(
                index_elements=[_VERSIONS.c.tenant_id], set_={"version": _VERSIONS.c.version + 1}
            )
        )

    async def get(self, seller_id: str, *, for_update: bool = False) -> Seller | None:
        if self._cache is not None and not self._changed and not for_update:
            return await self._cached(self._cache, seller_id)
        statement = select(InvoiceSellerRow).where(
            InvoiceSellerRow.tenant_id == self._tenant, InvoiceSellerRow.id == seller_id
        )
        if for_update:
            statement = statement.with_for_update()
        row = (await self._session.exec(statement)).first()
        return None if row is None else _seller(row, await self._default_id())

    async def default(self) -> Seller | None:
        if self._cache is not None and not self._changed:
            return await self._cached(self._cache, None)
        default_id = await self._default_id()
        return None if default_id is None else await self.get(default_id)

    async def add(self, seller: Seller) -> None:
        if seller.tenant_id != self._tenant:
            raise ValueError("a seller of another tenant cannot be written here")
        await self._bump_version()
        self._session.add(
            InvoiceSellerRow(
                id=seller.id,
                tenant_id=self._tenant,
                created_at=seller.created_at,
                **_columns(seller),
            )
        )
        await self._session.flush()

    async def save(self, seller: Seller, *, expected_version: int) -> None:
        await self._bump_version()
        result = await self._session.exec(
            update(InvoiceSellerRow)
            .where(
                col(InvoiceSellerRow.tenant_id) == self._tenant,
                col(InvoiceSellerRow.id) == seller.id,
                col(InvoiceSellerRow.version) == expected_version,
            )
            .values(**_columns(seller))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise ConcurrentModification(seller.id)

    async def set_default(self, seller_id: str | None) -> None:
        await self._bump_version()
        table = InvoiceDefaultSellerRow.__table__  # type: ignore[attr-defined]
        if seller_id is None:
            await self._session.exec(delete(table).where(table.c.tenant_id == self._tenant))
            return
        dialect = self._session.bind.dialect.name  # type: ignore[union-attr]
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        await self._session.exec(
            insert(table)
            .values(tenant_id=self._tenant, seller_id=seller_id)
            .on_conflict_do_update(
                index_elements=[table.c.tenant_id], set_={"seller_id": seller_id}
            )
        )

    async def list(self, query: SellerQuery) -> list[Seller]:
        statement = select(InvoiceSellerRow).where(InvoiceSellerRow.tenant_id == self._tenant)
        if query.active is not None:
            statement = statement.where(InvoiceSellerRow.active == query.active)
        if query.after is not None:
            created_at, seller_id = query.after
            statement = statement.where(
                or_(
                    col(InvoiceSellerRow.created_at) > created_at,
                    and_(
                        col(InvoiceSellerRow.created_at) == created_at,
                        col(InvoiceSellerRow.id) > seller_id,
                    ),
                )
            )
        statement = statement.order_by(
            col(InvoiceSellerRow.created_at), col(InvoiceSellerRow.id)
        ).limit(query.limit)
        rows = (await self._session.exec(statement)).all()
        default_id = await self._default_id()
        return [_seller(row, default_id) for row in rows]

    async def in_use(self, seller_id: str) -> bool:
        invoices = InvoiceRow.__table__  # type: ignore[attr-defined]
        return bool(
            await self._scalar(
                core_select(
                    exists().where(
                        invoices.c.tenant_id == self._tenant, invoices.c.seller_id == seller_id
                    )
                )
            )
        )

    async def delete(self, seller_id: str) -> None:
        await self._bump_version()
        if await self._default_id() == seller_id:
            await self.set_default(None)
        await self._session.exec(
            delete(InvoiceSellerRow).where(
                col(InvoiceSellerRow.tenant_id) == self._tenant,
                col(InvoiceSellerRow.id) == seller_id,
            )
        )
