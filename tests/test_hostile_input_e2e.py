"""Hostile and careless input against the four real services (issue 8, "No 5xx, ever, for
bad input" and amounts), on SQLite and on PostgreSQL: each answers a 4xx problem, never a
500, never a silent misreading, and writes nothing.

One embedded platform per database for the whole module (its start-up is most of the cost);
tests keep apart through unique codes, keys and customers.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from loguru import logger

from billing_common.auth import ALL_SCOPES
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_common.testing import create_postgres_database, drop_postgres_database
from billing_launcher.registry import SERVICES, app_factory
from payment_service.adapters.sandbox import sandbox_webhook_event
from payment_service.domain.signatures import sign

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROBLEM = "application/problem+json"
MAX_BODY = 65_536
ORDER_LINE = {
    "description": "Widget",
    "quantity": "1",
    "unit_price": "100.00",
    "category": "standard",
}


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


@dataclass
class Hostile:
    apps: dict[str, Any]
    clients: dict[str, httpx.AsyncClient]
    embedded: EmbeddedPlatform

    def token(self, tenant: str = "demo") -> str:
        tokens = self.apps["invoice"].state.ctx.tokens
        return str(tokens.mint(subject="hostile", tenant=tenant, scopes=ALL_SCOPES))

    def headers(self, tenant: str = "demo", **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token(tenant)}", **extra}

    async def settle(self) -> None:
        for _ in range(3):
            for app in self.apps.values():
                while await app.state.ctx.relay.publish_pending():
                    pass
            await self.embedded.bus.wait_idle()

    async def open_invoice(self) -> str:
        """An issued invoice of 119.00 EUR the payment service knows."""
        order = {
            "customer": {"id": f"c-{uuid.uuid4().hex[:8]}", "jurisdiction": {"country": "DE"}},
            "currency": "EUR",
            "lines": [ORDER_LINE],
        }
        created = await self.clients["invoice"].post(
            "/v1/invoices", json=order, headers=self.headers(**{"Idempotency-Key": key()})
        )
        assert created.status_code == 201, created.text
        invoice_id = str(created.json()["id"])
        finalized = await self.clients["invoice"].post(
            f"/v1/invoices/{invoice_id}/finalize", headers=self.headers()
        )
        assert finalized.status_code == 200, finalized.text
        await self.settle()
        return invoice_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service_databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("hostile")
        yield {name: f"sqlite+aiosqlite:///{folder / name}.db" for name in SERVICES}
        return
    made = {name: create_postgres_database() for name in SERVICES}
    try:
        yield {name: url for name, (_, url) in made.items()}
    finally:
        for database, _ in made.values():
            drop_postgres_database(database)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hostile(
    service_databases: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Hostile]:
    embedded = EmbeddedPlatform()
    data_dir: Path = tmp_path_factory.mktemp("data")
    apps = {
        name: app_factory(name)(
            ServiceSettings.for_service(
                name,
                runtime="embedded",
                data_dir=data_dir,
                database_url=service_databases[name],
                secrets_file=None,
                load_sample_data=True,
                outbox_poll_seconds=0.2,
                max_body_bytes=MAX_BODY,
            ),
            embedded,
        )
        for name in SERVICES
    }
    async with AsyncExitStack() as stack:
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        await embedded.bus.start()
        stack.push_async_callback(embedded.bus.stop)
        clients: dict[str, httpx.AsyncClient] = {}
        for name, app in apps.items():
            # raise_app_exceptions=False: a 500 is an answer to assert on, not a crash.
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            client = httpx.AsyncClient(transport=transport, base_url=f"http://{name}")
            stack.push_async_callback(client.aclose)
            clients[name] = client
        yield Hostile(apps, clients, embedded)


def problem(response: httpx.Response, status: int, problem_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    if problem_type is not None:
        assert body["type"] == f"/problems/{problem_type}", body
    return body


# --- one JSON route per service, with the amount field to tamper with -------------------


@dataclass(frozen=True)
class JsonRoute:
    method: str
    path: str
    body: dict[str, Any]
    amount: tuple[str | int, ...]  # where an amount sits in the body
    idempotent: bool = False


ROUTES = {
    "tax": JsonRoute(
        "POST",
        "/v1/tax/calculations",
        {
            "currency": "EUR",
            "jurisdiction": {"country": "DE"},
            "lines": [{"unit_price": "100.00", "quantity": "1", "category": "standard"}],
        },
        ("lines", 0, "unit_price"),
    ),
    "discount": JsonRoute(
        "POST",
        "/v1/discounts/quotes",
        {"customer": {"id": "c-1"}, "currency": "EUR", "amount": "100.00", "coupon_codes": []},
        ("amount",),
    ),
    "invoice": JsonRoute(
        "POST",
        "/v1/invoices",
        {
            "customer": {"id": "c-1", "jurisdiction": {"country": "DE"}},
            "currency": "EUR",
            "lines": [ORDER_LINE],
        },
        ("lines", 0, "unit_price"),
        idempotent=True,
    ),
    "payment": JsonRoute(
        "POST",
        "/v1/payments",
        {"invoice_id": "inv-unknown", "payment_method": "tok_visa", "amount": "1.00"},
        ("amount",),
        idempotent=True,
    ),
}


def with_value(body: dict[str, Any], where: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    copy: Any = json.loads(json.dumps(body))
    target = copy
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    return dict(copy)


async def send(
    hostile: Hostile,
    service: str,
    *,
    body: dict[str, Any] | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    route = ROUTES[service]
    all_headers = hostile.headers(**(headers or {}))
    if route.idempotent:
        all_headers.setdefault("Idempotency-Key", key())
    if content is not None:
        all_headers["content-type"] = "application/json"
        return await hostile.clients[service].request(
            route.method, route.path, content=content, headers=all_headers
        )
    return await hostile.clients[service].request(
        route.method, route.path, json=route.body if body is None else body, headers=all_headers
    )


# --- amounts ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("digits", ["١٠٠", "１００", "۱۰۰.۰۰", "1_000"])
async def test_amounts_are_ascii_digits_only(hostile: Hostile, service: str, digits: str) -> None:
    """Decimal() reads Arabic-Indic, Persian and full-width digits (and "1_000"): "١٠٠" was
    accepted as 100 and billed."""
    route = ROUTES[service]
    response = await send(hostile, service, body=with_value(route.body, route.amount, digits))
    problem(response, 422, "validation")


async def test_a_payment_in_arabic_digits_charges_nothing(hostile: Hostile) -> None:
    invoice_id = await hostile.open_invoice()
    body = {"invoice_id": invoice_id, "payment_method": "tok_visa", "amount": "١٠٠"}
    response = await send(hostile, "payment", body=body)
    problem(response, 422, "validation")
    listed = await hostile.clients["payment"].get(
        "/v1/payments", params={"invoice_id": invoice_id}, headers=hostile.headers()
    )
    assert listed.json()["items"] == []


@pytest.mark.parametrize("service", ["tax", "discount", "invoice"])
async def test_negative_zero_is_never_echoed(hostile: Hostile, service: str) -> None:
    """The contract's amount pattern has no sign (docs/api-contracts.md), so "-0.00" is
    refused like any signed amount and never comes back as an amount; a negative zero the
    platform computes itself is written as "0.00" (money.format_amount, unit-tested)."""
    route = ROUTES[service]
    response = await send(hostile, service, body=with_value(route.body, route.amount, "-0.00"))
    problem(response, 422, "validation")


async def test_payment_refuses_negative_zero(hostile: Hostile) -> None:
    invoice_id = await hostile.open_invoice()
    body = {"invoice_id": invoice_id, "payment_method": "tok_visa", "amount": "-0.00"}
    problem(await send(hostile, "payment", body=body), 422)


@pytest.mark.parametrize("service", SERVICES)
async def test_duplicate_json_keys_are_refused(hostile: Hostile, service: str) -> None:
    """The last duplicate used to win: `{"amount": "1.00", "amount": "1000.00"}` means
    different things to different parsers."""
    route = ROUTES[service]
    text = json.dumps(route.body)
    # The body again, with the amount's key repeated inside the object that holds it.
    field = json.dumps(route.amount[-1])
    doubled = text.replace(f"{field}: ", f'{field}: "999.00", {field}: ', 1)
    assert doubled != text
    problem(await send(hostile, service, content=doubled.encode()), 400, "duplicate-json-key")


# --- NUL characters (PostgreSQL text cannot hold them) ------------------------------------


# A string each route stores as given (payment has none: all its strings have patterns).
FREE_TEXT: dict[str, tuple[str | int, ...]] = {
    "tax": ("reference",),
    "discount": ("reference",),
    "invoice": ("lines", 0, "description"),
    "payment": ("payment_method",),
}


@pytest.mark.parametrize("service", SERVICES)
async def test_nul_in_a_body_string_is_422(hostile: Hostile, service: str) -> None:
    route = ROUTES[service]
    response = await send(
        hostile, service, body=with_value(route.body, FREE_TEXT[service], "a\x00b")
    )
    problem(response, 422, "unacceptable-character")


@pytest.mark.parametrize("service", SERVICES)
async def test_lone_surrogate_in_a_body_string_is_422(hostile: Hostile, service: str) -> None:
    """No driver can encode "\\ud800" as UTF-8 for the database (nor can httpx: hence the
    hand-written body)."""
    route = ROUTES[service]
    text = json.dumps(with_value(route.body, FREE_TEXT[service], "PLACEHOLDER"))
    text = text.replace('"PLACEHOLDER"', '"text \\ud800"', 1)
    problem(await send(hostile, service, content=text.encode()), 422, "unacceptable-character")


async def test_nul_in_an_invoice_redeems_no_coupon_and_writes_nothing(hostile: Hostile) -> None:
    """The invoice insert used to fail on PostgreSQL after the coupon was redeemed."""
    customer = f"c-{uuid.uuid4().hex[:8]}"
    order = {
        "customer": {"id": customer, "jurisdiction": {"country": "DE"}},
        "currency": "EUR",
        "lines": [{**ORDER_LINE, "description": "Wid\x00get"}],
        "coupon_codes": ["WELCOME10"],
    }
    response = await send(hostile, "invoice", body=order)
    problem(response, 422, "unacceptable-character")
    await hostile.settle()
    invoices = await hostile.clients["invoice"].get(
        "/v1/invoices", params={"customer_id": customer}, headers=hostile.headers()
    )
    assert invoices.json()["items"] == []
    redemptions = await hostile.clients["discount"].get(
        "/v1/discounts/redemptions", params={"customer_id": customer}, headers=hostile.headers()
    )
    assert redemptions.json()["items"] == []


async def test_nul_in_a_coupon_is_refused_and_nothing_is_created(hostile: Hostile) -> None:
    code = f"NUL{uuid.uuid4().hex[:6]}"
    coupon = {"code": code, "name": "a\x00b", "discount": {"type": "percent", "rate": "0.10"}}
    response = await hostile.clients["discount"].post(
        "/v1/discounts/coupons", json=coupon, headers=hostile.headers()
    )
    problem(response, 422, "unacceptable-character")
    found = await hostile.clients["discount"].get(
        f"/v1/discounts/coupons/{code}", headers=hostile.headers()
    )
    problem(found, 404)


QUERIES = {
    "tax": ("/v1/tax/calculations", "reference"),
    "discount": ("/v1/discounts/redemptions", "customer_id"),
    "invoice": ("/v1/invoices", "customer_id"),
    "payment": ("/v1/payments", "invoice_id"),
}
PATHS = {
    "tax": "/v1/tax/rules/by-key/a%00b",
    "discount": "/v1/discounts/coupons/A%00B",
    "invoice": "/v1/invoices/a%00b",
    "payment": "/v1/payments/a%00b",
}


@pytest.mark.parametrize("service", SERVICES)
async def test_nul_in_a_query_parameter_is_422(hostile: Hostile, service: str) -> None:
    path, name = QUERIES[service]
    response = await hostile.clients[service].get(
        path, params={name: "a\x00b"}, headers=hostile.headers()
    )
    problem(response, 422, "unacceptable-character")


@pytest.mark.parametrize("service", SERVICES)
async def test_nul_in_a_path_parameter_is_422(hostile: Hostile, service: str) -> None:
    response = await hostile.clients[service].get(PATHS[service], headers=hostile.headers())
    problem(response, 422, "unacceptable-character")


@pytest.mark.parametrize("service", SERVICES)
async def test_nul_in_a_header_is_422(hostile: Hostile, service: str) -> None:
    header = "Idempotency-Key" if ROUTES[service].idempotent else "X-Request-Id"
    response = await send(hostile, service, headers={header: "k\x00ey"})
    problem(response, 422, "unacceptable-character")


async def test_nul_in_a_redemption_idempotency_key_is_422(hostile: Hostile) -> None:
    body = {"customer": {"id": "c-1"}, "currency": "EUR", "amount": "10.00", "coupon_codes": []}
    response = await hostile.clients["discount"].post(
        "/v1/discounts/redemptions",
        json=body,
        headers=hostile.headers(**{"Idempotency-Key": "k\x00ey"}),
    )
    problem(response, 422, "unacceptable-character")


# --- nesting, size, tokens, logs ---------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
async def test_deeply_nested_json_is_400(hostile: Hostile, service: str) -> None:
    deep = b'{"customer": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    problem(await send(hostile, service, content=deep), 400, "malformed-json")


async def test_deeply_nested_webhook_is_400(hostile: Hostile) -> None:
    deep = b"[" * 30_000 + b"]" * 30_000
    secret = hostile.apps["payment"].state.deps.webhooks.secrets["sandbox"]
    response = await hostile.clients["payment"].post(
        "/v1/webhooks/sandbox",
        content=deep,
        headers={
            "content-type": "application/json",
            "Billing-Signature": sign(secret, deep, int(time.time())),
        },
    )
    problem(response, 400, "malformed-webhook")


async def test_webhook_with_a_duplicate_key_is_400_and_settles_nothing(hostile: Hostile) -> None:
    """`"type": "payment.failed", "type": "payment.succeeded"`: the last key won, so this
    service could read a success where the gateway (or an auditor) reads a failure."""
    invoice_id = await hostile.open_invoice()
    paid = await send(
        hostile,
        "payment",
        body={"invoice_id": invoice_id, "payment_method": "tok_async", "amount": "10.00"},
    )
    assert paid.status_code == 201, paid.text
    payment = paid.json()
    event = sandbox_webhook_event(
        reference=payment["gateway_reference"], outcome="succeeded", created=int(time.time())
    )
    text = json.dumps(event)
    raw = text.replace('"type": ', '"type": "payment.failed", "type": ', 1).encode()
    secret = hostile.apps["payment"].state.deps.webhooks.secrets["sandbox"]
    response = await hostile.clients["payment"].post(
        "/v1/webhooks/sandbox",
        content=raw,
        headers={
            "content-type": "application/json",
            "Billing-Signature": sign(secret, raw, int(time.time())),
        },
    )
    problem(response, 400, "malformed-webhook")
    after = await hostile.clients["payment"].get(
        f"/v1/payments/{payment['id']}", headers=hostile.headers()
    )
    assert after.json()["status"] == "pending"


@pytest.mark.parametrize("service", SERVICES)
async def test_chunked_body_over_the_limit_is_413(hostile: Hostile, service: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 8192 + 2):
            yield b" " * 8192

    route = ROUTES[service]
    headers = hostile.headers(**{"content-type": "application/json", "Idempotency-Key": key()})
    response = await hostile.clients[service].request(
        route.method, route.path, content=chunks(), headers=headers
    )
    assert "content-length" not in response.request.headers  # really chunked
    problem(response, 413, "payload-too-large")


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("tenant", ["demo\x00", "Demo", "de mo", "demo\n", "../demo", "-demo"])
async def test_tenant_claim_off_the_pattern_is_401(
    hostile: Hostile, service: str, tenant: str
) -> None:
    path, _ = QUERIES[service]
    response = await hostile.clients[service].get(path, headers=hostile.headers(tenant))
    problem(response, 401, "unauthorized")


@pytest.mark.parametrize("service", SERVICES)
async def test_control_characters_in_the_path_cannot_forge_log_lines(
    hostile: Hostile, service: str
) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="INFO")
    try:
        forged = "x%0a00:00:00.000 INFO    payment - POST /v1/payments 201%1b[2K"
        await hostile.clients[service].get(f"{PATHS[service][:-6]}{forged}")
    finally:
        logger.remove(sink)
    request_lines = [line for line in lines if line.startswith("GET ")]
    assert len(request_lines) == 1, lines
    logged = request_lines[0].rstrip("\n")
    assert "\n" not in logged and "\x1b" not in logged
    assert "x\\x0a00:00:00.000 INFO" in logged and "\\x1b[2K" in logged


# --- datetimes beyond the years 1-9999 in UTC --------------------------------------------

EARLY = "0001-01-01T00:00:00+14:00"  # 0000-12-31T10:00Z: no such datetime in Python
LATE = "9999-12-31T23:00:00-05:00"  # 10000-01-01T04:00Z


@pytest.mark.parametrize("field,value", [("starts_at", EARLY), ("ends_at", LATE)])
async def test_coupon_dates_outside_utc_range_are_422(
    hostile: Hostile, field: str, value: str
) -> None:
    code = f"D{uuid.uuid4().hex[:8]}"
    coupon = {"code": code, "name": "x", "discount": {"type": "percent", "rate": "0.10"}}
    response = await hostile.clients["discount"].post(
        "/v1/discounts/coupons", json={**coupon, field: value}, headers=hostile.headers()
    )
    problem(response, 422, "validation")


@pytest.mark.parametrize("field,value", [("starts_at", EARLY), ("ends_at", LATE)])
async def test_policy_dates_outside_utc_range_are_422(
    hostile: Hostile, field: str, value: str
) -> None:
    policy = {
        "name": "p",
        "kind": "user_type",
        "customer_type": "premium",
        "discount": {"type": "percent", "rate": "0.05"},
        field: value,
    }
    response = await hostile.clients["discount"].put(
        f"/v1/discounts/policies/p-{uuid.uuid4().hex[:8]}", json=policy, headers=hostile.headers()
    )
    problem(response, 422, "validation")


async def test_the_extreme_dates_that_exist_in_utc_are_accepted(hostile: Hostile) -> None:
    code = f"E{uuid.uuid4().hex[:8]}"
    coupon = {
        "code": code,
        "name": "x",
        "discount": {"type": "percent", "rate": "0.10"},
        "starts_at": "0001-01-01T00:00:00Z",
        "ends_at": "9999-12-31T23:59:59.999999Z",
    }
    client, headers = hostile.clients["discount"], hostile.headers()
    created = await client.post("/v1/discounts/coupons", json=coupon, headers=headers)
    assert created.status_code == 201, created.text
    quote = await client.post(
        "/v1/discounts/quotes",
        json={**ROUTES["discount"].body, "coupon_codes": [code]},
        headers=headers,
    )
    assert quote.status_code == 200, quote.text
    assert quote.json()["total_discount"] == "10.00", quote.text


@pytest.mark.parametrize("name", ["created_from", "created_to", "issued_from", "issued_to"])
@pytest.mark.parametrize("value", [EARLY, LATE])
async def test_invoice_list_filters_outside_utc_range_are_422(
    hostile: Hostile, name: str, value: str
) -> None:
    response = await hostile.clients["invoice"].get(
        "/v1/invoices", params={name: value}, headers=hostile.headers()
    )
    problem(response, 422, "validation")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A cursor of the services' one shape (billing_common.cursors) around a timestamp that has no
# UTC value: refused as any cursor a service did not hand out.
CRAFTED_CURSORS = {
    "tax": ("/v1/tax/calculations", json.dumps([EARLY, "x"]).encode()),
    "discount": ("/v1/discounts/redemptions", json.dumps([LATE, "x"]).encode()),
    "invoice": ("/v1/invoices", json.dumps([EARLY, "x"]).encode()),
}


@pytest.mark.parametrize("service", sorted(CRAFTED_CURSORS))
async def test_crafted_cursor_outside_utc_range_is_refused(hostile: Hostile, service: str) -> None:
    path, raw = CRAFTED_CURSORS[service]
    response = await hostile.clients[service].get(
        path, params={"cursor": _b64(raw)}, headers=hostile.headers()
    )
    problem(response, 400, "invalid-cursor")


# --- domain errors with extensions -------------------------------------------------------


async def test_refunding_a_pending_payment_is_409(hostile: Hostile) -> None:
    """PaymentNotRefundable carries the payment's status as an extension: it used to collide
    with the problem's own `status` (a TypeError, so a 500)."""
    invoice_id = await hostile.open_invoice()
    paid = await send(
        hostile,
        "payment",
        body={"invoice_id": invoice_id, "payment_method": "tok_async", "amount": "10.00"},
    )
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "pending"
    refund = await hostile.clients["payment"].post(
        f"/v1/payments/{paid.json()['id']}/refunds",
        json={},
        headers=hostile.headers(**{"Idempotency-Key": key()}),
    )
    body = problem(refund, 409, "payment-not-refundable")
    assert body["payment_status"] == "pending"
