"""Kopf handlers: TaxRule and DiscountPolicy resources, upserted into their service by key.

Every handler is idempotent: the services' endpoints are PUT/DELETE by key, so a replayed
ADDED event, a resumed operator or a retry after a lost response all converge on one state.
The resource's status tells what happened: `Ready` True once the service holds the spec of
`observedGeneration`, False with a reason (`ServiceUnavailable`, retried with backoff;
`Rejected`, with the service's problem, until the spec changes; `InvalidSpec`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import kopf
from loguru import logger

from billing_operator.client import ServiceClient, ServiceRejected, ServiceUnavailable
from billing_operator.config import (
    DISCOUNT_POLICIES,
    FINALIZER,
    GROUP,
    TAX_RULES,
    TENANT_KEY,
    VERSION,
    OperatorConfig,
)
from billing_operator.payloads import (
    SpecError,
    discount_policy_body,
    resolve_tenant,
    resource_key,
    tax_rule_body,
)
from billing_operator.tokens import TokenMinter


@dataclass(frozen=True)
class Kind:
    """How one custom resource maps onto its service."""

    title: str
    plural: str
    service: str  # "tax" | "discount": which ServiceClient
    path: Callable[[str], str]
    body: Callable[[Mapping[str, Any]], dict[str, Any]]


TAX_RULE = Kind(
    title="TaxRule",
    plural=TAX_RULES,
    service="tax",
    path=lambda key: f"/v1/tax/rules/by-key/{quote(key, safe='')}",
    body=tax_rule_body,
)
DISCOUNT_POLICY = Kind(
    title="DiscountPolicy",
    plural=DISCOUNT_POLICIES,
    service="discount",
    path=lambda key: f"/v1/discounts/policies/{quote(key, safe='')}",
    body=discount_policy_body,
)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_ready(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    generation: int | None,
    *,
    ready: bool,
    reason: str,
    message: str,
) -> None:
    """Write the Ready condition (keeping other conditions) and observedGeneration.
    lastTransitionTime moves only when the condition's status flips, as the convention says."""
    value = "True" if ready else "False"
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    previous = next((c for c in conditions if c.get("type") == "Ready"), None)
    since = (
        previous.get("lastTransitionTime")
        if previous and previous.get("status") == value and previous.get("lastTransitionTime")
        else _now()
    )
    condition: dict[str, Any] = {
        "type": "Ready",
        "status": value,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since,
    }
    if generation is not None:
        condition["observedGeneration"] = generation
        patch.status["observedGeneration"] = generation
    patch.status["conditions"] = [c for c in conditions if c.get("type") != "Ready"] + [condition]


