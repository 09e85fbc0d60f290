"""Credit notes across the real services (embedded runtime): invoice -> partial payment ->
refund credit note -> the payment service refunds it -> the invoice and the payment agree on
what was paid, credited and is still owed. The same flow runs on the direct runtime in
test_faults_direct.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from billing_launcher.seed_flows import credit_note_flow, expect
from tests.conftest import Platform


def check_amounts_agree(flow: Any, payable: dict[str, Any]) -> None:
    """What the invoice says (total − credited − paid = due) is what the payment service
    would still charge, and the refund and the credit note name each other."""
    invoice, note, (payment,) = flow.invoice, flow.credit_note, flow.payments
    total, credited = Decimal(invoice["total"]), Decimal(invoice["amount_credited"])
    paid, due = Decimal(invoice["amount_paid"]), Decimal(invoice["amount_due"])
    assert (note["status"], note["settlement"]) == ("refunded", "refund")
    assert credited == Decimal(note["total"]) == Decimal(note["amount_refunded"])
    assert paid == Decimal(payment["amount"]) - Decimal(note["total"])
    assert due == total - credited - paid > 0
    assert invoice["status"] == "partially_paid"
    assert [r["id"] for r in payment["refunds"]] == note["refund_ids"]
    assert Decimal(payable["outstanding"]) == due


async def test_partial_payment_credit_note_refund_amounts_agree(platform: Platform) -> None:
    inv, pay, h = platform.clients["invoice"], platform.clients["payment"], platform.headers()
    flow = await credit_note_flow(inv, pay, h)
    # One of two widgets: half of line 1 (net 180.00 after the coupon, 19 %).
    assert (flow.credit_note["net_total"], flow.credit_note["tax_total"]) == ("90.00", "17.10")
    payable = expect(await pay.get(f"/v1/payable-invoices/{flow.invoice['id']}", headers=h), 200)
    check_amounts_agree(flow, payable)
    pdf = await inv.get(f"/v1/credit-notes/{flow.credit_note['id']}/pdf", headers=h)
    assert pdf.status_code in (200, 503)
