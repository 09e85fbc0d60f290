"""HTTP API: /v1/sellers, the tenant's legal entities. `invoice:admin` changes them,
`invoice:read` reads them. The tenant comes from the token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response, status

from billing_common.cursors import decode_timestamp_and_id
from billing_common.web import StrictJsonRoute
from invoice_service.entrypoints.deps import Admin, Deps, Reader
from invoice_service.entrypoints.seller_schemas import (
    SellerCreate,
    SellerOut,
    SellerPageOut,
    SellerUpdate,
)
from invoice_service.service_layer import queries, sellers
from invoice_service.service_layer.ports import SellerQuery

router = APIRouter(prefix="/v1/sellers", tags=["sellers"], route_class=StrictJsonRoute)

SellerId = Annotated[str, Path(min_length=1, max_length=64, description="seller id")]

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or invalid bearer token"},
    403: {"description": "the token lacks the scope"},
}
_ONE: dict[int | str, dict[str, Any]] = {
    **_PROBLEMS,
    404: {"description": "no such seller for this tenant"},
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "invalid seller: VAT id (python-stdnum), IBAN or BIC (schwifty) with "
        "the reason, country, currency, language or series"
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SellerOut,
    summary="Add a seller (legal entity) to the tenant",
    responses={**_PROBLEMS, **_INVALID},
)
async def create_seller(
    body: SellerCreate, response: Response, principal: Admin, deps: Deps
) -> SellerOut:
    seller = await sellers.create_seller(principal.tenant, body.domain_fields(), deps)
    response.headers["Location"] = f"/v1/sellers/{seller.id}"
    return SellerOut.of(seller)


@router.get(
    "",
    response_model=SellerPageOut,
    summary="List the tenant's sellers, oldest first, with cursor pagination",
    responses={
        **_PROBLEMS,
        400: {"description": "a cursor this service did not return"},
        422: {"description": "invalid filter"},
    },
)
async def list_sellers(
    principal: Reader,
    deps: Deps,
    active: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> SellerPageOut:
    query = SellerQuery(
        active=active,
        limit=limit,
        after=decode_timestamp_and_id(cursor) if cursor else None,
    )
    page = await sellers.list_sellers(principal.tenant, query, deps)
    return SellerPageOut(
        items=[SellerOut.of(item) for item in page.items], next_cursor=page.next_cursor
    )


@router.get("/{seller_id}", response_model=SellerOut, summary="One seller", responses=_ONE)
async def get_seller(seller_id: SellerId, principal: Reader, deps: Deps) -> SellerOut:
    return SellerOut.of(await sellers.get_seller(principal.tenant, seller_id, deps))


@router.patch(
    "/{seller_id}",
    response_model=SellerOut,
    summary="Change a seller (only the fields sent); issued invoices keep their snapshot",
    responses={**_ONE, **_INVALID, 409: {"description": "changed concurrently; retry"}},
)
async def update_seller(
    seller_id: SellerId, body: SellerUpdate, principal: Admin, deps: Deps
) -> SellerOut:
    seller = await sellers.update_seller(principal.tenant, seller_id, body.domain_fields(), deps)
    return SellerOut.of(seller)


@router.delete(
    "/{seller_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a seller no invoice names (else 409: deactivate it instead)",
    responses={**_ONE, 409: {"description": "invoices name this seller: deactivate it"}},
)
async def delete_seller(seller_id: SellerId, principal: Admin, deps: Deps) -> Response:
    await sellers.delete_seller(principal.tenant, seller_id, deps)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
