"""Signed webhooks: asynchronous settlement, duplicates, replays, bad signatures."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from payment_service.adapters.sandbox import SandboxGateway
from payment_service.domain.gateway import ChargeStatus, RefundResult

from .conftest import Harness


def sandbox_event(
    reference: str, kind: str = "payment.succeeded", **data: object
) -> dict[str, object]:
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": kind,
        "created": int(time.time()),
        "data": {"gateway_reference": reference, **data},
    }


async def pending_payment(h: Harness, amount_due: str = "60.00") -> dict[str, object]:
    invoice = await h.open_invoice(amount_due=amount_due)
    response = await h.pay(invoice, token="tok_async")
    assert response.status_code == 201
    body: dict[str, object] = response.json()
    assert body["status"] == "pending" and body["next_action"] == "await_confirmation"
    return body


async def test_async_payment_settles_through_the_sandbox_confirm_endpoint(harness: Harness) -> None:
    payment = await pending_payment(harness)
    assert await harness.outbox_types() == []
    confirm = await harness.client.post(
        f"/v1/sandbox/payments/{payment['gateway_reference']}/confirm", headers=harness.headers()
    )
    assert confirm.status_code == 200, confirm.text
    assert confirm.json()["webhook"] == {
        "received": True,
        "duplicate": False,
        "effect": "applied",
        "payment_id": payment["id"],
    }
    assert confirm.json()["payment"]["status"] == "succeeded"
    assert await harness.outbox_types() == ["billing.payment.received.v1"]
    again = await harness.client.post(
        f"/v1/sandbox/payments/{payment['gateway_reference']}/confirm", headers=harness.headers()
    )
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/payment-not-pending"


async def test_async_payment_fails_by_webhook(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    payment = await pending_payment(h)
    response = await h.client.post(
        f"/v1/sandbox/payments/{payment['gateway_reference']}/confirm",
        json={"outcome": "failed", "failure_code": "insufficient_funds"},
        headers=h.headers(),
    )
    assert response.status_code == 200
    settled = response.json()["payment"]
    assert settled["status"] == "failed" and settled["failure_code"] == "insufficient_funds"
    events = await h.outbox()
    assert [e.type for e in events] == ["billing.payment.failed.v1"]
    assert events[0].data["failure_code"] == "insufficient_funds"


async def test_a_duplicate_webhook_has_no_second_effect(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    payment = await pending_payment(h)
    event = sandbox_event(str(payment["gateway_reference"]))
    first = await h.webhook("sandbox", event)
    assert first.status_code == 200 and first.json()["effect"] == "applied"
    second = await h.webhook("sandbox", event)
    assert second.status_code == 200
    assert second.json()["duplicate"] is True and second.json()["effect"] == "none"
    # Another event id with the same news: recorded, but the payment is already settled.
    third = await h.webhook("sandbox", sandbox_event(str(payment["gateway_reference"])))
    assert third.json() == {
        "received": True,
        "duplicate": False,
        "effect": "none",
        "payment_id": payment["id"],
    }
    assert await h.outbox_types() == ["billing.payment.received.v1"]
    detail = (await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())).json()
    assert [x["to_status"] for x in detail["history"]] == ["pending", "succeeded"]


async def test_a_contradicting_webhook_is_recorded_not_applied(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    payment = await pending_payment(h)
    await h.webhook("sandbox", sandbox_event(str(payment["gateway_reference"])))
    late_failure = await h.webhook(
        "sandbox",
        sandbox_event(str(payment["gateway_reference"]), "payment.failed", failure_code="x"),
    )
    assert late_failure.status_code == 200 and late_failure.json()["effect"] == "conflict"
    detail = (await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())).json()
    assert detail["status"] == "succeeded"


async def test_replayed_and_future_webhooks_are_rejected(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    payment = await pending_payment(h)
    event = sandbox_event(str(payment["gateway_reference"]))
    old = await h.webhook("sandbox", event, timestamp=int(time.time()) - 301)
    assert old.status_code == 401
    assert old.json()["type"] == "/problems/signature-expired"
    future = await h.webhook("sandbox", event, timestamp=int(time.time()) + 301)
    assert future.status_code == 401
    assert (await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())).json()[
        "status"
    ] == "pending"


async def test_bad_signatures_are_rejected(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    payment = await pending_payment(h)
    event = sandbox_event(str(payment["gateway_reference"]))
    wrong_secret = await h.webhook("sandbox", event, secret="whsec_guess")
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["type"] == "/problems/signature-mismatch"

    raw = json.dumps(event).encode()
    from payment_service.domain.signatures import sign

    from .conftest import SANDBOX_SECRET

    header = sign(SANDBOX_SECRET, raw, int(time.time()))
    tampered = raw.replace(b"payment.succeeded", b"payment.failed!!!")
    response = await h.client.post(
        "/v1/webhooks/sandbox", content=tampered, headers={"Billing-Signature": header}
    )
    assert response.status_code == 401
    # Re-serialised JSON (other whitespace) is other bytes: the raw body is what is signed.
    respaced = json.dumps(event, indent=2).encode()
    response = await h.client.post(
        "/v1/webhooks/sandbox", content=respaced, headers={"Billing-Signature": header}
    )
    assert response.status_code == 401
    missing = await h.client.post("/v1/webhooks/sandbox", content=raw)
    assert missing.status_code == 400
    assert missing.json()["type"] == "/problems/invalid-signature-header"
    # Stripe's header name is only accepted for stripe.
    stripe_header = await h.client.post(
        "/v1/webhooks/sandbox", content=raw, headers={"Stripe-Signature": header}
    )
    assert stripe_header.status_code == 400
    assert (await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())).json()[
        "status"
    ] == "pending"


async def test_signed_garbage_is_a_400_never_a_500(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    from payment_service.domain.signatures import sign

    from .conftest import SANDBOX_SECRET

    for body in (b"not json", b"[1, 2]", b'{"id": "evt_1"}', b'{"id": 5, "type": "x", "data": {}}'):
        header = sign(SANDBOX_SECRET, body, int(time.time()))
        response = await h.client.post(
            "/v1/webhooks/sandbox", content=body, headers={"Billing-Signature": header}
        )
        assert response.status_code == 400, body
        assert response.json()["type"] == "/problems/malformed-webhook"


async def test_unknown_gateway_reference_and_ignored_types(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    unknown = await h.webhook("sandbox", sandbox_event("sbx_ch_nobody"))
    assert unknown.status_code == 404  # not recorded: the gateway will deliver it again
    ignored = await h.webhook("sandbox", sandbox_event("sbx_ch_nobody", "charge.dispute.created"))
    assert ignored.status_code == 200 and ignored.json()["effect"] == "ignored"
    no_gateway = await h.webhook("paypal", sandbox_event("x"))
    assert no_gateway.status_code == 404
    not_configured = await h.webhook("stripe", sandbox_event("x"))
    assert not_configured.status_code == 404


async def test_a_webhook_that_overtakes_our_reference_finds_the_payment_by_metadata(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice(amount_due="15.00")
    pending = (await h.pay(invoice, token="tok_processing_error")).json()
    assert pending["gateway_reference"] is None
    event = sandbox_event(
        "sbx_ch_from_gateway", metadata={"tenant": "acme", "payment_id": pending["id"]}
    )
    # Another tenant's metadata does not find it.
    foreign = sandbox_event(
        "sbx_ch_from_gateway", metadata={"tenant": "globex", "payment_id": pending["id"]}
    )
    assert (await h.webhook("sandbox", foreign)).status_code == 404
    applied = await h.webhook("sandbox", event)
    assert applied.status_code == 200 and applied.json()["effect"] == "applied"
    detail = (await h.client.get(f"/v1/payments/{pending['id']}", headers=h.headers())).json()
    assert detail["status"] == "succeeded"
    assert detail["gateway_reference"] == "sbx_ch_from_gateway"


async def test_confirm_is_tenant_scoped(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    payment = await pending_payment(h)
    response = await h.client.post(
        f"/v1/sandbox/payments/{payment['gateway_reference']}/confirm",
        headers=h.headers(tenant="globex"),
    )
    assert response.status_code == 404
    bad = await h.client.post(
        f"/v1/sandbox/payments/{payment['gateway_reference']}/confirm",
        json={"outcome": "maybe"},
        headers=h.headers(),
    )
    assert bad.status_code == 422


class PendingRefunds(SandboxGateway):
    """A sandbox whose refunds settle later, like Stripe's `pending` refunds."""

    async def refund(self, **kwargs: Any) -> RefundResult:
        result = await super().refund(**kwargs)
        return RefundResult(ChargeStatus.PENDING, result.reference)


