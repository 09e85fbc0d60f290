"""Concurrent requests on SQLite and PostgreSQL: one charge per Idempotency-Key, never more
paid than owed, never more refunded than captured."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from billing_common.money import Money
from payment_service.adapters.sandbox import SandboxGateway
from payment_service.domain.gateway import ChargeResult, RefundResult


class SlowSandbox(SandboxGateway):
    """The sandbox with network latency, so concurrent requests overlap the gateway call."""

    async def charge(self, **kwargs: Any) -> ChargeResult:
        await asyncio.sleep(0.05)
        return await super().charge(**kwargs)

    async def refund(
        self,
        *,
        charge_reference: str,
        amount: Money,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        await asyncio.sleep(0.05)
        return await super().refund(
            charge_reference=charge_reference,
            amount=amount,
            idempotency_key=idempotency_key,
            metadata=metadata,
        )


async def test_concurrent_identical_requests_charge_once(
    database_url: str, app_factory: Any
) -> None:
    gateway = SlowSandbox()
    async with app_factory(database_url, {"sandbox": gateway}) as h:
        invoice = await h.open_invoice(amount_due="99.99")
        responses = await asyncio.gather(*(h.pay(invoice, key="same-key") for _ in range(8)))
        assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
        assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
        assert len({r.json()["id"] for r in responses}) == 1
        assert gateway.charge_calls == 1
        final = (await h.pay(invoice, key="same-key")).json()
        assert final["status"] == "succeeded"
        assert await h.outbox_types() == ["billing.payment.received.v1"]
        listing = (await h.client.get("/v1/payments", headers=h.headers())).json()
        assert listing["total"] == 1


async def test_concurrent_payments_with_different_keys_never_overpay(
    database_url: str, app_factory: Any
) -> None:
    gateway = SlowSandbox()
    async with app_factory(database_url, {"sandbox": gateway}) as h:
        invoice = await h.open_invoice(amount_due="50.00")
        responses = await asyncio.gather(*(h.pay(invoice, key=f"key-{i}") for i in range(5)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [201, 409, 409, 409, 409], [r.text for r in responses]
        assert gateway.charge_calls == 1
        view = (await h.client.get(f"/v1/payable-invoices/{invoice}", headers=h.headers())).json()
        assert view["paid"] == "50.00" and view["outstanding"] == "0.00"


async def test_concurrent_refunds_never_exceed_the_capture(
    database_url: str, app_factory: Any
) -> None:
    gateway = SlowSandbox()
    async with app_factory(database_url, {"sandbox": gateway}) as h:
        invoice = await h.open_invoice(amount_due="40.00")
        payment = (await h.pay(invoice)).json()
        responses = await asyncio.gather(
            *(h.refund(payment["id"], amount="15.00", key=f"r-{i}") for i in range(4))
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [201, 201, 422, 422], [r.text for r in responses]
        assert gateway.refund_calls == 2
        detail = (await h.client.get(f"/v1/payments/{payment['id']}", headers=h.headers())).json()
        assert detail["refunded_amount"] == "30.00" and detail["refundable_amount"] == "10.00"
        assert (await h.outbox_types()).count("billing.payment.refunded.v1") == 2
