"""The invoice document as HTML (Jinja2, autoescaped): served at /html and fed to the PDF
renderer, so both show exactly the same thing; written in the invoice's language (labels
from the catalogs, amounts and dates formatted by babel: adapters/document_locale.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import TYPE_CHECKING, Any

from invoice_service.adapters.document_locale import (
    INVOICE_STATUS_CONTEXT,
    INVOICE_STATUSES,
    DocumentLocales,
    template_context,
)
from invoice_service.domain.model import Invoice, TaxStatus

if TYPE_CHECKING:
    from jinja2 import Template

TEMPLATE = "invoice.html.j2"
STYLESHEET = "invoice.css"


@dataclass(frozen=True, slots=True)
class Seller:
    name: str
    address: str = ""
    tax_id: str | None = None
    email: str | None = None

    @property
    def address_lines(self) -> list[str]:
        return [line.strip() for line in self.address.splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class TaxByRule:
    name: str
    rate: Decimal
    amount: Decimal


def taxes_by_rule(invoice: Invoice) -> list[TaxByRule]:
    """Tax summed per (rule, rate) over all lines, in order of first appearance."""
    totals: dict[tuple[str | None, str, Decimal], Decimal] = {}
    for line in invoice.lines:
        for tax in line.taxes:
            key = (tax.rule_id, tax.name, tax.rate)
            totals[key] = totals.get(key, Decimal(0)) + tax.amount
    return [TaxByRule(name, rate, amount) for (_, name, rate), amount in totals.items()]


class LazyTemplate:
    """A Jinja2 template (autoescaped, strict) compiled when it first renders: Jinja2 and
    MarkupSafe (about 3 MB) stay out of an API process that writes no document (issue 11)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._compiled: Template | None = None

    def render(self, context: dict[str, Any]) -> str:
        if self._compiled is None:
            from jinja2 import Environment, StrictUndefined, select_autoescape

            env = Environment(
                autoescape=select_autoescape(default=True, default_for_string=True),
                undefined=StrictUndefined,
                trim_blocks=True,
                lstrip_blocks=True,
            )
            # Two threads compiling at once build equal templates; one is kept.
            self._compiled = env.from_string(self.text)
        return self._compiled.render(context)


class JinjaInvoiceHtml:
    def __init__(self, seller: Seller, locales: DocumentLocales | None = None) -> None:
        templates = resources.files("invoice_service.adapters").joinpath("templates")
        template_text = templates.joinpath(TEMPLATE).read_text(encoding="utf-8")
        # Kept apart from the template so a PDF renderer can parse it once and reuse it.
        self.stylesheet = templates.joinpath(STYLESHEET).read_text(encoding="utf-8")
        self._template = LazyTemplate(template_text)
        self._seller = seller
        self.locales = locales or DocumentLocales()
        # A new template, translation or other seller details change every document: new
        # ETags.
        self.version = hashlib.sha256(
            "\n".join(
                [
                    template_text,
                    self.locales.version,
                    self.stylesheet,
                    seller.name,
                    seller.address,
                    seller.tax_id or "",
                    seller.email or "",
                ]
            ).encode()
        ).hexdigest()[:16]

    def title(self, invoice: Invoice) -> str:
        loc = self.locales.get(invoice.language)
        return f"{loc.gettext('Invoice')} {invoice.number or loc.gettext('DRAFT')}"

    def render(self, invoice: Invoice, *, embed_stylesheet: bool = True) -> str:
        """The document; without the stylesheet for a renderer that applies `stylesheet`
        itself (what it shows is the same)."""
        loc = self.locales.get(invoice.language)
        context: dict[str, Any] = {
            **template_context(loc, invoice.currency),
            "title": self.title(invoice),
            "status_label": loc.translations.pgettext(
                INVOICE_STATUS_CONTEXT, INVOICE_STATUSES[invoice.status.value]
            ),
            "invoice": invoice,
            "totals": invoice.totals,
            "seller": self._seller,
            "customer_address_lines": [
                line.strip()
                for line in (invoice.customer.address or "").splitlines()
                if line.strip()
            ],
            "taxes_by_rule": taxes_by_rule(invoice),
            # Claimed by the caller, or decided by the tax service (category AE).
            "reverse_charge": invoice.customer.tax_status is TaxStatus.REVERSE_CHARGE
            or any(line.vat_category == "AE" for line in invoice.lines),
            "stylesheet": self.stylesheet if embed_stylesheet else None,
        }
        return self._template.render(context)