async def test_pending_refunds_settle_or_fail_by_webhook(sqlite_url: str, app_factory: Any) -> None:
    async with app_factory(sqlite_url, {"sandbox": PendingRefunds()}) as h:
        invoice = await h.open_invoice(amount_due="30.00")
        payment = (await h.pay(invoice)).json()
        first = (await h.refund(payment["id"], amount="10.00")).json()
        assert first["refund"]["status"] == "pending"
        # The pending refund is reserved.
        assert first["payment"]["refundable_amount"] == "20.00"
        second = (await h.refund(payment["id"], amount="20.00")).json()
        assert (await h.refund(payment["id"], amount="0.01")).status_code == 422

        settled = await h.webhook(
            "sandbox", sandbox_event(first["refund"]["gateway_reference"], "refund.succeeded")
        )
        assert settled.status_code == 200 and settled.json()["effect"] == "applied"
        failed = await h.webhook(
            "sandbox",
            sandbox_event(
                second["refund"]["gateway_reference"], "refund.failed", failure_code="expired_card"
            ),
        )
        assert failed.json()["effect"] == "applied"
        detail = (await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())).json()
        assert detail["status"] == "partially_refunded"
        assert detail["refunded_amount"] == "10.00" and detail["refundable_amount"] == "20.00"
        assert [(r["status"], r["failure_code"]) for r in detail["refunds"]] == [
            ("succeeded", None),
            ("failed", "expired_card"),
        ]
        assert await h.outbox_types() == [
            "billing.payment.received.v1",
            "billing.payment.refunded.v1",
        ]
