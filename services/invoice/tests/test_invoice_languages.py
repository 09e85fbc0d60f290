"""The documents' language: which tags are accepted and how they are normalised, the fallback
to the seller's default language and English, and the language an invoice keeps once issued."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from invoice_service.domain.errors import UnsupportedLanguage
from invoice_service.domain.languages import (
    SUPPORTED_LANGUAGES,
    document_language,
    normalise_language,
)
from invoice_service.domain.model import Customer, Invoice, InvoiceLine, PriceMode, TaxStatus

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tag", "normalised"),
    [
        ("de", "de"),
        ("DE", "de"),
        ("de-CH", "de-CH"),
        ("de_ch", "de-CH"),
        ("fr-BE", "fr-BE"),
        ("en-GB", "en-GB"),
        (" en ", "en"),
        ("de-Latn-AT", "de-AT"),
    ],
)
def test_supported_tags_are_normalised(tag: str, normalised: str) -> None:
    assert normalise_language(tag) == normalised


@pytest.mark.parametrize(
    "tag", ["es", "it-IT", "de-US", "zh-Hant", "en-US-u-ca-gregory", "deutsch", "", "x" * 40]
)
def test_other_tags_are_refused_naming_the_supported_languages(tag: str) -> None:
    with pytest.raises(UnsupportedLanguage) as refused:
        normalise_language(tag)
    assert refused.value.status == 422
    assert refused.value.problem_extensions["supported_languages"] == list(SUPPORTED_LANGUAGES)


def test_the_language_asked_for_wins_then_the_seller_s_then_english() -> None:
    assert document_language("fr-BE", "de") == "fr-BE"
    assert document_language(None, "de-AT") == "de-AT"
    assert document_language(None, "de-XX") == "de"  # a region CLDR lacks: the language
    assert document_language(None, "it") == "en"  # no Italian documents: English
    assert document_language(None, None) == "en"


def _invoice(requested: str | None, seller_language: str | None) -> Invoice:
    ten, zero = D("10.00"), D("0.00")
    line = InvoiceLine(1, "Widget", D(1), ten, "standard", ten, zero, ten, zero, ten)
    return Invoice.create(
        id="inv-1",
        tenant_id="acme",
        customer=Customer("c-1", None, "DE", None, TaxStatus.STANDARD),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series="INV",
        lines=[line],
        discounts=[],
        due_days=14,
        at=T0,
        actor="user:alice",
        tax_calculation_id=None,
        discount_redemption_id=None,
        requested_language=requested,
        seller_language=seller_language,
    )


def test_finalization_takes_the_seller_s_language_as_it_is_then_and_keeps_it() -> None:
    draft = _invoice(None, "de")
    assert (draft.language, draft.requested_language) == ("de", None)
    draft.finalize(number="INV-000001", sequence=1, at=T0, seller_language="fr")
    assert draft.language == "fr"  # the seller's language at issue time, like its snapshot

    asked = _invoice("en-GB", "de")
    asked.finalize(number="INV-000002", sequence=2, at=T0, seller_language="fr")
    assert asked.language == "en-GB"  # the customer's language is never overridden

    orphan = _invoice(None, "de")
    orphan.finalize(number="INV-000003", sequence=3, at=T0, seller_language=None)
    assert orphan.language == "de"  # no seller row any more: the language taken at creation
