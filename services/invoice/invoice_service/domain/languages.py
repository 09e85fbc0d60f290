"""The language of an invoice's documents (PDF, HTML, the visible part of Factur-X).

A document is written in one of the languages the platform has translations for, optionally
with a region (BCP 47: `de-CH`, `fr-BE`, `en-GB`), which changes how amounts and dates are
written (CLDR, through babel) but not the words. The language is the customer's as given at
invoice creation, else the seller's default language, else English; it is fixed with the
seller snapshot at finalization, so a later change of the seller never changes an issued
document.
"""

from __future__ import annotations

from typing import Final

from invoice_service.domain.errors import UnsupportedLanguage

# The languages the documents are translated into (adapters/locales holds the catalogs).
SUPPORTED_LANGUAGES: Final = ("en", "de", "fr")
DEFAULT_LANGUAGE: Final = "en"
MAX_TAG_LENGTH: Final = 35


def normalise_language(tag: str) -> str:
    """`tag` as `language` or `language-REGION` in BCP 47 case (`DE_ch` -> `de-CH`), when its
    language is supported and CLDR knows the region for it; else UnsupportedLanguage (422).
    A script subtag is dropped (the supported languages are written in Latin script only)."""
    text = tag.strip()
    if not text or len(text) > MAX_TAG_LENGTH:
        raise UnsupportedLanguage(tag, SUPPORTED_LANGUAGES)
    if text.lower() in SUPPORTED_LANGUAGES:
        # What babel answers for a bare supported language, without loading babel (and its
        # CLDR lookups) on every invoice of a seller that has a default language.
        return text.lower()
    from babel import Locale, UnknownLocaleError  # deferred: only region tags need CLDR

    try:
        locale = Locale.parse(text.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        raise UnsupportedLanguage(tag, SUPPORTED_LANGUAGES) from None
    if locale.language not in SUPPORTED_LANGUAGES or locale.variant:
        raise UnsupportedLanguage(tag, SUPPORTED_LANGUAGES)
    if locale.script not in (None, "Latn"):
        raise UnsupportedLanguage(tag, SUPPORTED_LANGUAGES)
    return f"{locale.language}-{locale.territory}" if locale.territory else locale.language


def document_language(requested: str | None, seller_language: str | None) -> str:
    """The language a document is written in: the one asked for (already normalised), else
    the seller's default language (its region too when CLDR has it, its bare language
    otherwise), else English. A seller language without translations falls back to English:
    sellers may name any language, documents exist in the supported ones."""
    if requested:
        return requested
    if seller_language:
        for candidate in (seller_language, base_language(seller_language)):
            try:
                return normalise_language(candidate)
            except UnsupportedLanguage:
                continue
    return DEFAULT_LANGUAGE


def base_language(language: str) -> str:
    """`de-CH` -> `de`: which catalog translates the words."""
    return language.split("-")[0]


def babel_locale(language: str) -> str:
    """`de-CH` -> `de_CH`: the identifier babel formats numbers and dates with."""
    return language.replace("-", "_")
