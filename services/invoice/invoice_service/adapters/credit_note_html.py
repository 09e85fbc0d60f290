"""The credit note document as HTML (Jinja2, autoescaped), rendered to PDF by the same
renderer as invoices, with the invoices' stylesheet, in its invoice's language."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from invoice_service.adapters.document_locale import (
    CREDIT_NOTE_STATUS_CONTEXT,
    CREDIT_NOTE_STATUSES,
    N_,
    DocumentLocales,
    template_context,
)
from invoice_service.adapters.html import STYLESHEET, LazyTemplate, Seller
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.model import Invoice

TEMPLATE = "credit_note.html.j2"
SETTLEMENTS = {
    "apply": N_("deducted from the amount owed"),
    "refund": N_("refunded"),
    "customer_balance": N_("credited to the customer's balance"),
}


class JinjaCreditNoteHtml:
    def __init__(self, seller: Seller, locales: DocumentLocales | None = None) -> None:
        templates = resources.files("invoice_service.adapters").joinpath("templates")
        template_text = templates.joinpath(TEMPLATE).read_text(encoding="utf-8")
        self.stylesheet = templates.joinpath(STYLESHEET).read_text(encoding="utf-8")
        self._template = LazyTemplate(template_text)
        self._seller = seller
        self.locales = locales or DocumentLocales()
        self.version = hashlib.sha256(
            "\n".join(
                [template_text, self.stylesheet, self.locales.version, seller.name, seller.address]
            ).encode()
        ).hexdigest()[:16]

    def title(self, note: CreditNote, invoice: Invoice) -> str:
        """The document's title, in its invoice's language."""
        loc = self.locales.get(invoice.language)
        return f"{loc.gettext('Credit note')} {note.number}"

    def render(self, note: CreditNote, invoice: Invoice, *, embed_stylesheet: bool = True) -> str:
        # A credit note is written in its invoice's language (fixed when it was issued).
        loc = self.locales.get(invoice.language)
        context: dict[str, Any] = {
            **template_context(loc, note.currency),
            "note": note,
            "invoice": invoice,
            "seller": self._seller,
            "settlement": loc.gettext(SETTLEMENTS[note.settlement.value]),
            "status_label": loc.translations.pgettext(
                CREDIT_NOTE_STATUS_CONTEXT, CREDIT_NOTE_STATUSES[note.status.value]
            ),
            "customer_address_lines": [
                line.strip()
                for line in (invoice.customer.address or "").splitlines()
                if line.strip()
            ],
            "stylesheet": self.stylesheet if embed_stylesheet else None,
        }
        return self._template.render(context)
