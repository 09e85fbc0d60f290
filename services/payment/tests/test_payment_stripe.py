"""The Stripe adapter against recorded Stripe API responses.

A tiny HTTP server on 127.0.0.1:0 plays the recorded responses (tests/fixtures/stripe/*.json)
and records what the official `stripe` client sent, so the tests check the real wire format:
form-encoded integer minor units, lowercase currency, Idempotency-Key and Authorization
headers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from billing_common.money import Money
from payment_service.adapters.stripe_gateway import (
    AmountNotSupported,
    StripeGateway,
    from_stripe_minor_units,
    stripe_minor_units,
)
from payment_service.domain.errors import MalformedWebhook
from payment_service.domain.gateway import ChargeStatus, GatewayUnavailable, WebhookKind
from payment_service.domain.signatures import sign

from .conftest import STRIPE_SECRET

# stripe's HTTPXClient passes the form body as `data=<str>`, which httpx 0.28 deprecates;
# the request is still sent correctly (asserted below).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
API_KEY = "sk_test_51PaymentServiceTestKey"


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]


@dataclass
class StripeStub:
    """Answers each request with the next queued (status, body)."""

    base: str = ""
    responses: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.responses.append((status, body))


@pytest.fixture
def stripe_stub() -> Iterator[StripeStub]:
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode()
            stub.requests.append(
                Recorded(
                    "POST",
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    parse_qs(body, keep_blank_values=True),
                )
            )
            status, payload = stub.responses.pop(0) if stub.responses else (500, {})
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("request-id", f"req_test_{len(stub.requests)}")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    stub.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


def gateway(stub: StripeStub, retries: int = 0) -> StripeGateway:
    return StripeGateway(API_KEY, api_base=stub.base, max_network_retries=retries)


METADATA = {"tenant": "acme", "payment_id": "pay-1", "invoice_id": "inv-1"}


async def test_charge_succeeded_sends_minor_units_and_the_idempotency_key(
    stripe_stub: StripeStub,
) -> None:
    stripe_stub.reply(200, fixture("payment_intent_succeeded"))
    adapter = gateway(stripe_stub)
    try:
        result = await adapter.charge(
            amount=Money.of("19.99", "EUR"),
            token="pm_card_visa",
            idempotency_key="billing-payment-pay-1",
            metadata=METADATA,
        )
    finally:
        await adapter.close()
    assert result.status is ChargeStatus.SUCCEEDED
    assert result.reference == "pi_3QkR7vLkdIwHu7ix0bN2cX5a"
    [sent] = stripe_stub.requests
    assert sent.path == "/v1/payment_intents"
    assert sent.headers["idempotency-key"] == "billing-payment-pay-1"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.form["amount"] == ["1999"]
    assert sent.form["currency"] == ["eur"]
    assert sent.form["confirm"] == ["true"]
    assert sent.form["payment_method"] == ["pm_card_visa"]
    assert sent.form["automatic_payment_methods[allow_redirects]"] == ["never"]
    assert sent.form["metadata[tenant]"] == ["acme"]
    assert sent.form["metadata[payment_id]"] == ["pay-1"]


async def test_legacy_card_tokens_go_as_payment_method_data(stripe_stub: StripeStub) -> None:
    stripe_stub.reply(200, fixture("payment_intent_succeeded"))
    adapter = gateway(stripe_stub)
    try:
        await adapter.charge(
            amount=Money.of("1000", "JPY"), token="tok_visa", idempotency_key="k", metadata={}
        )
    finally:
        await adapter.close()
    [sent] = stripe_stub.requests
    assert sent.form["amount"] == ["1000"]  # JPY has no minor unit
    assert sent.form["currency"] == ["jpy"]
    assert sent.form["payment_method_data[type]"] == ["card"]
    assert sent.form["payment_method_data[card][token]"] == ["tok_visa"]
    assert "payment_method" not in sent.form


async def test_requires_action_is_pending(stripe_stub: StripeStub) -> None:
    stripe_stub.reply(200, fixture("payment_intent_requires_action"))
    adapter = gateway(stripe_stub)
    try:
        result = await adapter.charge(
            amount=Money.of("42.00", "EUR"), token="pm_card_threeDSecure2Required",
            idempotency_key="k", metadata={},
        )  # fmt: skip
    finally:
        await adapter.close()
    assert result.status is ChargeStatus.PENDING
    assert result.reference == "pi_3QkR9aLkdIwHu7ix1Fz0aB7c"


async def test_card_declined_error_body_is_a_failed_charge(stripe_stub: StripeStub) -> None:
    stripe_stub.reply(402, fixture("error_card_declined"))
    adapter = gateway(stripe_stub)
    try:
        result = await adapter.charge(
            amount=Money.of("19.99", "EUR"),
            token="pm_card_visa_chargeDeclinedInsufficientFunds",
            idempotency_key="k",
            metadata={},
        )
    finally:
        await adapter.close()
    assert result.status is ChargeStatus.FAILED
    assert result.failure_code == "insufficient_funds"  # the decline_code, not card_declined
    assert result.failure_message == "Your card has insufficient funds."
    assert result.reference == "pi_3QkRBcLkdIwHu7ix0Pq1wE4r"


async def test_server_errors_leave_the_outcome_unknown(stripe_stub: StripeStub) -> None:
    stripe_stub.reply(500, fixture("error_api_500"))
    adapter = gateway(stripe_stub)
    try:
        with pytest.raises(GatewayUnavailable) as raised:
            await adapter.charge(
                amount=Money.of("1.00", "EUR"), token="pm_card_visa", idempotency_key="k",
                metadata={},
            )  # fmt: skip
    finally:
        await adapter.close()
    assert "APIError" in raised.value.message


async def test_network_retries_reuse_the_idempotency_key(stripe_stub: StripeStub) -> None:
    stripe_stub.reply(500, fixture("error_api_500"))
    stripe_stub.reply(200, fixture("payment_intent_succeeded"))
    adapter = gateway(stripe_stub, retries=1)
    try:
        result = await adapter.charge(
            amount=Money.of("19.99", "EUR"), token="pm_card_visa", idempotency_key="same",
            metadata={},
        )  # fmt: skip
    finally:
        await adapter.close()
    assert result.status is ChargeStatus.SUCCEEDED
    assert [r.headers["idempotency-key"] for r in stripe_stub.requests] == ["same", "same"]


async def test_refund_sends_the_payment_intent_and_amount(stripe_stub: StripeStub) -> None:
    stripe_stub.reply(200, fixture("refund_succeeded"))
    adapter = gateway(stripe_stub)
    try:
        result = await adapter.refund(
            charge_reference="pi_3QkR7vLkdIwHu7ix0bN2cX5a",
            amount=Money.of("5.00", "EUR"),
            idempotency_key="billing-refund-ref-1",
            metadata={"refund_id": "ref-1"},
        )
    finally:
        await adapter.close()
    assert result.status is ChargeStatus.SUCCEEDED
    assert result.reference == "re_3QkR7vLkdIwHu7ix0d0r9Wm2"
    [sent] = stripe_stub.requests
    assert sent.path == "/v1/refunds"
    assert sent.headers["idempotency-key"] == "billing-refund-ref-1"
    assert sent.form["payment_intent"] == ["pi_3QkR7vLkdIwHu7ix0bN2cX5a"]
    assert sent.form["amount"] == ["500"]


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("19.99", "EUR", 1999),
        ("0.01", "USD", 1),
        ("1000", "JPY", 1000),
        ("1500", "ISK", 150000),  # ISO says 0 decimals; Stripe wants two
        ("12.340", "KWD", 12340),
        ("100", "KRW", 100),
    ],
)
def test_stripe_minor_units(amount: str, currency: str, minor: int) -> None:
    money = Money.of(amount, currency)
    assert stripe_minor_units(money) == minor
    assert from_stripe_minor_units(minor, currency.lower()).amount == Decimal(amount)


@pytest.mark.parametrize(("amount", "currency"), [("12.345", "KWD"), ("0.001", "EUR")])
def test_amounts_stripe_cannot_express_are_refused(amount: str, currency: str) -> None:
    with pytest.raises(AmountNotSupported):
        stripe_minor_units(Money.of(amount, currency))


def test_webhook_events_are_read_in_stripes_format() -> None:
    adapter = StripeGateway(API_KEY)
    succeeded = adapter.parse_webhook(fixture("event_payment_intent_succeeded"))
    assert succeeded.kind is WebhookKind.PAYMENT_SUCCEEDED
    assert succeeded.reference == "pi_3QkR9aLkdIwHu7ix1Fz0aB7c"
    assert succeeded.metadata["payment_id"] == "pay-2"
    failed = adapter.parse_webhook(fixture("event_payment_intent_payment_failed"))
    assert failed.kind is WebhookKind.PAYMENT_FAILED
    assert failed.failure_code == "generic_decline"
    other = adapter.parse_webhook(
        {"id": "evt_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}
    )
    assert other.kind is WebhookKind.IGNORED
    with pytest.raises(MalformedWebhook):
        adapter.parse_webhook({"id": "evt_1", "type": "payment_intent.succeeded", "data": {}})


async def test_pay_through_stripe_and_settle_by_stripe_signed_webhook(
    stripe_stub: StripeStub, sqlite_url: str, app_factory: Any
) -> None:
    """The whole path: POST /v1/payments with gateway=stripe (3-D Secure: pending), then
    Stripe's payment_intent.succeeded webhook with its own Stripe-Signature header."""
    stripe_stub.reply(200, fixture("payment_intent_requires_action"))
    adapter = gateway(stripe_stub)
    try:
        async with app_factory(sqlite_url, {"stripe": adapter}) as h:
            invoice = await h.open_invoice(amount_due="42.00")
            response = await h.pay(invoice, token="pm_card_threeDSecure2Required",
                                   extra={"gateway": "stripe"})  # fmt: skip
            assert response.status_code == 201, response.text
            payment = response.json()
            assert payment["status"] == "pending"
            assert payment["gateway_reference"] == "pi_3QkR9aLkdIwHu7ix1Fz0aB7c"
            [sent] = stripe_stub.requests
            assert sent.form["amount"] == ["4200"]
            assert sent.headers["idempotency-key"] == f"billing-payment-{payment['id']}"
            assert sent.form["metadata[payment_id]"] == [payment["id"]]

            event = fixture("event_payment_intent_succeeded")
            raw = json.dumps(event).encode()
            header = sign(STRIPE_SECRET, raw, int(time.time()))
            webhook = await h.client.post(
                "/v1/webhooks/stripe", content=raw, headers={"Stripe-Signature": header}
            )
            assert webhook.status_code == 200, webhook.text
            assert webhook.json()["effect"] == "applied"
            duplicate = await h.client.post(
                "/v1/webhooks/stripe", content=raw, headers={"Stripe-Signature": header}
            )
            assert duplicate.json()["duplicate"] is True
            detail = (
                await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())
            ).json()
            assert detail["status"] == "succeeded"
            assert await h.outbox_types() == ["billing.payment.received.v1"]
    finally:
        await adapter.close()
