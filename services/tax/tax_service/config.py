"""Settings of the tax service beyond the shared ones (env prefix `TAX_`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tax_service.adapters.vat_id_checks import VIES_URL, SandboxVatIdChecker, ViesVatIdChecker
from tax_service.service_layer.ports import VatIdChecker


class TaxOptions(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAX_", env_file=".env", extra="ignore")

    # The online VAT id check: "vies" (the EU's register; needs the internet), "sandbox"
    # (deterministic, no network), "format-only" (python-stdnum alone). None: sandbox where the
    # DevelopmentPolicy allows sandbox registers (the embedded runtime), format-only
    # elsewhere — production sets "vies".
    vat_id_check: Literal["vies", "sandbox", "format-only"] | None = None
    vies_url: str = VIES_URL
    vies_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    def vat_id_checker(
        self, sandbox_allowed: bool, clock: Callable[[], datetime]
    ) -> VatIdChecker | None:
        mode = self.vat_id_check or ("sandbox" if sandbox_allowed else "format-only")
        if mode == "vies":
            return ViesVatIdChecker(
                clock, url=self.vies_url, timeout_seconds=self.vies_timeout_seconds
            )
        if mode == "sandbox":
            return SandboxVatIdChecker(clock)
        return None
