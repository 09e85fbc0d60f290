"""HTTP API of the discount service (docs/api-contracts.md). Every route needs a bearer token;
the tenant comes from the token, never from the request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status

from billing_common.api_auth import requires
from billing_common.cursors import decode_key, decode_timestamp_and_id, encode_cursor
from billing_common.idempotency import IDEMPOTENCY_KEY, check_idempotency_key
from billing_common.openapi import idempotency_key_header
from billing_common.web import (
    DirectJsonRoute,
    StrictJsonRoute,
    accepted,
    first_header,
    model_response,
)
from discount_service.entrypoints.deps import Admin, Deps, Quoter, Reader, Redeemer
from discount_service.entrypoints.redemption_schemas import (
    DiscountOut,
    DiscountRequestIn,
    RedemptionOut,
    RedemptionPage,
    ReleaseIn,
    ReleaseOut,
)
from discount_service.entrypoints.schemas import (
    CouponCreate,
    CouponDefinition,
    CouponOut,
    CouponPage,
    PolicyDefinition,
    PolicyList,
    PolicyOut,
    StackingIO,
)
from discount_service.service_layer import coupons, policies, quotes, redemptions
from discount_service.service_layer.ports import CouponQuery, RedemptionQuery

router = APIRouter(prefix="/v1/discounts", route_class=StrictJsonRoute)

CodePath = Annotated[str, Path(min_length=1, max_length=64)]
KeyPath = Annotated[str, Path(min_length=1, max_length=253)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=512)]


# --- coupons ----------------------------------------------------------------------------


@router.post(
    "/coupons",
    status_code=status.HTTP_201_CREATED,
    response_model=CouponOut,
    tags=["coupons"],
    summary="Create a coupon (codes are case-insensitive, unique per tenant)",
    responses={409: {"description": "the code is taken (`/problems/duplicate-coupon-code`)"}},
)
async def create_coupon(body: CouponCreate, principal: Admin, deps: Deps) -> CouponOut:
    coupon = body.to_domain(code=body.code.strip(), coupon_id=None)
    return CouponOut.of(await coupons.create_coupon(principal.tenant, coupon, deps))


@router.get("/coupons", response_model=CouponPage, tags=["coupons"], summary="List coupons")
async def list_coupons(
    principal: Reader,
    deps: Deps,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> CouponPage:
    after = decode_key(cursor) if cursor else None
    page = await coupons.list_coupons(principal.tenant, CouponQuery(limit, after=after), deps)
    next_cursor = encode_cursor(page[-1].key) if len(page) == limit else None
    return CouponPage(items=[CouponOut.of(c) for c in page], next_cursor=next_cursor)


@router.get("/coupons/{code}", response_model=CouponOut, tags=["coupons"], summary="Get a coupon")
async def get_coupon(code: CodePath, principal: Reader, deps: Deps) -> CouponOut:
    return CouponOut.of(await coupons.get_coupon(principal.tenant, code, deps))


@router.put(
    "/coupons/{code}",
    response_model=CouponOut,
    tags=["coupons"],
    summary="Replace a coupon's definition (its redemption count is kept)",
)
async def replace_coupon(
    code: CodePath,
    body: CouponDefinition,
    principal: Admin,
    deps: Deps,
) -> CouponOut:
    current = await coupons.get_coupon(principal.tenant, code, deps)
    coupon = body.to_domain(
        code=current.code,
        coupon_id=current.id,
        default_start=current.starts_at,  # an omitted starts_at keeps the coupon's start
        redeemed_count=current.redeemed_count,
    )
    return CouponOut.of(await coupons.replace_coupon(principal.tenant, coupon, deps))


@router.delete(
    "/coupons/{code}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["coupons"],
    summary="Delete a coupon (redemption history keeps its code and name)",
)
async def delete_coupon(code: CodePath, principal: Admin, deps: Deps) -> Response:
    await coupons.delete_coupon(principal.tenant, code, deps)
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
    response: Response,
    principal: Admin,
    deps: Deps,
) -> PolicyOut:
    policy = body.to_domain(key)
    created = await policies.put_policy(principal.tenant, policy, deps)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return PolicyOut.of(policy)


@router.get("/policies", response_model=PolicyList, tags=["policies"], summary="List policies")
async def list_policies(principal: Reader, deps: Deps) -> PolicyList:
    items = await policies.list_policies(principal.tenant, deps)
    return PolicyList(items=[PolicyOut.of(p) for p in items])


@router.get("/policies/{key}", response_model=PolicyOut, tags=["policies"], summary="Get a policy")
async def get_policy(key: KeyPath, principal: Reader, deps: Deps) -> PolicyOut:
    return PolicyOut.of(await policies.get_policy(principal.tenant, key, deps))


@router.delete(
    "/policies/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["policies"],
    summary="Delete a policy (404 if there is none: a reconciler may treat that as done)",
)
async def delete_policy(key: KeyPath, principal: Admin, deps: Deps) -> Response:
    await policies.delete_policy(principal.tenant, key, deps)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- stacking settings ------------------------------------------------------------------


@router.get(
    "/settings/stacking",
    response_model=StackingIO,
    tags=["settings"],
    summary="The tenant's stacking cap",
)
async def get_stacking(principal: Reader, deps: Deps) -> StackingIO:
    return StackingIO.of(await policies.get_stacking_settings(principal.tenant, deps))


@router.put(
    "/settings/stacking",
    response_model=StackingIO,
    tags=["settings"],
    summary="Set the tenant's stacking cap",
)
async def put_stacking(body: StackingIO, principal: Admin, deps: Deps) -> StackingIO:
    stored = await policies.put_stacking_settings(principal.tenant, body.to_domain(), deps)
    return StackingIO.of(stored)


# --- quotes and redemptions -------------------------------------------------------------


_QUOTER = requires("discount:quote")
_REDEEMER = requires("discount:redeem")
_IDEMPOTENCY_HEADER = IDEMPOTENCY_KEY.lower().encode("latin-1")


class _QuoteRoute(DirectJsonRoute):
    """The quote, answered directly (billing_common.web.DirectJsonRoute) when the token has
    the scope and the schema accepts the body; anything else is left to the route's FastAPI
    handler, which gets the body again, so every 4xx problem is the one it always gave."""

    async def answer_well_formed(self, request: Request, document: Any) -> Response | None:
        if (found := await accepted(request, document, _QUOTER, DiscountRequestIn)) is None:
            return None
        principal, body = found
        return await create_quote(body, principal, request.app.state.deps)


class _RedemptionRoute(DirectJsonRoute):
    """The redemption (one per invoice), answered directly as the quote is. The
    Idempotency-Key is read as FastAPI reads the header (Starlette's Headers.get: the first
    raw header of the lower-case name) and checked in the endpoint as before, after the
    token and the body, so a missing or malformed key is the same 400 problem in the same
    order."""

    async def answer_well_formed(self, request: Request, document: Any) -> Response | None:
        if (found := await accepted(request, document, _REDEEMER, DiscountRequestIn)) is None:
            return None
        principal, body = found
        key = first_header(request, _IDEMPOTENCY_HEADER)
        return await create_redemption(body, principal, request.app.state.deps, key)


async def create_quote(body: DiscountRequestIn, principal: Quoter, deps: Deps) -> Response:
    result = await quotes.quote(principal.tenant, body.to_domain(), deps)
    # The hot path: serialised once, not re-validated (the schema is `response_model`'s).
    return model_response(DiscountOut.of(result))


router.add_api_route(
    "/quotes",
    create_quote,
    methods=["POST"],
    response_model=DiscountOut,
    tags=["discounts"],
    summary="What discounts would apply (no side effect)",
    route_class_override=_QuoteRoute,
)


async def create_redemption(
    body: DiscountRequestIn,
    principal: Redeemer,
    deps: Deps,
    idempotency_key: Annotated[
        str | None, idempotency_key_header("Required: a redemption is applied once per key")
    ] = None,
) -> Response:
    idempotency_key = check_idempotency_key(
        idempotency_key, why="a redemption is applied once per key"
    )
    outcome = await redemptions.redeem(principal.tenant, body.to_domain(), idempotency_key, deps)
    # One per invoice: serialised once, not re-validated (the schema is `response_model`'s).
    answer = RedemptionOut.of_redemption(outcome.redemption)
    if outcome.replayed:
        replayed = model_response(answer, status_code=status.HTTP_200_OK)
        replayed.headers["Idempotent-Replayed"] = "true"
        return replayed
    return model_response(answer, status_code=status.HTTP_201_CREATED)


router.add_api_route(
    "/redemptions",
    create_redemption,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=RedemptionOut,
    tags=["discounts"],
    summary="Apply discounts once per Idempotency-Key (201 new, 200 replayed)",
    responses={
        200: {"model": RedemptionOut, "description": "the key was seen with this request"},
        409: {"description": "key reused with another request, or coupon just used up"},
        422: {"description": "invalid request, or a coupon cannot apply (code, reason)"},
    },
    route_class_override=_RedemptionRoute,
)


@router.get(
    "/redemptions",
    response_model=RedemptionPage,
    tags=["history"],
    summary="Redemption history, newest first",
)
async def list_redemptions(
    principal: Reader,
    deps: Deps,
    limit: Limit = 50,
    cursor: Cursor = None,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
) -> RedemptionPage:
    before = decode_timestamp_and_id(cursor) if cursor else None
    query = RedemptionQuery(limit, before=before, customer_id=customer_id)
    items = await redemptions.list_redemptions(principal.tenant, query, deps)
    last = items[-1] if len(items) == limit else None
    next_cursor = encode_cursor(last.created_at, last.id) if last else None
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
    principal: Reader,
    deps: Deps,
) -> RedemptionOut:
    redemption = await redemptions.get_redemption(principal.tenant, redemption_id, deps)
    return RedemptionOut.of_redemption(redemption)


@router.post(
    "/redemptions/releases",
    response_model=ReleaseOut,
    tags=["discounts"],
    summary="Give a redemption back: its coupon uses count no more (idempotent)",
)
async def release_redemption(body: ReleaseIn, principal: Redeemer, deps: Deps) -> ReleaseOut:
    """Compensation for a redemption whose purpose never came about (the invoice service
    calls it when the invoice it redeemed for could not be stored). The redemption is
    removed, its key may redeem again."""
    released = await redemptions.release(principal.tenant, body.idempotency_key, deps)
    return ReleaseOut(
        released=released is not None, redemption_id=released.id if released else None
    )
