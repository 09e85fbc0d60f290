"""Routes answered by the request middleware itself (billing_common.web.DirectJsonRoute):
what they answer must be what the same endpoint answers through FastAPI's handler, with the
same trace header, metrics and problems, and whatever they leave must take the usual way."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ValidationError

from billing_common.api_auth import requires
from billing_common.auth import Principal, TokenService
from billing_common.web import DirectJsonRoute, StrictJsonRoute, create_service_app

TOKENS = TokenService("s" * 40, issuer="billing-platform", audience="billing-api")
_ADMIN = requires("tax:admin")


@dataclass
class _Ctx:
    tokens: TokenService


class Overdrawn(Exception):
    pass


class Body(BaseModel):
    amount: Decimal
    currency: str


answered_by: list[str] = []


def _answer(body: Body, who: Principal) -> Response:
    if body.currency == "BOOM":
        raise RuntimeError("an unexpected fault")
    if body.amount < 0:
        raise Overdrawn("the amount is negative")
    return Response(
        f'{{"tenant":"{who.tenant}","amount":"{body.amount}"}}',
        status_code=201,
        media_type="application/json",
    )


async def pay(body: Body, who: Annotated[Principal, Depends(_ADMIN)]) -> Response:
    answered_by.append("fastapi")
    return _answer(body, who)


class _PayRoute(DirectJsonRoute):
    async def answer_well_formed(self, request: Request, document: Any) -> Response | None:
        try:
            who = await _ADMIN(request)
            model = Body.model_validate(document)
        except (ValidationError, Exception):
            return None
        answered_by.append("direct")
        return _answer(model, who)


async def shadowing(thing_id: str) -> dict[str, str]:
    return {"shadowed_by": thing_id}


def _router(route_class: type[StrictJsonRoute]) -> APIRouter:
    router = APIRouter(route_class=StrictJsonRoute)
    router.add_api_route(
        "/pay", pay, methods=["POST"], status_code=201, route_class_override=route_class
    )
    # Declared first, it takes /things/pay: the direct route behind it must not answer.
    router.add_api_route("/things/{thing_id}", shadowing, methods=["POST"])
    router.add_api_route("/things/pay", pay, methods=["POST"], route_class_override=route_class)
    return router


def _app(route_class: type[StrictJsonRoute]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = _Ctx(TOKENS)
        yield

    return create_service_app(
        service="demo",
        title="Demo",
        description="",
        version="0",
        routers=[_router(route_class)],
        lifespan=lifespan,
        domain_errors={Overdrawn: 422},
        readiness_checks=lambda app: [],
        max_body_bytes=1024,
    )


@asynccontextmanager
async def _client(route_class: type[StrictJsonRoute]) -> AsyncIterator[httpx.AsyncClient]:
    app = _app(route_class)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            yield client


def _auth(*scopes: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS.mint(subject='u', tenant='acme', scopes=scopes)}"}


JSON = {"content-type": "application/json"}
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# Each request as a function of a client, so that a chunked body is built once per client.
REQUESTS: dict[str, Callable[[httpx.AsyncClient], Any]] = {
    "well formed": lambda c: c.post(
        "/pay",
        content=b'{"amount": "1.50", "currency": "EUR"}',
        headers={**JSON, **_auth("tax:admin"), "traceparent": PARENT},
    ),
    "charset": lambda c: c.post(
        "/pay",
        content=b'{"amount": "1.50", "currency": "EUR"}',
        headers={"content-type": "application/json; charset=utf-8", **_auth("tax:admin")},
    ),
    "in chunks": lambda c: c.post(
        "/pay",
        content=_chunks(b'{"amount": "2",', b' "currency": "EUR"}'),
        headers={**JSON, **_auth("tax:admin")},
    ),
    "empty body": lambda c: c.post("/pay", content=b"", headers={**JSON, **_auth("tax:admin")}),
    "two content types": lambda c: c.post(
        "/pay",
        content=b'{"amount": "1", "currency": "EUR"}',
        headers=[*JSON.items(), ("content-type", "text/plain"), *_auth("tax:admin").items()],
    ),
    "no token": lambda c: c.post(
        "/pay", content=b'{"amount": "1", "currency": "EUR"}', headers=JSON
    ),
    "wrong scope": lambda c: c.post(
        "/pay", content=b'{"amount": "1", "currency": "EUR"}', headers={**JSON, **_auth("tax:read")}
    ),
    "duplicate key": lambda c: c.post(
        "/pay", content=b'{"amount": "1", "amount": "2"}', headers={**JSON, **_auth("tax:admin")}
    ),
    "schema": lambda c: c.post(
        "/pay", content=b'{"amount": "x"}', headers={**JSON, **_auth("tax:admin")}
    ),
    "domain error": lambda c: c.post(
        "/pay",
        content=b'{"amount": "-1", "currency": "EUR"}',
        headers={**JSON, **_auth("tax:admin")},
    ),
    "fault": lambda c: c.post(
        "/pay",
        content=b'{"amount": "1", "currency": "BOOM"}',
        headers={**JSON, **_auth("tax:admin")},
    ),
    "too large": lambda c: c.post(
        "/pay",
        content=b'{"amount": "' + b"1" * 2000 + b'"}',
        headers={**JSON, **_auth("tax:admin")},
    ),
    "too large in chunks": lambda c: c.post(
        "/pay",
        content=_chunks(b'{"amount": "', b"1" * 2000, b'"}'),
        headers={**JSON, **_auth("tax:admin")},
    ),
    "NUL in a header": lambda c: c.post(
        "/pay", content=b"{}", headers={**JSON, **_auth("tax:admin"), "x-note": "a\x00b"}
    ),
    "other method": lambda c: c.get("/pay", headers=_auth("tax:admin")),
    "shadowed": lambda c: c.post(
        "/things/pay",
        content=b'{"amount": "1", "currency": "EUR"}',
        headers={**JSON, **_auth("tax:admin")},
    ),
}

# The requests a direct route answers itself; every other one takes FastAPI's way.
DIRECT = {"well formed", "in chunks", "domain error", "fault"}


def _seen(response: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """The answer without what differs per request (the trace id, in a header and in a
    problem, and the length that follows from it)."""
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("x-trace-id", "content-length")
    }
    body = response.json()
    if isinstance(body, dict):
        body.pop("trace_id", None)
    return response.status_code, headers, body


@pytest.mark.parametrize("name", list(REQUESTS))
async def test_a_direct_route_answers_as_fastapi_does(name: str) -> None:
    answered_by.clear()
    async with _client(StrictJsonRoute) as plain:
        expected = await REQUESTS[name](plain)
    assert "direct" not in answered_by
    answered_by.clear()
    async with _client(_PayRoute) as direct:
        got = await REQUESTS[name](direct)
    assert _seen(got) == _seen(expected)
    assert bool(got.headers.get("x-trace-id")) == bool(expected.headers.get("x-trace-id"))
    if name in DIRECT:
        assert "fastapi" not in answered_by
    else:
        assert "direct" not in answered_by


async def test_a_direct_answer_carries_the_trace_id_and_counts_in_the_metrics() -> None:
    answered_by.clear()
    async with _client(_PayRoute) as client:
        response = await REQUESTS["well formed"](client)
        assert response.status_code == 201
        assert answered_by == ["direct"]
        assert response.headers["x-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        metrics = (await client.get("/metrics")).text
    assert (
        'http_requests_total{method="POST",route="/pay",service="demo",status="201"} 1.0' in metrics
    )
