"""The credit note document as HTML (Jinja2, autoescaped), rendered to PDF by the same
renderer as invoices, with the invoices' stylesheet."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from importlib import resources
from typing import Any

from jinja2 import Environment, StrictUndefined, select_autoescape

from billing_common.money import format_amount, quantum
from invoice_service.adapters.html import STYLESHEET, Seller
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.model import Invoice

TEMPLATE = "credit_note.html.j2"
SETTLEMENTS = {
    "apply": "deducted from the amount owed",
    "refund": "refunded",
    "customer_balance": "credited to the customer's balance",
}


class JinjaCreditNoteHtml:
    def __init__(self, seller: Seller) -> None:
        templates = resources.files("invoice_service.adapters").joinpath("templates")
        template_text = templates.joinpath(TEMPLATE).read_text(encoding="utf-8")
        self.stylesheet = templates.joinpath(STYLESHEET).read_text(encoding="utf-8")
        env = Environment(
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._template = env.from_string(template_text)
        self._seller = seller
        self.version = hashlib.sha256(
            "\n".join([template_text, self.stylesheet, seller.name, seller.address]).encode()
        ).hexdigest()[:16]

    def render(self, note: CreditNote, invoice: Invoice, *, embed_stylesheet: bool = True) -> str:
        step = quantum(note.currency)

        def amt(value: Decimal) -> str:
            return f"{value.quantize(step):,}"

        def qty(value: Decimal) -> str:
            return format_amount(value.normalize())

        def pct(rate: Decimal) -> str:
            return f"{format_amount((rate * 100).normalize())}%"

        context: dict[str, Any] = {
            "note": note,
            "invoice": invoice,
            "seller": self._seller,
            "settlement": SETTLEMENTS[note.settlement.value],
            "customer_address_lines": [
                line.strip()
                for line in (invoice.customer.address or "").splitlines()
                if line.strip()
            ],
            "amt": amt,
            "qty": qty,
            "pct": pct,
            "stylesheet": self.stylesheet if embed_stylesheet else None,
        }
        return self._template.render(context)
