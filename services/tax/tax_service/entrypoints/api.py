"""HTTP API of the tax service (docs/api-contracts.md). Every route needs a bearer token; the
tenant comes from the token, never from the request."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response, status

from billing_common.api_auth import requires
from billing_common.web import DirectJsonRoute, StrictJsonRoute, accepted
from tax_service.entrypoints.calculation_json import calculation_json
from tax_service.entrypoints.cursors import decode_cursor, encode_cursor
from tax_service.entrypoints.deps import Admin, Calculator, Deps, Reader, dependencies_of
from tax_service.entrypoints.schemas import (
    CalculationIn,
    CalculationOut,
    CalculationPage,
    DiscardedOut,
    IsoDate,
    RuleDefinition,
    RuleIn,
    RuleOut,
    RulePage,
)
from tax_service.service_layer import calculations, rules
from tax_service.service_layer.ports import CalculationQuery, RuleQuery

router = APIRouter(prefix="/v1/tax", route_class=StrictJsonRoute)

RuleIdPath = Annotated[str, Path(min_length=1, max_length=36)]
KeyPath = Annotated[str, Path(min_length=1, max_length=253)]
CalculationIdPath = Annotated[str, Path(min_length=1, max_length=36)]
Limit = Annotated[int, Query(ge=1, le=200)]


# --- calculations -----------------------------------------------------------------------

_CALCULATOR = requires("tax:calculate")


class _CalculationRoute(DirectJsonRoute):
    """The calculation route, answered directly (billing_common.web.DirectJsonRoute) when
    everything is well formed: a strict JSON body sent as `application/json`, a token with
    the scope, a body the schema accepts.

    FastAPI solves the route's dependencies, validates the body through its field wrapper
    and re-checks the answer on every request for what is here a token check and one
    `model_validate`. Anything else (another content type, a body or token that is refused,
    a body the schema refuses) is left to the route's FastAPI handler, which gets the body
    again, so every 4xx problem is the one it always gave; the OpenAPI document still comes
    from the route's declaration."""

    async def answer_well_formed(self, request: Request, document: Any) -> Response | None:
        if (found := await accepted(request, document, _CALCULATOR, CalculationIn)) is None:
            return None
        principal, calculation_in = found
        return await calculate(calculation_in, request, principal)


async def calculate(body: CalculationIn, request: Request, principal: Calculator) -> Response:
    # The hot path. Its Dependencies read from the app here rather than through `Deps`: a
    # dependency FastAPI would solve (and cache) on every request for one attribute read.
    deps = dependencies_of(request)
    now = deps.clock()
    tax_request = body.to_domain(today=now.astimezone(dt.UTC).date())
    calculation = await calculations.calculate(principal.tenant, tax_request, deps, now=now)
    # Written from the domain result; the same bytes as CalculationOut (`response_model`).
    return Response(
        calculation_json(calculation),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
    )


router.add_api_route(
    "/calculations",
    calculate,
    methods=["POST"],
    status_code=status.HTTP_201_CREATED,
    response_model=CalculationOut,
    tags=["calculations"],
    summary="Calculate the taxes of a set of lines (stored in the history)",
    description=(
        "Exclusive prices are net (tax is added); inclusive prices are gross (tax is backed "
        "out so net + tax == gross). An unknown jurisdiction or category is a 422 problem "
        "(`/problems/unknown-jurisdiction`, `/problems/unknown-category`), never a silent 0 %."
    ),
    route_class_override=_CalculationRoute,
)


@router.get(
    "/calculations",
    response_model=CalculationPage,
    tags=["calculations"],
    summary="Calculation history, newest first",
)
async def list_calculations(
    deps: Deps,
    principal: Reader,
    limit: Limit = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    reference: Annotated[str | None, Query(max_length=128)] = None,
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
) -> CalculationPage:
    after = decode_cursor(cursor) if cursor else None
    # One more than asked tells whether an older page exists without a count query.
    found = await calculations.list_calculations(
        principal.tenant,
        deps,
        limit=limit + 1,
        after=after,
        query=CalculationQuery(reference=reference, customer_id=customer_id),
    )
    page = list(found[:limit])
    next_cursor = encode_cursor(page[-1]) if len(found) > limit else None
    return CalculationPage(items=[CalculationOut.of(c) for c in page], next_cursor=next_cursor)


@router.get(
    "/calculations/{calculation_id}",
    response_model=CalculationOut,
    tags=["calculations"],
    summary="One calculation with its inputs and per-rule breakdown",
)
async def get_calculation(
    calculation_id: CalculationIdPath, deps: Deps, principal: Reader
) -> CalculationOut:
    return CalculationOut.of(
        await calculations.get_calculation(principal.tenant, calculation_id, deps)
    )