class Reconciler:
    """Holds the configuration and, while the operator runs, the HTTP clients."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.tokens = TokenMinter(
            config.jwt_signing_key.get_secret_value(),
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            ttl_seconds=config.token_ttl_seconds,
        )
        self._http: httpx.AsyncClient | None = None
        self._clients: dict[str, ServiceClient] = {}

    # --- lifecycle ----------------------------------------------------------------------

    async def startup(self, **_: Any) -> None:
        self._http = httpx.AsyncClient(timeout=self.config.request_timeout_seconds)
        self._clients = {
            "tax": ServiceClient(self.config.tax_url, "tax:admin", self.tokens, self._http),
            "discount": ServiceClient(
                self.config.discount_url, "discount:admin", self.tokens, self._http
            ),
        }
        logger.info(
            "billing operator started: tax at {}, discount at {}",
            self.config.tax_url,
            self.config.discount_url,
        )

    async def cleanup(self, **_: Any) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self, kind: Kind) -> ServiceClient:
        if kind.service not in self._clients:
            raise kopf.TemporaryError("the operator is still starting", delay=1)
        return self._clients[kind.service]

    # --- handlers -----------------------------------------------------------------------

    async def apply(
        self,
        kind: Kind,
        *,
        spec: Mapping[str, Any],
        name: str,
        namespace: str,
        meta: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
        retry: int,
        tenants: Iterable[str],
        log: Any,
    ) -> None:
        generation = meta.get("generation")
        try:
            key = resource_key(namespace, name)
            tenant = resolve_tenant(spec, tenants, self.config.default_tenant)
            body = kind.body(spec)
        except SpecError as exc:
            set_ready(
                patch, status, generation, ready=False, reason="InvalidSpec", message=str(exc)
            )
            raise kopf.PermanentError(str(exc)) from exc

        client = self._client(kind)
        try:
            applied_tenant = status.get("tenant")
            if applied_tenant and applied_tenant != tenant:
                # The resource moved to another tenant: take it out of the old one first, so
                # no tenant keeps a rule nobody declares any more.
                await client.delete(kind.path(status.get("key") or key), tenant=applied_tenant)
            result = await client.put(kind.path(key), tenant=tenant, body=body)
        except ServiceUnavailable as exc:
            delay = exc.retry_after or self.config.retry_delay(retry)
            message = f"{kind.service} service unavailable, retrying in {delay:g}s: {exc}"
            set_ready(
                patch, status, generation, ready=False, reason="ServiceUnavailable", message=message
            )
            raise kopf.TemporaryError(message, delay=delay) from exc
        except ServiceRejected as exc:
            set_ready(patch, status, generation, ready=False, reason="Rejected", message=str(exc))
            patch.status["problem"] = {
                k: exc.problem[k]
                for k in ("type", "title", "status", "detail", "errors")
                if k in exc.problem
            } or {"status": exc.status}
            raise kopf.PermanentError(f"{kind.service} service rejected {key}: {exc}") from exc

        verb = "created" if result.created else "updated"
        message = f"{kind.title} {key} {verb} in the {kind.service} service for tenant {tenant}"
        set_ready(patch, status, generation, ready=True, reason="Reconciled", message=message)
        patch.status["tenant"] = tenant
        patch.status["key"] = key
        patch.status["problem"] = None  # merge-patch null: drop an earlier rejection
        log.info(message)

    async def remove(
        self,
        kind: Kind,
        *,
        spec: Mapping[str, Any],
        name: str,
        namespace: str,
        status: Mapping[str, Any],
        retry: int,
        tenants: Iterable[str],
        log: Any,
    ) -> None:
        tenant = status.get("tenant")
        key = status.get("key")
        if not tenant or not key:
            # Never confirmed as applied; the spec's tenant may still have it if the status
            # write was lost after a successful PUT, so try that before letting go.
            try:
                tenant = resolve_tenant(spec, tenants, self.config.default_tenant)
                key = resource_key(namespace, name)
            except SpecError:
                log.info(f"{kind.title} was never applied: nothing to delete")
                return
        try:
            deleted = await self._client(kind).delete(kind.path(key), tenant=tenant)
        except ServiceUnavailable as exc:
            delay = exc.retry_after or self.config.retry_delay(retry)
            raise kopf.TemporaryError(
                f"{kind.service} service unavailable, retrying in {delay:g}s: {exc}", delay=delay
            ) from exc
        except ServiceRejected as exc:
            # The service says there is nothing it will delete under this key; holding the
            # finalizer forever would only block the namespace.
            log.warning(f"{kind.service} service refused to delete {key}: {exc}; releasing")
            return
        log.info(f"{kind.title} {key} {'deleted' if deleted else 'was already gone'}")


def namespace_tenant(
    name: str, labels: Mapping[str, str], annotations: Mapping[str, str], **_: Any
) -> dict[str, str] | None:
    """Index: namespace -> its default tenant (label wins over annotation)."""
    tenant = labels.get(TENANT_KEY) or annotations.get(TENANT_KEY)
    return {name: tenant} if tenant else None


def operator_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = FINALIZER
    # Progress and diff-base in annotations of our own group: the CRDs' status schema stays
    # ours alone, and nothing is pruned by the API server.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = config.post_events
    settings.posting.level = 20  # INFO and up become Kubernetes events on the resource
    # Re-establish watches every few minutes: a silently dropped connection costs no more.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


def build_registry(
    reconciler: Reconciler, login: Callable[..., Any] | None = None
) -> kopf.OperatorRegistry:
    """A fresh registry with every handler. `login` replaces the in-cluster service account
    and kubeconfig logins (tests point it at an emulated API server)."""
    registry = kopf.OperatorRegistry()
    if login is None:
        kopf.on.login(registry=registry)(kopf.login_with_service_account)
        kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    else:
        kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(reconciler.startup)
    kopf.on.cleanup(registry=registry)(reconciler.cleanup)
    kopf.index("v1", "namespaces", id="namespace_tenants", registry=registry)(namespace_tenant)

    for kind in (TAX_RULE, DISCOUNT_POLICY):
        _register(registry, reconciler, kind)
    return registry


def _register(registry: kopf.OperatorRegistry, reconciler: Reconciler, kind: Kind) -> None:
    resource = (GROUP, VERSION, kind.plural)
    handler_id = f"{kind.service}-apply"

    async def apply(
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        meta: kopf.Meta,
        status: kopf.Status,
        patch: kopf.Patch,
        retry: int,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        assert namespace is not None  # both CRDs are namespaced
        namespace_tenants: kopf.Index[str, str] = kwargs["namespace_tenants"]
        await reconciler.apply(
            kind,
            spec=spec,
            name=name,
            namespace=namespace,
            meta=meta,
            status=status,
            patch=patch,
            retry=retry,
            tenants=namespace_tenants.get(namespace, []),
            log=logger,
        )

    async def remove(
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        status: kopf.Status,
        retry: int,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        assert namespace is not None
        namespace_tenants: kopf.Index[str, str] = kwargs["namespace_tenants"]
        await reconciler.remove(
            kind,
            spec=spec,
            name=name,
            namespace=namespace,
            status=status,
            retry=retry,
            tenants=namespace_tenants.get(namespace, []),
            log=logger,
        )

    kopf.on.create(*resource, id=handler_id, registry=registry)(apply)
    kopf.on.update(*resource, id=handler_id, field="spec", registry=registry)(apply)
    kopf.on.resume(*resource, id=handler_id, registry=registry)(apply)
    kopf.on.delete(*resource, id=f"{kind.service}-remove", registry=registry)(remove)
