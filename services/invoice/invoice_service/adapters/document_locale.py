"""What a document needs to be written in one language: the translated labels (gettext
catalogs, `locales/<language>/LC_MESSAGES/documents.po`) and amounts, quantities, tax rates
and dates formatted by babel with CLDR's rules for the language and region (`de-CH` writes
1'234.50, `fr` 1 234,50 with a narrow no-break space).

The catalogs' .po files are read when the service starts (`version` hashes them, so a changed
translation changes every document's ETag) and compiled in memory with babel when the first
document is written, so there is no build step and no compiled .mo file to keep in step with
its source, and a process that never writes a document never loads babel (issue 11, RSS).

Amounts are Decimals quantized to the currency's minor unit (ROUND_HALF_UP, as everywhere
in the platform) and printed with exactly that many decimals: JPY with none, EUR with two,
KWD with three. No float is involved anywhere.
"""

from __future__ import annotations

import copy
import gettext
import hashlib
import io
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import TYPE_CHECKING, Final

from billing_common.money import minor_unit, quantum
from invoice_service.domain.languages import (
    DEFAULT_LANGUAGE,
    SUPPORTED_LANGUAGES,
    babel_locale,
    base_language,
)

if TYPE_CHECKING:  # babel itself is imported where a document is written
    from babel import Locale
    from babel.numbers import NumberPattern

DOMAIN: Final = "documents"
# How dates are printed: CLDR's medium format (02.12.2026, 2 déc. 2026, Dec 2, 2026).
DATE_FORMAT: Final = "medium"

# EN 16931 exemption reason codes (VATEX, BT-121) the tax service gives, with the reason
# text printed for each in the document's language (msgids of the catalogs; English as the
# tax service words it). A code not listed here keeps the text the tax service gave.
VATEX_REASONS: Final = {
    "VATEX-EU-AE": "Reverse charge — Article 196 of Council Directive 2006/112/EC",
    "VATEX-EU-IC": "Intra-community supply of goods — Article 138 of Council Directive 2006/112/EC",
    "VATEX-EU-G": "Export of goods outside the EU — Article 146 of Council Directive 2006/112/EC",
    "VATEX-EU-O": (
        "Not subject to EU VAT: services to a business outside the EU — Article 44 of "
        "Council Directive 2006/112/EC"
    ),
}


def _read_catalog(language: str) -> str:
    """The .po text of `language` (English has none: the msgids are the English labels)."""
    if language == DEFAULT_LANGUAGE:
        return ""
    return (
        resources.files("invoice_service.adapters")
        .joinpath("locales", language, "LC_MESSAGES", f"{DOMAIN}.po")
        .read_text(encoding="utf-8")
    )


