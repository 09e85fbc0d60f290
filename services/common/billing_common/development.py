"""What only a developer's machine may do, decided in one place.

The embedded runtime is the one-process setup of `make up` and the tests; every other runtime
is a deployment. Each decision below follows from that, unless a setting says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from billing_common.settings import ServiceSettings


@dataclass(frozen=True)
class DevelopmentPolicy:
    """Read it as `settings.development`.

    - `development_secrets`: when the secret store has none, use the secrets written in the
      source (the JWT signing key, payment's sandbox webhook secret). Anyone who can read the
      code could mint tokens or forge webhooks with them, so a deployment refuses to start
      without a signing key and refuses sandbox webhooks without their secret.
    - `migrate_on_start`: apply the service's migrations when it starts. Deployments migrate
      once (`make migrate`, the chart's hook) so that replicas never race on the schema;
      `MIGRATE_ON_START` decides where set.
    - `load_samples`: load the documented sample rules and coupons for tenant "demo" on start,
      so a fresh checkout answers at once. Invented rules must never reach real tenants' data;
      `LOAD_SAMPLE_DATA` decides where set (`make up` sets it).
    - `sandbox_registers`: answer checks against outside registers (tax's VIES VAT id check)
      from a deterministic sandbox when none is configured. A deployment must not record a
      made-up register answer as evidence, so it falls back to the format check alone.
    """

    development_secrets: bool
    migrate_on_start: bool
    load_samples: bool
    sandbox_registers: bool

    @classmethod
    def of(cls, settings: ServiceSettings) -> DevelopmentPolicy:
        developing = settings.runtime == "embedded"
        return cls(
            development_secrets=developing,
            migrate_on_start=(
                developing if settings.migrate_on_start is None else settings.migrate_on_start
            ),
            load_samples=(
                developing if settings.load_sample_data is None else settings.load_sample_data
            ),
            sandbox_registers=developing,
        )
