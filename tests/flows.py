"""Steps of the seed's two flows, shared by the embedded and the direct end-to-end tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

ORDER: dict[str, Any] = {
    "customer": {
        "id": "cust-1",
        "type": "regular",
        "jurisdiction": {"country": "DE"},
        "tax_status": "standard",
    },
    "currency": "EUR",
    "lines": [
        {"description": "Widget", "quantity": "2", "unit_price": "100.00", "category": "standard"},
        {"description": "Guide", "quantity": "1", "unit_price": "20.00", "category": "books"},
    ],
    "coupon_codes": ["WELCOME10"],
}


def key() -> str:
    return f"k-{uuid.uuid4().hex}"


async def eventually(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float = 20.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached; last value: {value}")
        await asyncio.sleep(0.05)


async def create_invoice(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    order: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    r = await invoice.post(
        "/v1/invoices",
        json=order or ORDER,
        headers={**headers, "Idempotency-Key": idempotency_key or key()},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def finalize(
    invoice: httpx.AsyncClient, headers: dict[str, str], invoice_id: str
) -> dict[str, Any]:
    r = await invoice.post(f"/v1/invoices/{invoice_id}/finalize", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def pay(
    payment: httpx.AsyncClient,
    headers: dict[str, str],
    invoice_id: str,
    amount: str | None,
    token: str = "tok_visa",
    idempotency_key: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"invoice_id": invoice_id, "payment_method": token}
    if amount is not None:
        body["amount"] = amount
    return await payment.post(
        "/v1/payments", json=body, headers={**headers, "Idempotency-Key": idempotency_key or key()}
    )


async def get_invoice(
    invoice: httpx.AsyncClient, headers: dict[str, str], invoice_id: str
) -> dict[str, Any]:
    r = await invoice.get(f"/v1/invoices/{invoice_id}", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def wait_payable(
    payment: httpx.AsyncClient, headers: dict[str, str], invoice_id: str, timeout: float = 20.0
) -> None:
    async def probe() -> httpx.Response:
        return await payment.get(f"/v1/payable-invoices/{invoice_id}", headers=headers)

    await eventually(probe, lambda r: r.status_code == 200 and r.json()["payable"], timeout)


async def wait_status(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    invoice_id: str,
    status: str,
    timeout: float = 20.0,
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return await get_invoice(invoice, headers, invoice_id)

    return dict(await eventually(probe, lambda inv: inv["status"] == status, timeout))
