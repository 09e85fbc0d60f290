"""The VatIdChecker port's adapters: the EU's VIES REST API, and a deterministic sandbox.

VIES (`POST https://ec.europa.eu/taxation_customs/vies/rest-api/check-vat-number`, body
`{"countryCode": "DE", "vatNumber": "136695976", "requesterMemberStateCode": "FR",
"requesterNumber": "40303265045"}`) answers `valid` (or `isValid`), `requestDate` and, when
the requester is given, the consultation number `requestIdentifier` — the evidence a tax
office accepts. When it cannot answer (`userError` / `errorWrappers` such as
`MS_UNAVAILABLE`, a timeout, a 5xx) the check falls back to `format-only`: python-stdnum has
already passed the id, and the calculation records why VIES did not confirm it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

import aiohttp
from loguru import logger
from stdnum.eu import vat as eu_vat

from tax_service.domain.model import VatIdCheck

VIES_URL: Final = "https://ec.europa.eu/taxation_customs/vies/rest-api/check-vat-number"

# VIES' own codes for "asked and answered": anything else means it could not check.
_ANSWERED: Final = {"VALID", "INVALID"}

SANDBOX_UNREGISTERED: Final = frozenset({"DE123456788"})
"""Ids that pass python-stdnum but that the sandbox reports as unknown to the register: the
documented way to try the invalid-vat-id answer without VIES."""


def _split(vat_id: str) -> tuple[str, str]:
    compact = eu_vat.compact(vat_id)
    return compact[:2], compact[2:]


class SandboxVatIdChecker:
    """No network: valid for every (format-checked) id except SANDBOX_UNREGISTERED, with a
    request id derived from the id, so tests and demos are deterministic."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    async def check(self, vat_id: str, *, requester: str | None = None) -> VatIdCheck:
        return VatIdCheck(
            vat_id=vat_id,
            valid=vat_id not in SANDBOX_UNREGISTERED,
            source="sandbox",
            checked_at=self._clock(),
            request_id=f"SANDBOX-{vat_id}" if requester else None,
        )

    async def close(self) -> None:
        return None


class ViesVatIdChecker:
    """The VIES REST API through one pooled aiohttp session (created on first use)."""

    def __init__(
        self,
        clock: Callable[[], datetime],
        *,
        url: str = VIES_URL,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._clock = clock
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def check(self, vat_id: str, *, requester: str | None = None) -> VatIdCheck:
        country, number = _split(vat_id)
        body: dict[str, str] = {"countryCode": country, "vatNumber": number}
        if requester:
            requester_country, requester_number = _split(requester)
            body |= {
                "requesterMemberStateCode": requester_country,
                "requesterNumber": requester_number,
            }
        try:
            async with self._client().post(self._url, json=body) as response:
                if response.status >= 400:
                    return self._unchecked(vat_id, f"VIES answered HTTP {response.status}")
                answer: dict[str, Any] = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            return self._unchecked(vat_id, f"VIES unreachable: {type(exc).__name__}")
        return self._read(vat_id, answer)

    def _read(self, vat_id: str, answer: dict[str, Any]) -> VatIdCheck:
        errors = answer.get("errorWrappers") or []
        user_error = answer.get("userError")
        valid = answer.get("valid", answer.get("isValid"))
        if errors or not isinstance(valid, bool) or (user_error and user_error not in _ANSWERED):
            code = errors[0].get("error") if errors else user_error or "no answer"
            return self._unchecked(vat_id, f"VIES could not check: {code}")
        return VatIdCheck(
            vat_id=vat_id,
            valid=valid,
            source="vies",
            checked_at=self._clock(),
            request_id=answer.get("requestIdentifier") or None,
        )

    def _unchecked(self, vat_id: str, detail: str) -> VatIdCheck:
        logger.bind(vat_id=vat_id).warning("VAT id not confirmed online: {}", detail)
        return VatIdCheck(
            vat_id=vat_id,
            valid=True,
            source="format-only",
            checked_at=self._clock(),
            detail=detail,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
