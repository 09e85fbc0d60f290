"""The seed's two flows as steps: one copy for `make demo`, the end-to-end tests and the
benchmarks.

Invoice creation: create an invoice (Germany, two tax categories, coupon WELCOME10: a discount
quote, a tax calculation and a redemption) -> finalize it -> the payment service learns it is
payable. Payment: pay (in part, in full, declined) -> the invoice reads partially_paid / paid.
Credit note: invoice -> partial payment -> refund credit note -> the payment service refunds
it -> the invoice and the payment agree on what was paid, credited and is still due.

Every step takes the service's client, an `httpx.AsyncClient` whose `base_url` is that service
(ASGI clients in the tests, the running platform's URLs in the demo and the benchmarks), and
the request headers (the bearer token). A step that gets another answer than the flow expects
raises `FlowFailed` naming the request and the answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

SEED_COUPON = "WELCOME10"
# The embedded sample data's seller of tenant "demo" (invoice_service.samples): its default
# seller, so the seed's invoices are issued by it without naming it.
SAMPLE_SELLER_ID = "5e11e700-0000-4000-8000-000000000001"
SAMPLE_SELLER_NAME = "Billing Platform Demo GmbH"


def seed_order(customer_id: str = "cust-1", **customer: str) -> dict[str, Any]:
    """2 x Widget 100.00 EUR (standard rate) + 1 book 20.00 (reduced rate), coupon WELCOME10,
    a regular customer in Germany: 10 % off 220.00, then 19 % and 7 % tax on what is left."""
    return {
        "customer": {
            "id": customer_id,
            "type": "regular",
            **customer,
            "jurisdiction": {"country": "DE"},
            "tax_status": "standard",
        },
        "currency": "EUR",
        "lines": [
            {
                "description": "Widget",
                "quantity": "2",
                "unit_price": "100.00",
                "category": "standard",
            },
            {"description": "Guide", "quantity": "1", "unit_price": "20.00", "category": "books"},
        ],
        "coupon_codes": [SEED_COUPON],
    }


ORDER: dict[str, Any] = seed_order()


class FlowFailed(AssertionError):
    """A step of a flow did not happen. An AssertionError, so a test reports it as a failure."""


def key(prefix: str = "k") -> str:
    """A fresh Idempotency-Key."""
    return f"{prefix}-{uuid.uuid4().hex}"


def expect(response: httpx.Response, *statuses: int) -> Any:
    """The JSON body of an answer with one of `statuses` (None for another media type)."""
    if response.status_code not in statuses:
        raise FlowFailed(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json() if "json" in response.headers.get("content-type", "") else None


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    done: Callable[[Any], bool],
    timeout: float = 20.0,
    what: str = "the condition holds",
    interval: float = 0.05,
) -> Any:
    """Probe until `done(value)`: events cross services asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise FlowFailed(f"timed out waiting until {what}; last seen: {value}")
        await asyncio.sleep(interval)


