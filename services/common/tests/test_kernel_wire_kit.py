"""The wire kit every service speaks: decimal strings, the Idempotency-Key rule and request
fingerprint, the page cursor, the domain-error base and its problem documents, and reading
an event's data with its registered schema."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Header
from pydantic import BaseModel, ValidationError

from billing_common.cursors import (
    InvalidCursor,
    decode_key,
    decode_timestamp_and_id,
    encode_cursor,
)
from billing_common.errors import DomainError
from billing_common.event_schemas import INVOICE_CREATED, InvoiceCreated, TaxCalculated
from billing_common.events import CloudEvent, PermanentEventError
from billing_common.idempotency import (
    IdempotencyKeyRequired,
    InvalidIdempotencyKey,
    check_idempotency_key,
    idempotency_key_pattern,
    request_fingerprint,
)
from billing_common.problems import install_problem_handlers
from billing_common.wire import AMOUNT_PATTERN, Currency, DateTimeText, DecimalString, Quantity

# --- decimal strings --------------------------------------------------------------------


class Line(BaseModel):
    price: DecimalString
    quantity: Quantity
    currency: Currency


def test_decimal_strings_in_and_out() -> None:
    line = Line.model_validate({"price": "10.50", "quantity": 3, "currency": "eur"})
    assert (line.price, line.quantity, line.currency) == (Decimal("10.50"), 3, "EUR")
    assert line.model_dump(mode="json") == {"price": "10.50", "quantity": "3", "currency": "EUR"}
    assert Line.model_validate({"price": "1", "quantity": "1.5", "currency": "JPY"}).quantity == (
        Decimal("1.5")
    )


@pytest.mark.parametrize(
    ("price", "quantity"),
    [
        (10.5, 1),  # a JSON number for an amount: it may have been a float
        ("1e3", 1),
        ("-1", 1),
        (" 1", 1),
        ("١٠٠", 1),  # Arabic-Indic digits, which Decimal() reads as 100
        ("1", 1.5),  # a fractional quantity as a number
        ("1", True),
        ("1", 10**13),  # over the largest amount
    ],
)
def test_what_is_not_a_decimal_string_is_refused(price: object, quantity: object) -> None:
    with pytest.raises(ValidationError):
        Line.model_validate({"price": price, "quantity": quantity, "currency": "EUR"})


def test_published_schema_is_the_pattern_checked() -> None:
    properties = {
        name: {k: v for k, v in schema.items() if k != "title"}
        for name, schema in Line.model_json_schema()["properties"].items()
    }
    assert properties["price"] == {
        "type": "string",
        "pattern": AMOUNT_PATTERN,
        "examples": ["100.00"],
    }
    assert properties["quantity"]["anyOf"] == [
        {"type": "string", "pattern": AMOUNT_PATTERN},
        {"type": "integer"},
    ]


class Window(BaseModel):
    starts_at: DateTimeText


@pytest.mark.parametrize("value", [0.5, "0.5", "2026-01-01T00:00:00", "0001-01-01T00:00:00+14:00"])
def test_date_time_text_needs_an_iso_string_with_a_utc_value(value: object) -> None:
    with pytest.raises(ValidationError):
        Window.model_validate({"starts_at": value})


# --- Idempotency-Key --------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k", "a b", "x" * 255, "!~"])
def test_well_formed_keys_pass(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", " ", " k", "k ", "x" * 256, "ké", "k\tx", "k\x00"])
def test_malformed_keys_are_invalid(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKey) as refused:
        check_idempotency_key(key)
    assert (refused.value.status, refused.value.type_slug()) == (400, "invalid-idempotency-key")


def test_a_missing_key_is_required_and_a_service_may_allow_shorter_keys() -> None:
    with pytest.raises(IdempotencyKeyRequired) as missing:
        check_idempotency_key(None, why="an invoice is created once per key")
    assert missing.value.type_slug() == "idempotency-key-required"
    assert str(missing.value).endswith("an invoice is created once per key")
    assert check_idempotency_key("x" * 128, max_length=128)
    with pytest.raises(InvalidIdempotencyKey):
        check_idempotency_key("x" * 129, max_length=128)
    # The pattern the services published before the kit, byte for byte.
    assert idempotency_key_pattern(128) == r"^[\x21-\x7e]([\x20-\x7e]{0,126}[\x21-\x7e])?$"


def test_the_fingerprint_is_the_hash_of_the_canonical_request() -> None:
    one = request_fingerprint({"amount": "10.00", "codes": ["A"], "reference": None})
    assert one == request_fingerprint({"reference": None, "codes": ["A"], "amount": "10.00"})
    assert one != request_fingerprint({"amount": "10.0", "codes": ["A"], "reference": None})
    # SHA-256 of {"a":"x","b":1}: the form invoices and redemptions stored before the kit,
    # so that a request retried across the upgrade is still a replay.
    assert request_fingerprint({"b": 1, "a": "x"}) == (
        "cdab067e9f3beb32d1252cfd63e492592fecbf591b0d08cadb24bb17f3864246"
    )


# --- cursors ----------------------------------------------------------------------------


def test_a_cursor_round_trips_its_position_in_utc() -> None:
    moment = datetime(2026, 11, 24, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    cursor = encode_cursor(moment, "inv-1")
    assert "=" not in cursor and base64.urlsafe_b64decode(cursor + "==")
    when, item = decode_timestamp_and_id(cursor)
    assert (when, item) == (moment, "inv-1") and when.tzinfo is UTC
    assert decode_key(encode_cursor("WELCOME10")) == "WELCOME10"


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "garbage!",
        "é",
        _b64({"c": "2026-01-01T00:00:00+00:00", "i": "x"}),  # another shape
        _b64(["2026-01-01T00:00:00+00:00"]),
        _b64(["2026-01-01T00:00:00+00:00", 7]),
        _b64(["2026-01-01T00:00:00", "x"]),  # no offset
        _b64(["0001-01-01T00:00:00+14:00", "x"]),  # no UTC value
        _b64(["9999-12-31T23:00:00-05:00", "x"]),
    ],
)
def test_a_cursor_not_handed_out_is_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursor) as refused:
        decode_timestamp_and_id(cursor)
    assert (refused.value.status, refused.value.type_slug()) == (400, "invalid-cursor")


def test_a_timestamp_cursor_is_not_a_key_cursor() -> None:
    with pytest.raises(InvalidCursor):
        decode_key(encode_cursor(datetime.now(UTC), "x"))


# --- domain errors as problems ----------------------------------------------------------


class Overdrawn(DomainError):
    status = 409


class RendererBusy(DomainError):
    status = 503
    retry_after_seconds = 2
    title = "Renderer busy"
    problem_type = "busy"


class Legacy(Exception):
    """An exception of a service's map that is no DomainError."""


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_problem_handlers(app, {Legacy: 418, RendererBusy: 429})

    @app.get("/overdrawn")
    async def overdrawn() -> None:
        raise Overdrawn("the balance is 0.00", balance="0.00", status="x")

    @app.get("/busy")
    async def busy() -> None:
        raise RendererBusy("all renderers are busy")

    @app.get("/legacy")
    async def legacy() -> None:
        raise Legacy("old style")

    @app.get("/cursor")
    async def cursor(value: str) -> None:
        decode_timestamp_and_id(value)

    @app.get("/key")
    async def key(value: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> None:
        check_idempotency_key(value)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kit") as c:
        yield c


async def test_a_domain_error_answers_with_its_own_status_type_and_extensions(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/overdrawn")
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["type"], body["title"], body["status"]) == (
        "/problems/overdrawn",
        "Overdrawn",
        409,
    )
    assert (body["detail"], body["balance"]) == ("the balance is 0.00", "0.00")


async def test_a_map_entry_overrides_and_retry_after_is_sent(client: httpx.AsyncClient) -> None:
    busy = await client.get("/busy")
    assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
    assert (busy.json()["type"], busy.json()["title"]) == ("/problems/busy", "Renderer busy")
    legacy = await client.get("/legacy")
    assert legacy.status_code == 418 and legacy.json()["type"] == "/problems/legacy"


async def test_kernel_errors_need_no_map(client: httpx.AsyncClient) -> None:
    cursor = await client.get("/cursor", params={"value": "x"})
    assert cursor.status_code == 400 and cursor.json()["type"] == "/problems/invalid-cursor"
    key = await client.get("/key")
    assert key.status_code == 400
    assert key.json()["title"] == "Idempotency key required"


# --- events -----------------------------------------------------------------------------


def _event(data: dict[str, object]) -> CloudEvent:
    return CloudEvent(source="/billing/invoice", type=INVOICE_CREATED, data=data, tenant="acme")


def test_an_event_is_parsed_with_its_registered_schema() -> None:
    data = {
        "invoice_id": "inv_1",
        "customer_id": "c1",
        "currency": "EUR",
        "total": "119.00",
        "amount_due": "119.00",
        "status": "draft",
    }
    assert _event(data).parse(InvoiceCreated).total == Decimal("119.00")


def test_data_that_does_not_match_is_permanent_and_a_wrong_schema_a_bug() -> None:
    with pytest.raises(PermanentEventError, match="does not match InvoiceCreated"):
        _event({"invoice_id": "inv_1"}).parse(InvoiceCreated)
    with pytest.raises(TypeError, match="carries InvoiceCreated"):
        _event({}).parse(TaxCalculated)
