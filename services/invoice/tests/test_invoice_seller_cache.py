"""The seller a new invoice is issued by, from each process's cached copy: every seller
change is seen at once by every replica (each with its own cache), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from billing_common.db import create_engine, session_factory
from invoice_service.adapters.unit_of_work import uow_factory
from invoice_service.domain.errors import SellerInactive, SellerNotFound
from invoice_service.domain.sellers import SellerAddress
from invoice_service.service_layer import sellers
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import UnitOfWorkFactory

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class NoPeers:
    async def calculate(self, **_: Any) -> Any:
        raise AssertionError("tax must not be called")


def _fields(legal_name: str, *, is_default: bool = False) -> dict[str, Any]:
    return {
        "legal_name": legal_name,
        "address": SellerAddress(country="DE", city="Berlin"),
        "is_default": is_default,
    }


class Replicas:
    """Two processes of the invoice service on one database: each its own seller cache."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        sessions = session_factory(self.engine)
        self.a: UnitOfWorkFactory = uow_factory(sessions, None)
        self.b: UnitOfWorkFactory = uow_factory(sessions, None)

    def deps(self, uow: UnitOfWorkFactory) -> Dependencies:
        return Dependencies(uow=uow, tax=NoPeers(), discounts=NoPeers(), clock=lambda: T0)

    # As a creation does: the idempotency lookup first (it reads the seller version too).
    lookup_first = False

    async def issuer(self, uow: UnitOfWorkFactory, seller_id: str | None = None) -> str | None:
        async with uow("acme") as unit:
            if self.lookup_first:
                assert await unit.invoices.find_by_idempotency_key("no-such-key") is None
            seller = await sellers.seller_for_new_invoice(unit, seller_id)
        return None if seller is None else seller.legal_name

    async def close(self) -> None:
        await self.engine.dispose()


@pytest.fixture(params=[False, True], ids=["seller-lookup", "after-idempotency-lookup"])
async def replicas(
    migrated_database_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Replicas]:
    both = Replicas(migrated_database_url)
    both.lookup_first = request.param
    try:
        yield both
    finally:
        await both.close()


async def test_a_change_on_one_replica_is_seen_at_once_on_the_other(replicas: Replicas) -> None:
    a, b = replicas.a, replicas.b
    assert await replicas.issuer(a) is None  # no default yet: cached as such on a
    first = await sellers.create_seller(
        "acme", _fields("First GmbH", is_default=True), replicas.deps(b)
    )
    assert await replicas.issuer(a) == "First GmbH"
    assert await replicas.issuer(a, first.id) == "First GmbH"

    await sellers.update_seller("acme", first.id, {"legal_name": "Renamed GmbH"}, replicas.deps(b))
    assert await replicas.issuer(a) == "Renamed GmbH"
    assert await replicas.issuer(a, first.id) == "Renamed GmbH"

    second = await sellers.create_seller("acme", _fields("Second AG"), replicas.deps(b))
    assert await replicas.issuer(a, second.id) == "Second AG"
    await sellers.update_seller("acme", second.id, {"is_default": True}, replicas.deps(b))
    await sellers.update_seller("acme", first.id, {"is_default": False}, replicas.deps(b))
    assert await replicas.issuer(a) == "Second AG"

    await sellers.update_seller("acme", second.id, {"active": False}, replicas.deps(b))
    assert await replicas.issuer(a) is None  # deactivated: no longer the default
    with pytest.raises(SellerInactive):
        await replicas.issuer(a, second.id)

    await sellers.delete_seller("acme", second.id, replicas.deps(b))
    with pytest.raises(SellerNotFound):
        await replicas.issuer(a, second.id)


async def test_an_unknown_seller_is_found_once_it_is_created(replicas: Replicas) -> None:
    with pytest.raises(SellerNotFound):
        await replicas.issuer(replicas.a, "not-yet")
    created = await sellers.create_seller("acme", _fields("Late GmbH"), replicas.deps(replicas.b))
    with pytest.raises(SellerNotFound):
        await replicas.issuer(replicas.a, "not-yet")
    assert await replicas.issuer(replicas.a, created.id) == "Late GmbH"


async def test_the_copy_serves_while_the_version_stands(replicas: Replicas) -> None:
    """What makes the cache pay: a row changed behind the service's back (no version bump)
    is not read again; the next seller change's bump makes every replica read it."""
    seller = await sellers.create_seller(
        "acme", _fields("Cached GmbH", is_default=True), replicas.deps(replicas.b)
    )
    assert await replicas.issuer(replicas.a) == "Cached GmbH"
    async with replicas.engine.begin() as connection:
        await connection.execute(
            text("UPDATE invoice_sellers SET legal_name = 'Behind GmbH' WHERE id = :id"),
            {"id": seller.id},
        )
    assert await replicas.issuer(replicas.a) == "Cached GmbH"
    assert await replicas.issuer(replicas.a, seller.id) == "Cached GmbH"
    other = await sellers.create_seller("acme", _fields("Other AG"), replicas.deps(replicas.b))
    assert await replicas.issuer(replicas.a) == "Behind GmbH"
    assert await replicas.issuer(replicas.a, other.id) == "Other AG"
