"""The kernel's defences against hostile input (issue 8): ASCII-only amounts without a signed
zero, strict JSON bodies, problems whose extensions cannot replace RFC 9457 members,
timestamps with a UTC value, tenant and subject claims, log lines that cannot be forged.
The services' own tests (tests/test_hostile_input_e2e.py) drive the same through each API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, TypeAdapter, ValidationError

from billing_common.auth import AuthError, TokenService
from billing_common.json_body import JsonBodyError, loads
from billing_common.logs import printable
from billing_common.money import Money, MoneyError, format_amount, to_decimal
from billing_common.problems import Problem
from billing_common.web import StrictJsonRoute, create_service_app
from billing_common.wire import AwareTimestamp, Timestamp, parse_aware_timestamp

# --- amounts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["١٠٠", "１００", "۱۰۰", "१००", "1٠0", "1_000", " 1.00", "1.00\n", "1.00\u00a0", "Infinity"],
)
def test_to_decimal_accepts_ascii_decimal_literals_only(text: str) -> None:
    """Decimal() itself accepts every one of these but the last."""
    with pytest.raises(MoneyError):
        to_decimal(text)


@pytest.mark.parametrize("text", ["100", "+1.50", ".5", "5.", "1E+2", "-3.25", "0012.10"])
def test_to_decimal_still_reads_ascii_literals(text: str) -> None:
    assert to_decimal(text) == Decimal(text)


@pytest.mark.parametrize("zero", ["-0", "-0.00", "-0E+3", "-0.000000"])
def test_negative_zero_is_zero_everywhere(zero: str) -> None:
    assert not to_decimal(zero).is_signed()
    assert not to_decimal(Decimal(zero)).is_signed()
    assert not format_amount(Decimal(zero)).startswith("-")
    money = Money.of("0.00", "EUR")
    assert -money == money
    assert (-money).to_wire() == {"amount": "0.00", "currency": "EUR"}
    assert (Money.of("1.00", "EUR") - Money.of("1.00", "EUR")).to_wire()["amount"] == "0.00"


def test_format_amount_keeps_the_exponent_out() -> None:
    assert format_amount(Decimal("1E+2")) == "100"
    assert format_amount(Decimal("-1.50")) == "-1.50"


# --- strict JSON -----------------------------------------------------------------------


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    with pytest.raises(JsonBodyError) as top:
        loads(b'{"amount": "1.00", "amount": "1000.00"}')
    assert (top.value.status, top.value.problem_type) == (400, "duplicate-json-key")
    with pytest.raises(JsonBodyError):
        loads(b'{"lines": [{"unit_price": "1", "unit_price": "2"}]}')
    assert loads(b'{"a": {"b": 1}, "b": {"a": 2}}') == {"a": {"b": 1}, "b": {"a": 2}}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name": "a\\u0000b"}',
        b'{"a\\u0000": 1}',
        b'{"names": ["ok", ["deeper", "x\\u0000"]]}',
        b'{"name": "\\ud800"}',  # a lone surrogate: no driver can encode it as UTF-8
        b'{"name": "\\uDFFF"}',
        json.dumps({"name": "a\x00b"}).encode("utf-16"),
    ],
)
def test_unstorable_characters_are_refused(raw: bytes) -> None:
    with pytest.raises(JsonBodyError) as refused:
        loads(raw)
    assert (refused.value.status, refused.value.problem_type) == (422, "unacceptable-character")


@pytest.mark.parametrize("raw", [b'{"name": "\xed\xa0\x80"}', b'{"name": "\xff"}'])
def test_bodies_that_are_not_utf_8_are_malformed(raw: bytes) -> None:
    """The first is a lone surrogate encoded as UTF-8, which json.loads would pass on."""
    with pytest.raises(JsonBodyError) as refused:
        loads(raw)
    assert (refused.value.status, refused.value.problem_type) == (400, "malformed-json")


def test_escapes_that_only_look_unstorable_are_kept() -> None:
    assert loads(b'{"text": "\\\\u0000"}') == {"text": "\\u0000"}
    assert loads(b'{"emoji": "\\ud83d\\ude00"}') == {"emoji": "\U0001f600"}
    assert loads(b'{"hangul": "\\ud7ff"}') == {"hangul": "\ud7ff"}


def test_nesting_past_the_parsers_recursion_is_a_json_body_error() -> None:
    with pytest.raises(JsonBodyError) as deep:
        loads(b"[" * 50_000 + b"]" * 50_000)
    assert (deep.value.status, deep.value.problem_type) == (400, "malformed-json")


def test_malformed_json_stays_a_json_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads(b'{"a": ')


# --- the application frame -------------------------------------------------------------


class PaymentPending(Exception):
    """A domain error whose extensions name RFC 9457 members."""

    def __init__(self) -> None:
        super().__init__("the payment is pending")
        self.problem_extensions = {"status": "pending", "type": "card", "payment_id": "p1"}


class Thing(BaseModel):
    amount: str
    name: str = ""


router = APIRouter(route_class=StrictJsonRoute)


@router.post("/things")
async def create_thing(body: Thing) -> dict[str, str]:
    return body.model_dump()


@router.post("/pending")
async def refund_pending() -> None:
    raise PaymentPending


@router.post("/problem")
async def raise_problem() -> None:
    raise Problem(409, "Busy", "try later", problem_type="busy", status="x", instance="y")


@dataclass
class _Ctx:
    tokens: TokenService


TOKENS = TokenService("s" * 40, issuer="billing-platform", audience="billing-api")


def _app(routers: list[APIRouter], max_body_bytes: int = 16_384) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ctx = _Ctx(TOKENS)
        yield

    return create_service_app(
        service="demo",
        title="Demo",
        description="",
        version="0",
        routers=routers,
        lifespan=lifespan,
        domain_errors={PaymentPending: 409},
        readiness_checks=lambda app: [],
        max_body_bytes=max_body_bytes,
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = _app([router])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
            yield c


def _problem(response: httpx.Response, status: int, problem_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert (body["status"], body["type"]) == (status, f"/problems/{problem_type}")
    return body


async def test_domain_error_extensions_never_replace_rfc_9457_members(
    client: httpx.AsyncClient,
) -> None:
    body = _problem(await client.post("/pending"), 409, "payment-pending")
    assert body["payment_id"] == "p1"
    body = _problem(await client.post("/problem"), 409, "busy")
    assert body["instance"] == "/problem"


async def test_bodies_are_parsed_strictly(client: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    ok = await client.post("/things", content=b'{"amount": "1.00"}', headers=headers)
    assert ok.json() == {"amount": "1.00", "name": ""}
    twice = b'{"amount": "1.00", "amount": "900.00"}'
    _problem(
        await client.post("/things", content=twice, headers=headers), 400, "duplicate-json-key"
    )
    nul = b'{"amount": "1.00", "name": "a\\u0000"}'
    _problem(
        await client.post("/things", content=nul, headers=headers), 422, "unacceptable-character"
    )
    deep = b'{"amount": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    _problem(await client.post("/things", content=deep, headers=headers), 400, "malformed-json")


async def test_a_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 4096

    response = await client.post(
        "/things", content=chunks(), headers={"content-type": "application/json"}
    )
    _problem(response, 413, "payload-too-large")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/things/a%00b", {}),
        ("/things?name=a%00b", {}),
        ("/things", {"idempotency-key": "a\x00b"}),
        ("/things", [("x-twice", "a\x00b"), ("x-twice", "fine")]),
    ],
)
async def test_nul_outside_the_body_is_422(
    client: httpx.AsyncClient, path: str, headers: dict[str, str] | list[tuple[str, str]]
) -> None:
    response = await client.post(path, json={"amount": "1"}, headers=headers)
    _problem(response, 422, "unacceptable-character")


def test_a_router_that_parses_json_leniently_is_refused() -> None:
    lenient = APIRouter()

    @lenient.post("/lenient")
    async def anything(body: Thing) -> None:
        return None

    with pytest.raises(TypeError, match="StrictJsonRoute"):
        _app([lenient])


# --- timestamps ------------------------------------------------------------------------

EARLY = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
LATE = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))


@pytest.mark.parametrize("value", [EARLY, LATE])
def test_timestamps_without_a_utc_value_are_refused(value: datetime) -> None:
    for schema in (AwareTimestamp, Timestamp):
        with pytest.raises(ValidationError):
            TypeAdapter(schema).validate_python(value.isoformat())
    with pytest.raises(ValueError, match="1-9999"):
        parse_aware_timestamp(value.isoformat())


def test_timestamps_at_the_edges_of_utc_are_kept() -> None:
    first = datetime(1, 1, 1, tzinfo=UTC)
    last = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    for value in (first, last):
        assert TypeAdapter(AwareTimestamp).validate_python(value.isoformat()) == value
        assert parse_aware_timestamp(value.isoformat()) == value
    naive = TypeAdapter(Timestamp).validate_python("0001-01-01T00:00:00")
    assert naive.tzinfo is None
    with pytest.raises(ValueError, match="offset"):
        parse_aware_timestamp("2026-01-01T00:00:00")


# --- claims and logs -------------------------------------------------------------------


def _token(**claims: Any) -> str:
    base = {"sub": "u", "tenant": "acme", "iss": "billing-platform", "aud": "billing-api"}
    merged = {"exp": int(datetime.now(UTC).timestamp()) + 60, **base, **claims}
    return jwt.encode(merged, "s" * 40, algorithm="HS256")


@pytest.mark.parametrize(
    "tenant", ["demo\x00", "Demo", "de mo", "demo\n", "-demo", "_x", "a" * 64, "dé", "../x"]
)
def test_tenant_claims_off_the_pattern_are_refused(tenant: str) -> None:
    with pytest.raises(AuthError, match="tenant"):
        TOKENS.verify(_token(tenant=tenant))


@pytest.mark.parametrize("tenant", ["acme", "t1", "a", "a" * 63, "my-tenant_2"])
def test_tenant_claims_on_the_pattern_are_accepted(tenant: str) -> None:
    assert TOKENS.verify(_token(tenant=tenant)).tenant == tenant


@pytest.mark.parametrize("subject", ["u\x00", "line\nbreak", "", "x" * 256])
def test_subjects_that_cannot_be_recorded_are_refused(subject: str) -> None:
    with pytest.raises(AuthError, match="sub"):
        TOKENS.verify(_token(sub=subject))


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert printable("/v1/x\n12:00:00 INFO forged") == "/v1/x\\x0a12:00:00 INFO forged"
    assert printable("\x1b[2J\r\x7f\x85\u2028") == "\\x1b[2J\\x0d\\x7f\\x85\\u2028"
    assert printable("/v1/café/ok") == "/v1/café/ok"
