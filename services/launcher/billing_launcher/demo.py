"""`make demo`: the seed's two flows, step by step, against a running platform.

Invoice creation: create an invoice (discount first, then tax on the discounted lines) ->
finalize it (gapless number) -> the payment service learns of it from the event.
Payment: a declined card -> a partial payment -> the rest -> the invoice reads `paid` ->
download the PDF. Every step prints what happened; any step that does not happen exits 1.

Works against `make run` (embedded) and `make up` (direct). BILLING_URL_<SERVICE> overrides
where a service answers (default http://127.0.0.1:<port>).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from billing_common.adapters.env_secrets import EnvSecretStore
from billing_common.auth import ALL_SCOPES, TokenService
from billing_common.runtime import signing_key
from billing_common.settings import ServiceSettings
from billing_launcher.registry import SERVICES, port_of


class DemoFailed(Exception):
    pass


def _url(name: str) -> str:
    return os.environ.get(f"BILLING_URL_{name.upper()}", f"http://127.0.0.1:{port_of(name)}")


def _step(number: int, text: str) -> None:
    sys.stdout.write(f"\n[{number}] {text}\n")


def _show(text: str) -> None:
    sys.stdout.write(f"    {text}\n")
    sys.stdout.flush()


def _expect(response: httpx.Response, *statuses: int) -> Any:
    if response.status_code not in statuses:
        raise DemoFailed(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json() if "json" in response.headers.get("content-type", "") else None


async def _eventually(
    what: str, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 15.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting until {what}; last seen: {value}")
        await asyncio.sleep(0.2)


async def _token() -> str:
    settings = ServiceSettings()
    key = await signing_key(
        settings.model_copy(update={"runtime": "embedded"}), EnvSecretStore(settings.secrets_file)
    )
    tokens = TokenService(key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    return tokens.mint(subject="demo", tenant="demo", scopes=ALL_SCOPES, ttl_seconds=900)


async def run_demo() -> None:
    token = await _token()
    auth = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, headers=auth) as http:
        _step(1, "Every service is ready")
        for name in SERVICES:
            try:
                _expect(await http.get(f"{_url(name)}/readyz"), 200)
            except httpx.HTTPError as exc:
                raise DemoFailed(
                    f"{name} does not answer at {_url(name)}: start `make run`"
                ) from exc
            _show(f"{name:<9} {_url(name)} ready")

        _step(
            2, "Create an invoice: 2 x Widget 100.00 EUR + 1 book 20.00, coupon WELCOME10, Germany"
        )
        key = f"demo-{uuid.uuid4().hex[:12]}"
        order = {
            "customer": {
                "id": "cust-demo-1",
                "type": "regular",
                "name": "Erika Mustermann",
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
                {
                    "description": "Field guide (book)",
                    "quantity": "1",
                    "unit_price": "20.00",
                    "category": "books",
                },
            ],
            "coupon_codes": ["WELCOME10"],
        }
        invoice = _expect(
            await http.post(
                f"{_url('invoice')}/v1/invoices", json=order, headers={"Idempotency-Key": key}
            ),
            201,
        )
        invoice_id = invoice["id"]
        _show(f"invoice {invoice_id} status={invoice['status']}")
        _show(
            f"subtotal {invoice['subtotal']}  discount -{invoice['discount_total']}  "
            f"tax {invoice['tax_total']}  total {invoice['total']} {invoice['currency']}"
        )
        for line in invoice["lines"]:
            taxes = ", ".join(f"{t['name']} {t['amount']}" for t in line["taxes"]) or "none"
            _show(
                f"  {line['description']:<20} net {line['net']:>8}  tax {line['tax']:>7} ({taxes})"
            )
        # Discount before tax: 10% off 220.00 = 22.00; tax on 198.00 split 180.00 @19%, 18.00 @7%.
        if Decimal(invoice["discount_total"]) <= 0 or Decimal(invoice["tax_total"]) <= 0:
            raise DemoFailed("expected both a discount and tax on the invoice")
        replay = await http.post(
            f"{_url('invoice')}/v1/invoices", json=order, headers={"Idempotency-Key": key}
        )
        if _expect(replay, 200, 201)["id"] != invoice_id:
            raise DemoFailed("the same Idempotency-Key created a second invoice")
        _show("same Idempotency-Key again -> the same invoice, nothing created twice")

        _step(3, "Finalize it: a gapless number is assigned")
        invoice = _expect(
            await http.post(f"{_url('invoice')}/v1/invoices/{invoice_id}/finalize"), 200
        )
        _show(f"number {invoice['number']} status={invoice['status']} due {invoice['amount_due']}")

        _step(4, "The payment service hears billing.invoice.finalized.v1")
        payable = await _eventually(
            "the payment service knows the invoice is payable",
            lambda: http.get(f"{_url('payment')}/v1/payable-invoices/{invoice_id}"),
            lambda r: r.status_code == 200 and r.json().get("payable"),
        )
        _show(f"payable, outstanding {payable.json()['outstanding']}")

        _step(5, "Pay with a card that is declined (tok_declined)")
        declined = _expect(
            await http.post(
                f"{_url('payment')}/v1/payments",
                json={
                    "invoice_id": invoice_id,
                    "amount": "50.00",
                    "payment_method": "tok_declined",
                },
                headers={"Idempotency-Key": f"{key}-declined"},
            ),
            201,
            402,
        )
        if declined["status"] != "failed":
            raise DemoFailed(f"the declined card was not declined: {declined}")
        _show(f"payment {declined['id']} failed: {declined['failure_code']}")

        _step(6, "Pay 50.00 (a partial payment) with tok_visa")
        partial = _expect(
            await http.post(
                f"{_url('payment')}/v1/payments",
                json={"invoice_id": invoice_id, "amount": "50.00", "payment_method": "tok_visa"},
                headers={"Idempotency-Key": f"{key}-partial"},
            ),
            201,
        )
        _show(f"payment {partial['id']} {partial['status']}")
        seen = await _eventually(
            "the invoice reads partially_paid",
            lambda: http.get(f"{_url('invoice')}/v1/invoices/{invoice_id}"),
            lambda r: r.json().get("status") == "partially_paid",
        )
        _show(f"invoice status={seen.json()['status']} paid {seen.json()['amount_paid']}")

        _step(7, "Pay the rest")
        rest = _expect(
            await http.post(
                f"{_url('payment')}/v1/payments",
                json={"invoice_id": invoice_id, "payment_method": "tok_visa"},
                headers={"Idempotency-Key": f"{key}-rest"},
            ),
            201,
        )
        _show(f"payment {rest['id']} {rest['status']} {rest['amount']} {rest['currency']}")

        _step(8, "billing.payment.received.v1 settles the invoice")
        paid = await _eventually(
            "the invoice reads paid",
            lambda: http.get(f"{_url('invoice')}/v1/invoices/{invoice_id}"),
            lambda r: r.json().get("status") == "paid",
        )
        body = paid.json()
        _show(
            f"invoice {body['number']} status={body['status']} "
            f"paid {body['amount_paid']} of {body['total']}"
        )

        _step(9, "Download the PDF")
        pdf = await http.get(f"{_url('invoice')}/v1/invoices/{invoice_id}/pdf")
        if pdf.status_code != 200 or not pdf.content.startswith(b"%PDF"):
            raise DemoFailed(f"no PDF: {pdf.status_code} {pdf.text[:300]}")
        target = Path("var") / f"demo-{body['number']}.pdf"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(pdf.content)
        _show(f"{len(pdf.content)} bytes -> {target}")
    sys.stdout.write("\nDemo complete: both flows ran end to end.\n")


def main() -> int:
    try:
        asyncio.run(run_demo())
    except DemoFailed as exc:
        sys.stdout.write(f"\nDEMO FAILED: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
