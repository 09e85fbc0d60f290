"""Seller use cases: create, read, list, change, delete (only when no invoice names it), the
seller an invoice is issued by, and the sample seller of the embedded runtime."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from billing_common.cursors import encode_cursor
from invoice_service.domain.errors import (
    SellerInactive,
    SellerInUse,
    SellerNotFound,
)
from invoice_service.domain.sellers import Seller
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import SellerQuery, UnitOfWork
from invoice_service.service_layer.queries import MAX_PAGE_SIZE


@dataclass(frozen=True, slots=True)
class SellerPage:
    items: list[Seller]
    next_cursor: str | None


async def create_seller(tenant: str, fields: dict[str, Any], deps: Dependencies) -> Seller:
    """`fields`: Seller's fields but id, tenant and timestamps (checked by the Seller)."""
    now = deps.clock()
    seller = Seller(
        id=str(uuid.uuid4()), tenant_id=tenant, created_at=now, updated_at=now, **fields
    )
    async with deps.uow(tenant) as uow:
        await uow.sellers.add(seller)
        if seller.is_default:
            await uow.sellers.set_default(seller.id)
        await uow.commit()
    return seller


async def get_seller(tenant: str, seller_id: str, deps: Dependencies) -> Seller:
    async with deps.uow(tenant) as uow:
        seller = await uow.sellers.get(seller_id)
    if seller is None:
        raise SellerNotFound(seller_id)
    return seller


async def list_sellers(tenant: str, query: SellerQuery, deps: Dependencies) -> SellerPage:
    if not 1 <= query.limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    async with deps.uow(tenant) as uow:
        rows = await uow.sellers.list(replace(query, limit=query.limit + 1))
    items = rows[: query.limit]
    more = len(rows) > query.limit
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    return SellerPage(items, next_cursor)


async def update_seller(
    tenant: str, seller_id: str, changes: dict[str, Any], deps: Dependencies
) -> Seller:
    """Apply `changes` (checked again as a whole). Issued invoices keep their snapshot."""
    async with deps.uow(tenant) as uow:
        current = await uow.sellers.get(seller_id, for_update=True)
        if current is None:
            raise SellerNotFound(seller_id)
        if not changes:
            return current
        seller = current.changed(deps.clock(), **changes)
        if not seller.active and seller.is_default:
            # A deactivated seller issues nothing, so it cannot be what invoices default to.
            seller = replace(seller, is_default=False)
        await uow.sellers.save(seller, expected_version=current.version)
        if seller.is_default != current.is_default:
            await uow.sellers.set_default(seller.id if seller.is_default else None)
        await uow.commit()
    return seller


async def delete_seller(tenant: str, seller_id: str, deps: Dependencies) -> None:
    async with deps.uow(tenant) as uow:
        seller = await uow.sellers.get(seller_id, for_update=True)
        if seller is None:
            raise SellerNotFound(seller_id)
        if await uow.sellers.in_use(seller_id):
            raise SellerInUse(seller_id)
        await uow.sellers.delete(seller_id)
        await uow.commit()


async def seller_for_new_invoice(uow: UnitOfWork, seller_id: str | None) -> Seller | None:
    """The seller a new invoice is issued by: the one named, else the tenant's default, else
    none (an invoice as before sellers existed)."""
    if seller_id is None:
        return await uow.sellers.default()
    seller = await uow.sellers.get(seller_id)
    if seller is None:
        raise SellerNotFound(seller_id)
    if not seller.active:
        raise SellerInactive(seller_id)
    return seller


async def ensure_sample_seller(tenant: str, sample: Seller, deps: Dependencies) -> bool:
    """Add the sample seller (as the tenant's default) unless it exists; True if added."""
    async with deps.uow(tenant) as uow:
        if await uow.sellers.get(sample.id) is not None:
            return False
        now = deps.clock()
        seller = sample.stamped(tenant, now)  # as given: its checks are the sample's own
        await uow.sellers.add(seller)
        if seller.is_default and await uow.sellers.default() is None:
            await uow.sellers.set_default(seller.id)
        await uow.commit()
    return True