async def post_invoice(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    order: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    return await invoice.post(
        "/v1/invoices",
        json=order or ORDER,
        headers={**headers, "Idempotency-Key": idempotency_key or key()},
    )


async def create_invoice(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    order: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    return dict(expect(await post_invoice(invoice, headers, order, idempotency_key), 201))


async def finalize(
    invoice: httpx.AsyncClient, headers: dict[str, str], invoice_id: str
) -> dict[str, Any]:
    answer = await invoice.post(f"/v1/invoices/{invoice_id}/finalize", headers=headers)
    return dict(expect(answer, 200))


async def default_seller(
    invoice: httpx.AsyncClient, headers: dict[str, str]
) -> dict[str, Any] | None:
    """The tenant's default seller (the one its invoices are issued by), or None."""
    page = expect(await invoice.get("/v1/sellers?active=true", headers=headers), 200)
    return next((seller for seller in page["items"] if seller["is_default"]), None)


def issued_by(invoice: dict[str, Any]) -> str:
    """Who an invoice names as its seller, as the document prints it."""
    seller = invoice.get("seller")
    if not seller:
        return "no seller (the configured issuer)"
    vat_id = f", VAT id {seller['vat_id']}" if seller.get("vat_id") else ""
    return f"{seller['legal_name']}{vat_id}"


async def get_invoice(
    invoice: httpx.AsyncClient, headers: dict[str, str], invoice_id: str
) -> dict[str, Any]:
    return dict(expect(await invoice.get(f"/v1/invoices/{invoice_id}", headers=headers), 200))


async def pay(
    payment: httpx.AsyncClient,
    headers: dict[str, str],
    invoice_id: str,
    amount: str | None,
    token: str = "tok_visa",  # noqa: S107 - a sandbox card token, not a secret
    idempotency_key: str | None = None,
) -> httpx.Response:
    """POST a payment; `amount=None` pays what is outstanding. The answer unchecked: a
    declined card is a 201 or 402 with status `failed`, which some callers expect."""
    body: dict[str, Any] = {"invoice_id": invoice_id, "payment_method": token}
    if amount is not None:
        body["amount"] = amount
    return await payment.post(
        "/v1/payments", json=body, headers={**headers, "Idempotency-Key": idempotency_key or key()}
    )


async def wait_payable(
    payment: httpx.AsyncClient, headers: dict[str, str], invoice_id: str, timeout: float = 20.0
) -> dict[str, Any]:
    """Until the payment service heard billing.invoice.finalized.v1; its payability record."""

    async def probe() -> httpx.Response:
        return await payment.get(f"/v1/payable-invoices/{invoice_id}", headers=headers)

    answer = await eventually(
        probe,
        lambda r: r.status_code == 200 and r.json().get("payable"),
        timeout,
        what=f"the payment service knows invoice {invoice_id} is payable",
    )
    return dict(answer.json())


async def wait_status(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    invoice_id: str,
    status: str,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Until the invoice reads `status` (payment events settle it); the invoice."""

    async def probe() -> dict[str, Any]:
        return await get_invoice(invoice, headers, invoice_id)

    return dict(
        await eventually(
            probe,
            lambda inv: inv["status"] == status,
            timeout,
            what=f"invoice {invoice_id} reads {status}",
        )
    )


async def issue_credit_note(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    invoice_id: str,
    body: dict[str, Any],
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """POST a credit note of an issued invoice; the credit note."""
    response = await invoice.post(
        f"/v1/invoices/{invoice_id}/credit-notes",
        json=body,
        headers={**headers, "Idempotency-Key": idempotency_key or key("cn")},
    )
    return dict(expect(response, 201, 200))


async def wait_credit_note(
    invoice: httpx.AsyncClient,
    headers: dict[str, str],
    credit_note_id: str,
    status: str,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Until the credit note reads `status` (a refund one: once its refunds came back)."""

    async def probe() -> dict[str, Any]:
        answer = await invoice.get(f"/v1/credit-notes/{credit_note_id}", headers=headers)
        return dict(expect(answer, 200))

    return dict(
        await eventually(
            probe,
            lambda note: note["status"] == status,
            timeout,
            what=f"credit note {credit_note_id} reads {status}",
        )
    )


@dataclass(frozen=True)
class CreditNoteFlow:
    invoice: dict[str, Any]  # as it reads after the refund
    credit_note: dict[str, Any]
    payments: list[dict[str, Any]]  # the invoice's captured payments with their refunds


async def credit_note_flow(
    invoice: httpx.AsyncClient,
    payment: httpx.AsyncClient,
    headers: dict[str, str],
    timeout: float = 20.0,
) -> CreditNoteFlow:
    """Invoice -> partial payment -> refund credit note for one widget -> its refund: the
    seed order, 100.00 paid of it, then one of the two widgets credited and refunded."""
    issued = await create_invoice(invoice, headers, seed_order("cust-credit", name="Max Muster"))
    issued = await finalize(invoice, headers, issued["id"])
    await wait_payable(payment, headers, issued["id"], timeout)
    paid = expect(await pay(payment, headers, issued["id"], "150.00"), 201)
    await wait_status(invoice, headers, issued["id"], "partially_paid", timeout)
    note = await issue_credit_note(
        invoice,
        headers,
        issued["id"],
        {
            "reason": "one widget returned",
            "settlement": "refund",
            "lines": [{"position": 1, "quantity": "1"}],
        },
    )
    note = await wait_credit_note(invoice, headers, note["id"], "refunded", timeout)
    after = await get_invoice(invoice, headers, issued["id"])
    captured = expect(await payment.get(f"/v1/payments/{paid['id']}", headers=headers), 200)
    return CreditNoteFlow(after, note, [captured])
