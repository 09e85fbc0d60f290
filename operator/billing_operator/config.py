"""Operator configuration from the environment (set by the Helm chart).

Service base URLs default to the Dapr sidecar's invocation API (`dapr.io/enabled` on the
operator pod): calls then get the sidecar's mTLS, the Resiliency policies and Dapr's access
control. Outside the cluster (or without a sidecar) set TAX_URL / DISCOUNT_URL to the
services' plain URLs, e.g. http://127.0.0.1:8001.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

GROUP = "billing.example.dev"
VERSION = "v1alpha1"
TAX_RULES = "taxrules"
DISCOUNT_POLICIES = "discountpolicies"
FINALIZER = f"{GROUP}/operator"
TENANT_KEY = f"{GROUP}/tenant"  # namespace label or annotation naming the default tenant

DAPR_INVOKE = "http://localhost:3500/v1.0/invoke/{app_id}/method"
_TRUE = {"1", "true", "yes", "on"}


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    tax_url: str = DAPR_INVOKE.format(app_id="tax")
    discount_url: str = DAPR_INVOKE.format(app_id="discount")
    jwt_signing_key: SecretStr
    jwt_issuer: str = "billing-platform"
    jwt_audience: str = "billing-api"
    token_ttl_seconds: int = Field(default=300, ge=30, le=3600)
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # How often each applied resource is compared with what its service holds (drift repair,
    # namespace relabels); 0 turns the check off.
    drift_interval_seconds: float = Field(default=60.0, ge=0)
    # Deleting gives up (and releases the finalizer, with a Warning event) after this many
    # failed attempts or this long, whichever comes first: a service gone for good must not
    # block the namespace forever.
    delete_max_retries: int = Field(default=8, ge=0)
    delete_timeout_seconds: float = Field(default=900.0, gt=0)
    default_tenant: str | None = None
    post_events: bool = True
    watch_namespaces: tuple[str, ...] = ()
    liveness_endpoint: str | None = "http://0.0.0.0:8080/healthz"
    log_json: bool = False

    @field_validator("tax_url", "discount_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("jwt_signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        # Same floor as billing_common.auth.TokenService: a short HS256 key is guessable.
        if len(value.get_secret_value()) < 32:
            raise ValueError("the JWT signing key must be at least 32 characters")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        plain = {
            "TAX_URL": "tax_url",
            "DISCOUNT_URL": "discount_url",
            "JWT_SIGNING_KEY": "jwt_signing_key",
            "JWT_ISSUER": "jwt_issuer",
            "JWT_AUDIENCE": "jwt_audience",
            "OPERATOR_TOKEN_TTL_SECONDS": "token_ttl_seconds",
            "OPERATOR_REQUEST_TIMEOUT_SECONDS": "request_timeout_seconds",
            "OPERATOR_RETRY_BASE_SECONDS": "retry_base_seconds",
            "OPERATOR_RETRY_MAX_SECONDS": "retry_max_seconds",
            "OPERATOR_DEFAULT_TENANT": "default_tenant",
            "OPERATOR_DRIFT_INTERVAL_SECONDS": "drift_interval_seconds",
            "OPERATOR_DELETE_MAX_RETRIES": "delete_max_retries",
            "OPERATOR_DELETE_TIMEOUT_SECONDS": "delete_timeout_seconds",
            "OPERATOR_LIVENESS_ENDPOINT": "liveness_endpoint",
        }
        for name, field in plain.items():
            if env.get(name):
                values[field] = env[name]
        for name, field in {"OPERATOR_POST_EVENTS": "post_events", "LOG_JSON": "log_json"}.items():
            if env.get(name):
                values[field] = env[name].strip().lower() in _TRUE
        if env.get("WATCH_NAMESPACES"):
            values["watch_namespaces"] = tuple(
                ns.strip() for ns in env["WATCH_NAMESPACES"].split(",") if ns.strip()
            )
        return cls.model_validate(values)

    def retry_delay(self, retry: int) -> float:
        """Exponential backoff for temporary failures, capped."""
        return float(min(self.retry_base_seconds * (2 ** min(retry, 16)), self.retry_max_seconds))
