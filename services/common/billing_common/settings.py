"""Settings from the environment (pydantic-settings). Documented in `.env.example`.

A process that runs one service reads plain names (`DATABASE_URL`); names prefixed with the
service (`TAX_DATABASE_URL`) win over them, so the one-process embedded runtime can still give
each service its own database.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing_common.development import DevelopmentPolicy

Runtime = Literal["embedded", "direct", "dapr"]

DEFAULT_PORTS = {"tax": 8001, "discount": 8002, "invoice": 8003, "payment": 8004}


def _default_peer_urls() -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}" for name, port in DEFAULT_PORTS.items()}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    service_name: str = "service"
    runtime: Runtime = "embedded"
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    # None means a SQLite file per service under data_dir.
    database_url: str | None = None
    # A fixed pool per process (see billing_common.db.create_engine); overflow connections
    # are opened for a burst and closed again on return.
    database_pool_size: int = 10
    database_pool_max_overflow: int = 0
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    amqp_exchange: str = "billing.events"
    amqp_prefetch: int = 32
    amqp_max_retries: int = 5
    amqp_retry_delay_seconds: float = 1.0
    peer_urls: dict[str, str] = Field(default_factory=_default_peer_urls)
    invoke_timeout_seconds: float = 5.0
    invoke_retries: int = 2
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 10.0
    dapr_pubsub_name: str = "pubsub"
    dapr_state_store: str = "statestore"
    dapr_secret_store: str = "secretstore"
    jwt_issuer: str = "billing-platform"
    jwt_audience: str = "billing-api"
    # Development-only fallback (see DevelopmentPolicy); deployments must get the key from the
    # secret store (env JWT_SIGNING_KEY, the secrets file, or Dapr's secret store).
    jwt_dev_signing_key: str = "dev-only-signing-key-change-me-0123456789abcdef"
    # Local JSON secrets (embedded/direct). `make up` writes a random signing key here.
    secrets_file: Path | None = Path("var/secrets.json")
    # None: DevelopmentPolicy decides (migrate at start-up only in the embedded runtime;
    # elsewhere `make migrate` or a Helm hook does it once, so replicas do not race).
    migrate_on_start: bool | None = None
    log_json: bool = False
    log_level: str = "INFO"
    outbox_poll_seconds: float = 1.0
    outbox_batch_size: int = 100
    # Shutdown: requests in flight get this long to finish (uvicorn's graceful timeout), then
    # the relay publishes what they committed for at most `shutdown_flush_seconds`, then the
    # consumers finish their events. Keep the sum, plus any preStop sleep and the consumers'
    # 10 s, under Kubernetes' terminationGracePeriodSeconds.
    graceful_shutdown_seconds: float = 10.0
    shutdown_flush_seconds: float = 3.0
    max_body_bytes: int = 1_048_576
    # None: DevelopmentPolicy decides (the documented sample rules/coupons for tenant "demo"
    # only in the embedded runtime); `make up` sets it true; production leaves it off.
    load_sample_data: bool | None = None

    @classmethod
    def for_service(cls, name: str, **overrides: Any) -> ServiceSettings:
        prefix = f"{name.upper()}_"
        prefixed = {
            key[len(prefix) :].lower(): value
            for key, value in os.environ.items()
            if key.startswith(prefix) and key[len(prefix) :].lower() in cls.model_fields
        }
        values: dict[str, Any] = {"port": DEFAULT_PORTS.get(name, 8000), **prefixed, **overrides}
        return cls(service_name=name, **values)

    @property
    def development(self) -> DevelopmentPolicy:
        """What this process may do only because it runs on a developer's machine."""
        return DevelopmentPolicy.of(self)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / (self.service_name + '.db')}"