# --- rules ------------------------------------------------------------------------------


@router.post(
    "/rules",
    status_code=status.HTTP_201_CREATED,
    response_model=RuleOut,
    tags=["rules"],
    summary="Create a tax rule",
    responses={409: {"description": "the key is taken (`/problems/duplicate-rule-key`)"}},
)
async def create_rule(body: RuleIn, deps: Deps, principal: Admin) -> RuleOut:
    rule = body.to_domain(rule_id=str(uuid.uuid4()), key=body.key)
    return RuleOut.of(await rules.create_rule(principal.tenant, rule, deps))


@router.get("/rules", response_model=RulePage, tags=["rules"], summary="List tax rules")
async def list_rules(
    deps: Deps,
    principal: Reader,
    country: Annotated[str | None, Query(min_length=2, max_length=2)] = None,
    region: Annotated[str | None, Query(min_length=1, max_length=3)] = None,
    category: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    valid_on: Annotated[IsoDate | None, Query(description="only rules valid that day")] = None,
    limit: Limit = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> RulePage:
    query = RuleQuery(
        country=country.upper() if country else None,
        region=region.upper() if region else None,
        category=category.strip().lower() if category else None,
        valid_on=valid_on,
    )
    page = await rules.list_rules(principal.tenant, query, deps, limit=limit, offset=offset)
    return RulePage(
        items=[RuleOut.of(rule) for rule in page.items],
        total=page.total,
        limit=limit,
        offset=offset,
    )


@router.get(
    "/rules/by-key/{key}", response_model=RuleOut, tags=["rules"], summary="Get a rule by key"
)
async def get_rule_by_key(key: KeyPath, deps: Deps, principal: Reader) -> RuleOut:
    return RuleOut.of(await rules.get_rule_by_key(principal.tenant, key, deps))


@router.put(
    "/rules/by-key/{key}",
    response_model=RuleOut,
    tags=["rules"],
    summary="Create or update the rule with this key (idempotent)",
    description=(
        "201 when the rule was created, 200 when it existed (updated, or unchanged when the "
        "definition is the same — then nothing is written, not even `updated_at`). This is "
        "how the operator reconciles TaxRule resources."
    ),
    responses={201: {"model": RuleOut, "description": "created"}},
)
async def upsert_rule_by_key(
    key: KeyPath,
    body: RuleDefinition,
    deps: Deps,
    response: Response,
    principal: Admin,
) -> RuleOut:
    definition = body.to_domain(rule_id=str(uuid.uuid4()), key=key)
    result = await rules.upsert_rule_by_key(principal.tenant, key, definition, deps)
    response.status_code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
    return RuleOut.of(result.rule)


@router.delete(
    "/rules/by-key/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["rules"],
    summary="Delete the rule with this key (idempotent: 204 also when there is none)",
)
async def delete_rule_by_key(key: KeyPath, deps: Deps, principal: Admin) -> Response:
    await rules.delete_rule_by_key(principal.tenant, key, deps)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/rules/{rule_id}", response_model=RuleOut, tags=["rules"], summary="Get a rule")
async def get_rule(rule_id: RuleIdPath, deps: Deps, principal: Reader) -> RuleOut:
    return RuleOut.of(await rules.get_rule(principal.tenant, rule_id, deps))


@router.put(
    "/rules/{rule_id}",
    response_model=RuleOut,
    tags=["rules"],
    summary="Replace a rule's definition (its key included)",
    responses={409: {"description": "the key is taken (`/problems/duplicate-rule-key`)"}},
)
async def replace_rule(rule_id: RuleIdPath, body: RuleIn, deps: Deps, principal: Admin) -> RuleOut:
    rule = body.to_domain(rule_id=rule_id, key=body.key)
    return RuleOut.of(await rules.replace_rule(principal.tenant, rule, deps))


@router.delete(
    "/rules/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    tags=["rules"],
    summary="Delete a rule (past calculations keep their copy of it)",
)
async def delete_rule(rule_id: RuleIdPath, deps: Deps, principal: Admin) -> Response:
    await rules.delete_rule(principal.tenant, rule_id, deps)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/calculations",
    response_model=DiscardedOut,
    tags=["calculations"],
    summary="Discard the calculations made for a reference that never came about (idempotent)",
)
async def discard_calculations(
    deps: Deps,
    reference: Annotated[str, Query(min_length=1, max_length=128)],
    principal: Calculator,
) -> DiscardedOut:
    """Compensation: the invoice service calls it for an invoice it could not store, so the
    history keeps no calculation for an invoice that never existed."""
    discarded = await calculations.discard_calculations(principal.tenant, reference, deps)
    return DiscardedOut(discarded=discarded)
