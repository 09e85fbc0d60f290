"""The service application frame: problems, auth, limits, health and metrics."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel

from billing_common.api_auth import requires
from billing_common.auth import Principal, TokenService
from billing_common.money import Money
from billing_common.ports import PeerUnavailable
from billing_common.web import StrictJsonRoute, create_service_app


class Overdrawn(Exception):
    pass


class Body(BaseModel):
    amount: Decimal
    currency: str


router = APIRouter(route_class=StrictJsonRoute)


@router.post("/things")
async def create_thing(
    body: Body, who: Annotated[Principal, Depends(requires("tax:admin"))]
) -> dict[str, str]:
    money = Money.of(body.amount, body.currency)
    if money.is_negative:
        raise Overdrawn("the amount is negative")
    return {"tenant": who.tenant, **money.to_wire()}


@router.get("/things")
async def list_things(who: Annotated[Principal, Depends(requires("tax:read"))]) -> list[str]:
    return []


# Declared before the literal path it also matches, so Starlette alone would pick it.
@router.get("/things/{thing_id}")
async def get_thing(
    thing_id: str, who: Annotated[Principal, Depends(requires("tax:read"))]
) -> dict[str, str]:
    return {"id": thing_id}


@router.post("/things/archive")
async def archive_things(who: Annotated[Principal, Depends(requires("tax:admin"))]) -> None:
    return None


@router.get("/peer")
async def call_peer(who: Annotated[Principal, Depends(requires("tax:read"))]) -> None:
    raise PeerUnavailable("tax", "connection refused")


@dataclass
class _Ctx:
    tokens: TokenService


TOKENS = TokenService("s" * 40, issuer="billing-platform", audience="billing-api")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = _Ctx(TOKENS)
        yield

    app = create_service_app(
        service="demo",
        title="Demo",
        description="",
        version="0",
        routers=[router],
        lifespan=lifespan,
        domain_errors={Overdrawn: 422},
        readiness_checks=lambda app: [],
        max_body_bytes=1024,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
            yield c


def _auth(*scopes: str, tenant: str = "acme") -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS.mint(subject='u', tenant=tenant, scopes=scopes)}"}


async def test_happy_path_keeps_decimal_strings(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/things", json={"amount": "10.50", "currency": "eur"}, headers=_auth("tax:admin")
    )
    assert r.status_code == 200
    assert r.json() == {"tenant": "acme", "amount": "10.50", "currency": "EUR"}
    assert r.headers["x-trace-id"]


@pytest.mark.parametrize(
    ("headers", "status", "problem"),
    [
        ({}, 401, "/problems/unauthorized"),
        ({"authorization": "Bearer nope"}, 401, "/problems/unauthorized"),
        # What HTTPBearer would not take as a bearer token.
        ({"authorization": "Basic YWNtZTpzZWNyZXQ="}, 401, "/problems/unauthorized"),
        ({"authorization": "Bearer"}, 401, "/problems/unauthorized"),
        ({"authorization": "Bearer    "}, 401, "/problems/unauthorized"),
        ({"authorization": ""}, 401, "/problems/unauthorized"),
    ],
)
async def test_auth_problems(
    client: httpx.AsyncClient, headers: dict[str, str], status: int, problem: str
) -> None:
    r = await client.post("/things", json={"amount": "1", "currency": "EUR"}, headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == problem
    assert "Bearer" in r.headers["www-authenticate"]


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_bearer_scheme_in_any_case_and_padded_token_pass(
    client: httpx.AsyncClient, scheme: str
) -> None:
    token = _auth("tax:admin")["authorization"].removeprefix("Bearer ")
    r = await client.post(
        "/things",
        json={"amount": "1", "currency": "EUR"},
        headers={"authorization": f"{scheme} {token}  "},
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("first_is_valid", [True, False])
async def test_of_two_authorization_headers_the_first_counts(
    client: httpx.AsyncClient, first_is_valid: bool
) -> None:
    valid = _auth("tax:admin")["authorization"]
    headers = [("authorization", valid), ("authorization", "Bearer nope")]
    r = await client.post(
        "/things",
        json={"amount": "1", "currency": "EUR"},
        headers=headers if first_is_valid else headers[::-1],
    )
    assert r.status_code == (200 if first_is_valid else 401), r.text


async def test_openapi_names_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    assert document["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer", "description": "JWT from `make token`"}
    }
    assert document["paths"]["/things"]["post"]["security"] == [{"HTTPBearer": []}]


async def test_missing_scope_is_403(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/things", json={"amount": "1", "currency": "EUR"}, headers=_auth("tax:read")
    )
    assert r.status_code == 403
    assert r.json()["required_scope"] == "tax:admin"


async def test_wrong_method_is_405_naming_every_allowed_method(
    client: httpx.AsyncClient,
) -> None:
    # RFC 9110 15.5.6: a 405 MUST carry Allow. /things has a POST and a GET route; the
    # /healthz route of the kernel a GET only.
    r = await client.delete("/things", headers=_auth("tax:admin"))
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["allow"] == "GET, POST"
    r = await client.post("/healthz")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    # /things/archive is its own resource, not a thing named "archive".
    r = await client.delete("/things/archive", headers=_auth("tax:admin"))
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("content", "status", "problem"),
    [
        (b"{not json", 400, "/problems/malformed-json"),
        (b'{"amount": "abc", "currency": "EUR"}', 422, "/problems/validation"),
        (b'{"amount": "1", "currency": "XXX"}', 422, "/problems/unknown-currency"),
        (b'{"amount": "-1", "currency": "EUR"}', 422, "/problems/overdrawn"),
        (b'{"amount": "1"}', 422, "/problems/validation"),
        (b"[]", 422, "/problems/validation"),
    ],
)
async def test_bad_input_is_a_4xx_problem(
    client: httpx.AsyncClient, content: bytes, status: int, problem: str
) -> None:
    r = await client.post(
        "/things",
        content=content,
        headers={**_auth("tax:admin"), "content-type": "application/json"},
    )
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == problem
    assert body["status"] == status
    assert body["instance"] == "/things"


async def test_huge_body_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/things",
        content=b'{"amount": "' + b"1" * 5000 + b'"}',
        headers={**_auth("tax:admin"), "content-type": "application/json"},
    )
    assert r.status_code == 413
    assert r.json()["type"] == "/problems/payload-too-large"


async def test_peer_down_is_503_with_retry_after(client: httpx.AsyncClient) -> None:
    r = await client.get("/peer", headers=_auth("tax:read"))
    assert r.status_code == 503
    assert r.json()["peer"] == "tax"
    assert r.headers["retry-after"]


async def test_health_readiness_metrics_and_trace_propagation(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    assert (await client.get("/readyz")).json()["status"] == "ready"
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = await client.post(
        "/things",
        json={"amount": "1", "currency": "EUR"},
        headers={**_auth("tax:admin"), "traceparent": parent},
    )
    assert r.headers["x-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    metrics = (await client.get("/metrics")).text
    assert (
        'http_requests_total{method="POST",route="/things",service="demo",status="200"}' in metrics
    )
