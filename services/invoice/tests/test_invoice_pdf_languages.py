"""Documents in the invoice's language: the PDFs rendered by WeasyPrint, read back as text with
pypdf, show the translated labels and the amounts, rates and dates as babel writes them for the
language and region; every label the templates use is translated; the document's language
is part of its ETag and of the PDF cache key."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D
from importlib import resources
from typing import Any

import pytest
from jinja2 import Environment
from jinja2.ext import extract_from_ast

from invoice_service.adapters import document_locale
from invoice_service.adapters.credit_note_html import SETTLEMENTS
from invoice_service.adapters.document_locale import DocumentLocales
from invoice_service.adapters.html import JinjaInvoiceHtml, Seller
from invoice_service.adapters.pdf import WeasyPrintRenderer
from invoice_service.domain.errors import PdfUnavailable
from invoice_service.domain.languages import SUPPORTED_LANGUAGES
from invoice_service.domain.model import (
    Customer,
    Invoice,
    InvoiceLine,
    PriceMode,
    TaxComponent,
    TaxStatus,
    VatBreakdown,
)
from invoice_service.samples import SAMPLE_SELLER
from invoice_service.service_layer.documents import document_etag, pdf_cache_key
from invoice_service.service_layer.ports import DocumentStamp

from .test_invoice_pdf import pdf_text

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
NNBSP = "\u202f"  # CLDR's French group separator: a narrow no-break space
NBSP = "\u00a0"


def _line(
    position: int, net: str, rate: str, category: str = "standard", vat: str = "S", **extra: Any
) -> InvoiceLine:
    amount = D(net)
    tax = (amount * D(rate)).quantize(D("0.01") if "." in net else D(1))
    return InvoiceLine(
        position=position,
        description=f"Widget {position}",
        quantity=D(1),
        unit_price=amount,
        category=category,
        subtotal=amount,
        discount=amount - amount,
        net=amount,
        tax=tax,
        total=amount + tax,
        taxes=(TaxComponent(f"r{position}", f"VAT {category}", D(rate), tax),),
        vat_category=vat,
        **extra,
    )


def issued(
    lines: list[InvoiceLine],
    *,
    language: str | None,
    currency: str = "EUR",
    tax_status: TaxStatus = TaxStatus.STANDARD,
) -> Invoice:
    invoice = Invoice.create(
        id="inv-1",
        tenant_id="acme",
        customer=Customer(
            "c-1",
            None,
            "FR",
            None,
            tax_status,
            tax_id="FR40303265045" if tax_status is TaxStatus.REVERSE_CHARGE else None,
            name="Acme SARL",
        ),
        currency=currency,
        price_mode=PriceMode.EXCLUSIVE,
        series="INV",
        lines=lines,
        discounts=[],
        due_days=14,
        at=T0,
        actor="user:alice",
        tax_calculation_id=None,
        discount_redemption_id=None,
        seller=SAMPLE_SELLER.snapshot(),
        requested_language=language,
        tax_breakdown=tuple(
            VatBreakdown(
                line.vat_category or "S",
                line.taxes[0].rate,
                line.net,
                line.tax,
                line.vat_exemption_reason,
                line.vat_exemption_reason_code,
            )
            for line in lines
        ),
    )
    invoice.finalize(number="INV-000007", sequence=7, at=T0, seller=SAMPLE_SELLER.snapshot())
    return invoice


# 1000.00 at 19 % and 234.56 at 7.5 %: a subtotal of 1,234.56 and a total of 1,442.15.
STANDARD_AND_REDUCED = [_line(1, "1000.00", "0.19"), _line(2, "234.56", "0.075", "reduced")]


@pytest.fixture(scope="module")
def html() -> JinjaInvoiceHtml:
    return JinjaInvoiceHtml(Seller("Unused Ltd."), DocumentLocales())


@pytest.fixture(scope="module")
def renderer(html: JinjaInvoiceHtml) -> WeasyPrintRenderer:
    renderer = WeasyPrintRenderer(html.stylesheet)
    try:
        renderer.render("<p>warm-up</p>")
    except PdfUnavailable:
        pytest.skip("PDF rendering is not available on this host")
    return renderer


def render(html: JinjaInvoiceHtml, renderer: WeasyPrintRenderer, invoice: Invoice) -> str:
    return pdf_text(renderer.render(html.render(invoice, embed_stylesheet=False)))


EXPECTED = {
    "en": [
        "Invoice INV-000007",
        "BILL TO",  # the stylesheet puts labels in capitals
        "Unit price",
        "Subtotal €1,234.56",
        "Amount due €1,442.15",
        "VAT reduced 7.5%",
        "VAT standard 19%",
        "Dec 2, 2026",
        "Dec 16, 2026",
        "page 1 of 1",
    ],
    "de": [
        "Rechnung INV-000007",
        "RECHNUNGSEMPFÄNGER",
        "Einzelpreis",
        "USt-IdNr.: DE136695976",
        f"Zwischensumme 1.234,56{NBSP}€",
        f"Zu zahlender Betrag 1.442,15{NBSP}€",
        f"VAT reduced 7,5{NBSP}%",
        f"VAT standard 19{NBSP}%",
        "02.12.2026",
        "16.12.2026",
        "Verwendungszweck: INV-000007",
        "Seite 1 von 1",
    ],
    "fr": [
        "Facture INV-000007",
        "FACTURÉ À",
        "Prix unitaire",
        f"Sous-total 1{NNBSP}234,56{NBSP}€",
        f"Net à payer 1{NNBSP}442,15{NBSP}€",
        f"VAT reduced 7,5{NBSP}%",
        "2 déc. 2026",
        "16 déc. 2026",
        f"Référence{NBSP}: INV-000007",
        "page 1 sur 1",
    ],
}


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_the_pdf_is_written_in_the_invoice_s_language(
    html: JinjaInvoiceHtml, renderer: WeasyPrintRenderer, language: str
) -> None:
    invoice = issued(STANDARD_AND_REDUCED, language=language)
    text = render(html, renderer, invoice)
    for expected in EXPECTED[language]:
        assert expected in text, (expected, text)
    others = {"en": "Amount due", "de": "Zu zahlender Betrag", "fr": "Net à payer"}
    for other, label in others.items():
        if other != language:
            assert label not in text
    document = html.render(invoice)
    assert f'<html lang="{language}">' in document
    assert f"<title>{html.title(invoice)}</title>" in document


def test_a_region_changes_the_formats_not_the_words(
    html: JinjaInvoiceHtml, renderer: WeasyPrintRenderer
) -> None:
    swiss = render(html, renderer, issued(STANDARD_AND_REDUCED, language="de-CH"))
    assert "Rechnung INV-000007" in swiss and "Zu zahlender Betrag" in swiss
    assert f"EUR{NBSP}1'442.15" in swiss  # CLDR de-CH: apostrophe grouping, decimal point
    british = render(html, renderer, issued(STANDARD_AND_REDUCED, language="en-GB"))
    assert "2 Dec 2026" in british and "Amount due €1,442.15" in british


@pytest.mark.parametrize(
    ("language", "total"),
    [("en", "¥1,190"), ("de", f"1.190{NBSP}¥"), ("fr", f"1{NNBSP}190{NBSP}JPY")],
)
def test_yen_amounts_have_no_decimals(
    html: JinjaInvoiceHtml, renderer: WeasyPrintRenderer, language: str, total: str
) -> None:
    text = render(
        html, renderer, issued([_line(1, "1000", "0.19")], language=language, currency="JPY")
    )
    assert total in text, text
    assert "1,190.00" not in text and "1.190,00" not in text


@pytest.mark.parametrize(
    ("language", "notice", "reason"),
    [
        ("en", "Reverse charge: VAT to be accounted for by the recipient.", "Reverse charge"),
        ("de", "Steuerschuldnerschaft des Leistungsempfängers", "Artikel 196 der Richtlinie"),
        ("fr", "Autoliquidation", "article 196 de la directive"),
    ],
)
def test_reverse_charge_wording_is_the_legal_one_of_each_language(
    html: JinjaInvoiceHtml, renderer: WeasyPrintRenderer, language: str, notice: str, reason: str
) -> None:
    line = _line(
        1,
        "500.00",
        "0",
        vat="AE",
        vat_exemption_reason="Reverse charge",
        vat_exemption_reason_code="VATEX-EU-AE",
    )
    invoice = issued([line], language=language, tax_status=TaxStatus.REVERSE_CHARGE)
    text = render(html, renderer, invoice)
    assert notice in text, text
    document = html.render(invoice)
    assert reason in document and "(VATEX-EU-AE)" in document
    if language != "en":  # the tax service's English text is replaced by the translation
        assert "Reverse charge" not in text


def _catalog_messages() -> set[tuple[str | None, str | tuple[str, str]]]:
    """Every message the templates and the document code print."""
    env = Environment(extensions=["jinja2.ext.i18n"])
    templates = resources.files("invoice_service.adapters").joinpath("templates")
    found: set[tuple[str | None, str | tuple[str, str]]] = set()
    for name in ("invoice.html.j2", "credit_note.html.j2"):
        tree = env.parse(templates.joinpath(name).read_text(encoding="utf-8"))
        for _, function, args in extract_from_ast(
            tree, gettext_functions=("_", "gettext", "ngettext", "pgettext")
        ):
            if function == "pgettext":
                found.add((args[0], args[1]))
            elif function == "ngettext":
                found.add((None, (args[0], args[1])))
            else:
                found.add((None, args if isinstance(args, str) else args[0]))
    for texts, context in (
        (document_locale.VATEX_REASONS, None),
        (document_locale.EXEMPTIONS, None),
        (SETTLEMENTS, None),
        (document_locale.INVOICE_STATUSES, document_locale.INVOICE_STATUS_CONTEXT),
        (document_locale.CREDIT_NOTE_STATUSES, document_locale.CREDIT_NOTE_STATUS_CONTEXT),
    ):
        found.update((context, text) for text in texts.values())
    return found


@pytest.mark.parametrize("language", [lang for lang in SUPPORTED_LANGUAGES if lang != "en"])
def test_every_printed_message_is_translated(language: str) -> None:
    translations = DocumentLocales().get(language).translations
    messages = _catalog_messages()
    assert len(messages) > 60
    for context, message in messages:
        if isinstance(message, tuple):
            assert translations.ngettext(*message, 2) != message[1], message
            continue
        translated = (
            translations.pgettext(context, message) if context else translations.gettext(message)
        )
        # "Total" is "Total" in French as well; everything else differs from the English.
        assert translated != message or message in {"Total", "page"}, (context, message)


def test_the_language_is_part_of_the_etag_and_the_cache_key() -> None:
    german = DocumentStamp("acme", "inv-1", "INV-000007", 3, "de")
    french = DocumentStamp("acme", "inv-1", "INV-000007", 3, "fr")
    assert pdf_cache_key(german) != pdf_cache_key(french)
    assert document_etag(german, "v1", "pdf") != document_etag(french, "v1", "pdf")
