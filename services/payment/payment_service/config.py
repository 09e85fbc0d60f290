"""Settings of the payment service beyond the shared ones (env prefix `PAYMENT_`)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class PaymentOptions(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENT_", env_file=".env", extra="ignore")

    # Point the Stripe adapter elsewhere (stripe-mock, a recording proxy); None: api.stripe.com.
    stripe_api_base: str | None = None
    stripe_timeout_seconds: float = 20.0
    stripe_max_network_retries: int = 2
    # Webhooks signed further than this from now (either way) are rejected as replays.
    webhook_tolerance_seconds: int = 300
    # How long a request keeps trying to record a gateway's answer while the database is
    # away; an attempt's lease is the gateway's longest call plus this (and a margin).
    record_outcome_seconds: float = 15.0
    # How often the recovery sweep looks for attempts whose lease ran out with no outcome.
    recovery_sweep_seconds: float = 5.0
