"""`make demo`: the seed's two flows, step by step, against a running platform.

Invoice creation: create an invoice (discount first, then tax on the discounted lines) ->
finalize it (gapless number) -> the payment service learns of it from the event.
Payment: a declined card -> a partial payment -> the rest -> the invoice reads `paid` ->
download the PDF. Credit note: a new invoice paid in part -> a refund credit note for one
widget -> the payment service refunds it -> the invoice shows total, credited, paid and due.
Every step prints what happened; any step that does not happen exits 1.

Works against `make run` (embedded) and `make up` (direct). BILLING_URL_<SERVICE> overrides
where a service answers (default http://127.0.0.1:<port>). The steps are
`billing_launcher.seed_flows`, the same the end-to-end tests and the benchmarks run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path

import httpx

from billing_common.adapters.env_secrets import EnvSecretStore
from billing_common.auth import ALL_SCOPES, TokenService
from billing_common.runtime import signing_key
from billing_common.settings import ServiceSettings
from billing_launcher.registry import SERVICES, port_of
from billing_launcher.seed_flows import (
    FlowFailed,
    credit_note_flow,
    expect,
    finalize,
    issued_by,
    pay,
    post_invoice,
    seed_order,
    wait_payable,
    wait_status,
)

# How long the demo waits for an event to cross services before it calls the step failed.
EVENT_TIMEOUT_SECONDS = 15.0


class DemoFailed(FlowFailed):
    pass


def _url(name: str) -> str:
    return os.environ.get(f"BILLING_URL_{name.upper()}", f"http://127.0.0.1:{port_of(name)}")


def _step(number: int, text: str) -> None:
    sys.stdout.write(f"\n[{number}] {text}\n")


def _show(text: str) -> None:
    sys.stdout.write(f"    {text}\n")
    sys.stdout.flush()


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
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(base_url=_url(name), timeout=30)
            )
            for name in SERVICES
        }
        inv, payment = clients["invoice"], clients["payment"]
        _step(1, "Every service is ready")
        for name in SERVICES:
            try:
                expect(await clients[name].get("/readyz"), 200)
            except httpx.HTTPError as exc:
                raise DemoFailed(
                    f"{name} does not answer at {_url(name)}: start `make run`"
                ) from exc
            _show(f"{name:<9} {_url(name)} ready")

        _step(
            2, "Create an invoice: 2 x Widget 100.00 EUR + 1 book 20.00, coupon WELCOME10, Germany"
        )
        key = f"demo-{uuid.uuid4().hex[:12]}"
        order = seed_order("cust-demo-1", name="Erika Mustermann")
        invoice = expect(await post_invoice(inv, auth, order, key), 201)
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
        replay = await post_invoice(inv, auth, order, key)
        if expect(replay, 200, 201)["id"] != invoice_id:
            raise DemoFailed("the same Idempotency-Key created a second invoice")
        _show("same Idempotency-Key again -> the same invoice, nothing created twice")

        _step(3, "Finalize it: a gapless number is assigned")
        invoice = await finalize(inv, auth, invoice_id)
        _show(f"number {invoice['number']} status={invoice['status']} due {invoice['amount_due']}")
        _show(f"issued by {issued_by(invoice)}")

        _step(4, "The payment service hears billing.invoice.finalized.v1")
        payable = await wait_payable(payment, auth, invoice_id, EVENT_TIMEOUT_SECONDS)
        _show(f"payable, outstanding {payable['outstanding']}")

        _step(5, "Pay with a card that is declined (tok_declined)")
        declined = expect(
            await pay(payment, auth, invoice_id, "50.00", "tok_declined", f"{key}-declined"),
            201,
            402,
        )
        if declined["status"] != "failed":
            raise DemoFailed(f"the declined card was not declined: {declined}")
        _show(f"payment {declined['id']} failed: {declined['failure_code']}")

        _step(6, "Pay 50.00 (a partial payment) with tok_visa")
        partial = expect(
            await pay(payment, auth, invoice_id, "50.00", "tok_visa", f"{key}-partial"), 201
        )
        _show(f"payment {partial['id']} {partial['status']}")
        seen = await wait_status(inv, auth, invoice_id, "partially_paid", EVENT_TIMEOUT_SECONDS)
        _show(f"invoice status={seen['status']} paid {seen['amount_paid']}")

        _step(7, "Pay the rest")
        rest = expect(await pay(payment, auth, invoice_id, None, "tok_visa", f"{key}-rest"), 201)
        _show(f"payment {rest['id']} {rest['status']} {rest['amount']} {rest['currency']}")

        _step(8, "billing.payment.received.v1 settles the invoice")
        body = await wait_status(inv, auth, invoice_id, "paid", EVENT_TIMEOUT_SECONDS)
        _show(
            f"invoice {body['number']} status={body['status']} "
            f"paid {body['amount_paid']} of {body['total']}"
        )

        _step(9, "Download the PDF")
        pdf = await inv.get(f"/v1/invoices/{invoice_id}/pdf", headers=auth)
        if pdf.status_code != 200 or not pdf.content.startswith(b"%PDF"):
            raise DemoFailed(f"no PDF: {pdf.status_code} {pdf.text[:300]}")
        target = Path("var") / f"demo-{body['number']}.pdf"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(pdf.content)
        _show(f"{len(pdf.content)} bytes -> {target}")

        _step(10, "Credit note: a new invoice, 150.00 paid, one widget returned and refunded")
        flow = await credit_note_flow(inv, payment, auth, EVENT_TIMEOUT_SECONDS)
        note, after = flow.credit_note, flow.invoice
        _show(
            f"credit note {note['number']} of {note['invoice_number']} ({note['reason']}): "
            f"net {note['net_total']} tax {note['tax_total']} total {note['total']} "
            f"status={note['status']} refunds {', '.join(note['refund_ids'])}"
        )
        _show(
            f"invoice {after['number']} total {after['total']} credited "
            f"{after['amount_credited']} paid {after['amount_paid']} due {after['amount_due']}"
        )
        note_pdf = await inv.get(f"/v1/credit-notes/{note['id']}/pdf", headers=auth)
        if note_pdf.status_code == 200:
            note_target = Path("var") / f"demo-{note['number']}.pdf"
            note_target.write_bytes(note_pdf.content)
            _show(f"{len(note_pdf.content)} bytes -> {note_target}")
    sys.stdout.write("\nDemo complete: the flows ran end to end.\n")


def main() -> int:
    try:
        asyncio.run(run_demo())
    except FlowFailed as exc:  # DemoFailed, or a step of the seed's flows
        sys.stdout.write(f"\nDEMO FAILED: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
