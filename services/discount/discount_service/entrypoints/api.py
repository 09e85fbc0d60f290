"""HTTP API of the discount service (docs/api-contracts.md). Every route needs a bearer token;
the tenant comes from the token, never from the request."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status

from billing_common.api_auth import requires
from billing_common.auth import Principal
from billing_common.problems import Problem
from billing_common.web import StrictJsonRoute, model_response
from discount_service.adapters.repository import decode_cursor, encode_cursor
from discount_service.entrypoints.schemas import (
    CouponCreate,
    CouponDefinition,
    CouponOut,
    CouponPage,
    DiscountOut,
    DiscountRequestIn,
    PolicyDefinition,
    PolicyList,
    PolicyOut,
    RedemptionOut,
    RedemptionPage,
    ReleaseIn,
    ReleaseOut,
    StackingIO,
)
from discount_service.service_layer import services
from discount_service.service_layer.unit_of_work import DiscountUnitOfWork

router = APIRouter(prefix="/v1/discounts", route_class=StrictJsonRoute)

READ = requires("discount:read")
ADMIN = requires("discount:admin")
QUOTE = requires("discount:quote")
REDEEM = requires("discount:redeem")

# Printable ASCII without spaces at the ends: what the Idempotency-Key draft allows in practice.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$")

CodePath = Annotated[str, Path(min_length=1, max_length=64)]
KeyPath = Annotated[str, Path(min_length=1, max_length=253)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=512)]


def _factory(request: Request, principal: Principal) -> services.UnitOfWorkFactory:
    ctx = request.app.state.ctx

    def new_uow() -> DiscountUnitOfWork:
        return DiscountUnitOfWork(ctx.sessions, ctx.relay, principal.tenant)

    return new_uow


def _uow(request: Request, principal: Principal) -> DiscountUnitOfWork:
    return _factory(request, principal)()


def _now(request: Request) -> datetime:
    clock: Callable[[], datetime] = request.app.state.clock
    return clock()


# --- coupons ----------------------------------------------------------------------------


@router.post(
    "/coupons",
    status_code=status.HTTP_201_CREATED,
    response_model=CouponOut,
    tags=["coupons"],
    summary="Create a coupon (codes are case-insensitive, unique per tenant)",
    responses={409: {"description": "the code is taken (`/problems/duplicate-coupon-code`)"}},
)
async def create_coupon(
    body: CouponCreate, request: Request, principal: Principal = Depends(ADMIN)
) -> CouponOut:
    coupon = body.to_domain(code=body.code.strip(), coupon_id=None)
    return CouponOut.of(await services.create_coupon(_uow(request, principal), coupon))


@router.get("/coupons", response_model=CouponPage, tags=["coupons"], summary="List coupons")
async def list_coupons(
    request: Request,
    principal: Principal = Depends(READ),
    limit: Limit = 50,
    cursor: Cursor = None,
) -> CouponPage:
    coupons = await services.list_coupons(_uow(request, principal), limit=limit, after=cursor)
    next_cursor = coupons[-1].key if len(coupons) == limit else None
    return CouponPage(items=[CouponOut.of(c) for c in coupons], next_cursor=next_cursor)


@router.get("/coupons/{code}", response_model=CouponOut, tags=["coupons"], summary="Get a coupon")
async def get_coupon(
    code: CodePath, request: Request, principal: Principal = Depends(READ)
) -> CouponOut:
    return CouponOut.of(await services.get_coupon(_uow(request, principal), code))


@router.put(
    "/coupons/{code}",
    response_model=CouponOut,
    tags=["coupons"],
    summary="Replace a coupon's definition (its redemption count is kept)",
)
async def replace_coupon(
    code: CodePath,
    body: CouponDefinition,
    request: Request,
    principal: Principal = Depends(ADMIN),
) -> CouponOut:
    current = await services.get_coupon(_uow(request, principal), code)
    coupon = body.to_domain(
        code=current.code,
        coupon_id=current.id,
        default_start=current.starts_at,  # an omitted starts_at keeps the coupon's start
        redeemed_count=current.redeemed_count,
    )
    return CouponOut.of(await services.replace_coupon(_uow(request, principal), coupon))


@router.delete(
    "/coupons/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["coupons"],
    summary="Delete a coupon (redemption history keeps its code and name)",
)
async def delete_coupon(
    code: CodePath, request: Request, principal: Principal = Depends(ADMIN)
) -> Response:
    await services.delete_coupon(_uow(request, principal), code)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- policies ---------------------------------------------------------------------------


@router.put(
    "/policies/{key}",
    response_model=PolicyOut,
    tags=["policies"],
    summary="Create or replace a discount policy (idempotent; 201 created, 200 replaced)",
    responses={201: {"model": PolicyOut, "description": "created"}},
)
async def put_policy(
    key: KeyPath,
    body: PolicyDefinition,
    request: Request,
    response: Response,
    principal: Principal = Depends(ADMIN),
) -> PolicyOut:
    policy = body.to_domain(key)
    created = await services.put_policy(_factory(request, principal), policy)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return PolicyOut.of(policy)


@router.get("/policies", response_model=PolicyList, tags=["policies"], summary="List policies")
async def list_policies(request: Request, principal: Principal = Depends(READ)) -> PolicyList:
    policies = await services.list_policies(_uow(request, principal))
    return PolicyList(items=[PolicyOut.of(p) for p in policies])


@router.get("/policies/{key}", response_model=PolicyOut, tags=["policies"], summary="Get a policy")
async def get_policy(
    key: KeyPath, request: Request, principal: Principal = Depends(READ)
) -> PolicyOut:
    return PolicyOut.of(await services.get_policy(_uow(request, principal), key))


@router.delete(
    "/policies/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["policies"],
    summary="Delete a policy (404 if there is none: a reconciler may treat that as done)",
)
async def delete_policy(
    key: KeyPath, request: Request, principal: Principal = Depends(ADMIN)
) -> Response:
    await services.delete_policy(_uow(request, principal), key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- stacking settings ------------------------------------------------------------------


@router.get(
    "/settings/stacking",
    response_model=StackingIO,
    tags=["settings"],
    summary="The tenant's stacking cap",
)
async def get_stacking(request: Request, principal: Principal = Depends(READ)) -> StackingIO:
    return StackingIO.of(await services.get_stacking_settings(_uow(request, principal)))


@router.put(
    "/settings/stacking",
    response_model=StackingIO,
    tags=["settings"],
    summary="Set the tenant's stacking cap",
)
async def put_stacking(
    body: StackingIO, request: Request, principal: Principal = Depends(ADMIN)
) -> StackingIO:
    settings = await services.put_stacking_settings(_uow(request, principal), body.to_domain())
    return StackingIO.of(settings)


# --- quotes and redemptions -------------------------------------------------------------


@router.post(
    "/quotes",
    response_model=DiscountOut,
    tags=["discounts"],
    summary="What discounts would apply (no side effect)",
)
async def create_quote(
    body: DiscountRequestIn, request: Request, principal: Principal = Depends(QUOTE)
) -> Response:
    result = await services.quote(_uow(request, principal), body.to_domain(), _now(request))
    # The hot path: serialised once, not re-validated (the schema is `response_model`'s).
    return model_response(DiscountOut.of(result))


@router.post(
    "/redemptions",
    status_code=status.HTTP_201_CREATED,
    response_model=RedemptionOut,
    tags=["discounts"],
    summary="Apply discounts once per Idempotency-Key (201 new, 200 replayed)",
    responses={
        200: {"model": RedemptionOut, "description": "the key was seen with this request"},
        409: {"description": "key reused with another request, or coupon just used up"},
        422: {"description": "invalid request, or a coupon cannot apply (code, reason)"},
    },
)
async def create_redemption(
    body: DiscountRequestIn,
    request: Request,
    response: Response,
    principal: Principal = Depends(REDEEM),
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Required: a redemption is applied once per key",
            json_schema_extra={"pattern": _IDEMPOTENCY_KEY.pattern, "maxLength": 255},
        ),
    ] = None,
) -> RedemptionOut:
    if idempotency_key is None:
        raise Problem(
            400,
            "Idempotency key required",
            "send an Idempotency-Key header: a redemption is applied once per key",
            problem_type="idempotency-key-required",
        )
    if not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise Problem(
            400,
            "Invalid idempotency key",
            "the Idempotency-Key must be 1-255 printable ASCII characters",
            problem_type="invalid-idempotency-key",
        )
    outcome = await services.redeem(
        _factory(request, principal),
        body.to_domain(),
        idempotency_key=idempotency_key,
        now=_now(request),
    )
    if outcome.replayed:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return RedemptionOut.of_redemption(outcome.redemption)


@router.get(
    "/redemptions",
    response_model=RedemptionPage,
    tags=["history"],
    summary="Redemption history, newest first",
)
async def list_redemptions(
    request: Request,
    principal: Principal = Depends(READ),
    limit: Limit = 50,
    cursor: Cursor = None,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
) -> RedemptionPage:
    before = decode_cursor(cursor) if cursor else None
    items = await services.list_redemptions(
        _uow(request, principal), limit=limit, before=before, customer_id=customer_id
    )
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(items) == limit else None
    return RedemptionPage(
        items=[RedemptionOut.of_redemption(r) for r in items], next_cursor=next_cursor
    )


@router.get(
    "/redemptions/{redemption_id}",
    response_model=RedemptionOut,
    tags=["history"],
    summary="One redemption with its applied lines",
)
async def get_redemption(
    redemption_id: Annotated[str, Path(max_length=64)],
    request: Request,
    principal: Principal = Depends(READ),
) -> RedemptionOut:
    redemption = await services.get_redemption(_uow(request, principal), redemption_id)
    return RedemptionOut.of_redemption(redemption)


@router.post(
    "/redemptions/releases",
    response_model=ReleaseOut,
    tags=["discounts"],
    summary="Give a redemption back: its coupon uses count no more (idempotent)",
)
async def release_redemption(
    body: ReleaseIn, request: Request, principal: Principal = Depends(REDEEM)
) -> ReleaseOut:
    """Compensation for a redemption whose purpose never came about (the invoice service
    calls it when the invoice it redeemed for could not be stored). The redemption is
    removed, its key may redeem again."""
    released = await services.release(
        _factory(request, principal), idempotency_key=body.idempotency_key
    )
    return ReleaseOut(
        released=released is not None, redemption_id=released.id if released else None
    )