def _compile_catalog(language: str, po: str) -> gettext.NullTranslations:
    """The catalog of `language` compiled from its .po text."""
    if language == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    from babel.support import Translations

    catalog = read_po(io.StringIO(po), locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


@dataclass(frozen=True)
class DocumentLocale:
    """One language (`de-CH`): its labels and its number and date formats."""

    language: str
    translations: gettext.NullTranslations
    locale: Locale
    _money_patterns: dict[str, tuple[NumberPattern, NumberPattern]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def lang(self) -> str:
        """For `<html lang>` (BCP 47)."""
        return self.language

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations.ngettext(singular, plural, n)

    def _patterns(self, currency: str) -> tuple[NumberPattern, NumberPattern]:
        """(with the currency sign, number only), each with exactly the currency's minor
        unit of decimals."""
        patterns = self._money_patterns.get(currency)
        if patterns is None:
            from babel.numbers import parse_pattern

            digits = minor_unit(currency)
            sign = copy.copy(parse_pattern(self.locale.currency_formats["standard"]))
            plain = copy.copy(parse_pattern(self.locale.decimal_formats[None]))
            sign.frac_prec = plain.frac_prec = (digits, digits)
            patterns = self._money_patterns[currency] = (sign, plain)
        return patterns

    def money(self, value: Decimal, currency: str) -> str:
        """`1.234,56 €` (de), `1 234,56 €` (fr), `€1,234.56` (en), `¥1,234` (en, JPY)."""
        return self._format(value, currency, with_sign=True)

    def amount(self, value: Decimal, currency: str) -> str:
        """The number alone (`1.234,56`), for table cells under a currency named once."""
        return self._format(value, currency, with_sign=False)

    def _format(self, value: Decimal, currency: str, *, with_sign: bool) -> str:
        exact = value.quantize(quantum(currency), rounding=ROUND_HALF_UP)
        sign, plain = self._patterns(currency)
        pattern = sign if with_sign else plain
        return str(pattern.apply(exact, self.locale, currency=currency, currency_digits=False))

    def quantity(self, value: Decimal) -> str:
        """Every decimal the quantity has, none more (`2`, `1,5`, `0,0001`)."""
        from babel.numbers import format_decimal

        return str(
            format_decimal(value.normalize(), locale=self.locale, decimal_quantization=False)
        )

    def percent(self, rate: Decimal) -> str:
        """A tax rate (a fraction) as CLDR writes percentages, with all its decimals:
        `19 %`, `7,5 %` (de), `19%`, `9.975%` (en)."""
        from babel.numbers import format_percent

        return str(format_percent(rate, locale=self.locale, decimal_quantization=False))

    def date(self, value: date) -> str:
        from babel.dates import format_date

        return str(format_date(value, format=DATE_FORMAT, locale=self.locale))

    def exemption_reason(self, code: str | None, text: str | None) -> str:
        """The reason of a VAT exemption as printed: the tax service's own text in English
        (its language), the translation of the VATEX code's reason in another language; a
        code not known here keeps the tax service's text."""
        known = VATEX_REASONS.get(code or "")
        if known is None or (text and base_language(self.language) == DEFAULT_LANGUAGE):
            return text or ""
        return self.gettext(known)


class DocumentLocales:
    """The catalogs of every supported language, read once; one DocumentLocale per tag."""

    def __init__(self) -> None:
        self._sources = {language: _read_catalog(language) for language in SUPPORTED_LANGUAGES}
        self.version = hashlib.sha256("\n".join(self._sources.values()).encode()).hexdigest()[:16]
        self._compiled: dict[str, gettext.NullTranslations] | None = None
        self._locales: dict[str, DocumentLocale] = {}

    @property
    def _catalogs(self) -> dict[str, gettext.NullTranslations]:
        # Compiled with the first document written: a process that writes none never
        # loads babel. Two threads compiling at once build equal catalogs; one is kept.
        if self._compiled is None:
            self._compiled = {
                language: _compile_catalog(language, po) for language, po in self._sources.items()
            }
        return self._compiled

    def get(self, language: str) -> DocumentLocale:
        """`language` as stored with the invoice (normalised, supported)."""
        found = self._locales.get(language)
        if found is None:
            from babel import Locale

            base = base_language(language)
            catalogs = self._catalogs
            catalog = catalogs.get(base) or catalogs[DEFAULT_LANGUAGE]
            found = DocumentLocale(language, catalog, Locale.parse(babel_locale(language)))
            self._locales[language] = found
        return found


def N_(message: str) -> str:
    """Marks a message for the catalogs where it is defined; translated where printed."""
    return message


# The statuses as printed (a context each: French gives an invoice and a credit note
# different genders).
INVOICE_STATUSES: Final = {
    "draft": N_("draft"),
    "issued": N_("issued"),
    "partially_paid": N_("partially paid"),
    "paid": N_("paid"),
    "void": N_("void"),
    "uncollectible": N_("uncollectible"),
    "credited": N_("credited"),
}
CREDIT_NOTE_STATUSES: Final = {
    "issued": N_("issued"),
    "applied": N_("applied"),
    "refunded": N_("refunded"),
    "credited": N_("credited"),
}
INVOICE_STATUS_CONTEXT: Final = "invoice status"
CREDIT_NOTE_STATUS_CONTEXT: Final = "credit note status"
# A line's exemption as the tax service names it, printed when it gives no reason text.
EXEMPTIONS: Final = {
    "exempt_customer": N_("exempt customer"),
    "zero_rated": N_("zero rated"),
    "reverse_charge": N_("reverse charge"),
    "intra_eu_supply": N_("intra-EU supply"),
    "export": N_("export"),
    "out_of_scope": N_("out of scope"),
}


def template_context(loc: DocumentLocale, currency: str) -> dict[str, object]:
    """The names every document template uses to translate and format."""

    def translate(message: str, **variables: object) -> str:
        text = loc.gettext(message)
        return text % variables if variables else text

    def translate_plural(singular: str, plural: str, num: int, **variables: object) -> str:
        return loc.ngettext(singular, plural, num) % {"num": num, **variables}

    def translate_in(context: str, message: str) -> str:
        return loc.translations.pgettext(context, message)

    def exemption(value: str) -> str:
        label = EXEMPTIONS.get(value)
        return loc.gettext(label) if label else value.replace("_", " ")

    return {
        "lang": loc.lang,
        "_": translate,
        "gettext": translate,
        "ngettext": translate_plural,
        "pgettext": translate_in,
        "money": lambda value: loc.money(value, currency),
        "amt": lambda value: loc.amount(value, currency),
        "qty": loc.quantity,
        "pct": loc.percent,
        "date": loc.date,
        "exemption": exemption,
        "exemption_reason": loc.exemption_reason,
    }
