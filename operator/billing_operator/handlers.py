"""Kopf handlers: TaxRule and DiscountPolicy resources, upserted into their service by key.

Every handler is idempotent: the services' endpoints are PUT/DELETE by key, so a replayed
ADDED event, a resumed operator or a retry after a lost response all converge on one state.
The resource's status tells what happened: `Ready` True once the service holds the spec of
`observedGeneration`, False with a reason (`ServiceUnavailable`, `TenantMissing` and
`TenantRefused`, retried with backoff; `Rejected`, with the service's problem, and
`InvalidSpec`, until the spec changes). A timer compares what the service holds with the spec
and repairs drift (condition `Drifted`). Each of these posts a core v1 Event on the resource.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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
    TenantMissing,
    TenantRefused,
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


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    for item in status.get("conditions") or []:
        if isinstance(item, dict) and item.get("type") == type_:
            return item
    return None


def set_condition(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    generation: int | None,
    *,
    type_: str,
    value: bool,
    reason: str,
    message: str,
) -> None:
    """Write one condition (keeping the others, including those this patch already wrote).
    lastTransitionTime moves only when the condition's status flips, as the convention says."""
    text = "True" if value else "False"
    written = patch.status.get("conditions")
    source = written if isinstance(written, list) else status.get("conditions") or []
    conditions = [dict(c) for c in source if isinstance(c, Mapping)]
    previous = next((c for c in conditions if c.get("type") == type_), None)
    since = (
        previous.get("lastTransitionTime")
        if previous and previous.get("status") == text and previous.get("lastTransitionTime")
        else _now()
    )
    item: dict[str, Any] = {
        "type": type_,
        "status": text,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": since,
    }
    if generation is not None:
        item["observedGeneration"] = generation
    patch.status["conditions"] = [c for c in conditions if c.get("type") != type_] + [item]


def set_ready(
    patch: kopf.Patch,
    status: Mapping[str, Any],
    generation: int | None,
    *,
    ready: bool,
    reason: str,
    message: str,
) -> None:
    """The Ready condition and observedGeneration."""
    set_condition(
        patch, status, generation, type_="Ready", value=ready, reason=reason, message=message
    )
    if generation is not None:
        patch.status["observedGeneration"] = generation


def _same(desired: Any, actual: Any) -> bool:
    """Equal as the service means it: decimal strings by value ("0.19" == "0.190"), dates and
    times by instant ("...Z" == "...+00:00"), objects on the keys the operator sends."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            _same(value, actual.get(key)) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(_same(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if isinstance(desired, str) and isinstance(actual, str) and desired != actual:
        for parse in (Decimal, datetime.datetime.fromisoformat):
            try:
                return bool(parse(desired) == parse(actual))  # type: ignore[operator]
            except (InvalidOperation, ValueError):
                continue
        return False
    return bool(desired == actual)


def drifted_fields(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """The top-level fields of the body the operator sends that the service holds otherwise."""
    return [key for key, value in desired.items() if not _same(value, actual.get(key))]


def post_event(body: Mapping[str, Any], *, warning: bool, reason: str, message: str) -> None:
    """A core v1 Event on the resource (Kopf >= 1.44 no longer turns log lines into events;
    `kopf.event` posts explicitly, and only if settings.posting.enabled)."""
    kopf.event(
        body,  # type: ignore[arg-type]
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message[:1024],
    )


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
            "tax": ServiceClient(
                self.config.tax_url, "tax:admin", "tax:read", self.tokens, self._http
            ),
            "discount": ServiceClient(
                self.config.discount_url, "discount:admin", "discount:read", self.tokens, self._http
            ),
        }
        logger.info(
            "billing operator started: tax at {}, discount at {}",
            self.config.tax_url,
            self.config.discount_url,
        )

    async def cleanup(self, **_: Any) -> None:
        self._clients = {}  # a timer still running finds no client rather than a closed one
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self, kind: Kind) -> ServiceClient:
        if kind.service not in self._clients:
            raise kopf.TemporaryError("the operator is starting or stopping", delay=1)
        return self._clients[kind.service]

    def _report(
        self,
        body: Mapping[str, Any],
        patch: kopf.Patch,
        status: Mapping[str, Any],
        generation: int | None,
        *,
        ready: bool,
        reason: str,
        message: str,
    ) -> None:
        """Ready condition, plus an event when the reason changes (a retry that fails the
        same way again says nothing new, and events cost the API server)."""
        previous = condition(status, "Ready") or {}
        set_ready(patch, status, generation, ready=ready, reason=reason, message=message)
        if previous.get("reason") != reason or previous.get("status") != str(ready):
            post_event(body, warning=not ready, reason=reason, message=message)

    async def _upsert(
        self,
        kind: Kind,
        client: ServiceClient,
        *,
        key: str,
        tenant: str,
        desired: dict[str, Any],
        applied_tenant: str | None,
    ) -> bool:
        if applied_tenant and applied_tenant != tenant:
            # The namespace moved to another tenant: take the rule out of the old one first,
            # so no tenant keeps a rule nobody declares for it any more.
            await client.delete(kind.path(key), tenant=applied_tenant)
        return (await client.put(kind.path(key), tenant=tenant, body=desired)).created

    def _unavailable(self, kind: Kind, exc: ServiceUnavailable, retry: int) -> tuple[float, str]:
        delay = exc.retry_after or self.config.retry_delay(retry)
        return delay, f"{kind.service} service unavailable, retrying in {delay:g}s: {exc}"

    @staticmethod
    def _keep_problem(patch: kopf.Patch, exc: ServiceRejected) -> None:
        patch.status["problem"] = {
            k: exc.problem[k]
            for k in ("type", "title", "status", "detail", "errors")
            if k in exc.problem
        } or {"status": exc.status}

    # --- handlers -----------------------------------------------------------------------

    async def apply(
        self,
        kind: Kind,
        *,
        body: Mapping[str, Any],
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
        report = functools.partial(self._report, body, patch, status, generation)
        try:
            key = resource_key(namespace, name)
            tenant = resolve_tenant(spec, tenants, self.config.default_tenant)
            desired = kind.body(spec)
        except SpecError as exc:
            report(ready=False, reason="InvalidSpec", message=str(exc))
            raise kopf.PermanentError(str(exc)) from exc
        except (TenantMissing, TenantRefused) as exc:
            # Both depend on the namespace's label, which can change without the resource
            # changing: retried (with backoff), not given up.
            delay = self.config.retry_delay(retry)
            reason = type(exc).__name__
            report(ready=False, reason=reason, message=f"{exc}; retrying in {delay:g}s")
            raise kopf.TemporaryError(str(exc), delay=delay) from exc

        client = self._client(kind)
        try:
            created = await self._upsert(
                kind,
                client,
                key=key,
                tenant=tenant,
                desired=desired,
                applied_tenant=status.get("tenant"),
            )
        except ServiceUnavailable as exc:
            delay, message = self._unavailable(kind, exc, retry)
            report(ready=False, reason="ServiceUnavailable", message=message)
            raise kopf.TemporaryError(message, delay=delay) from exc
        except ServiceRejected as exc:
            report(ready=False, reason="Rejected", message=str(exc))
            self._keep_problem(patch, exc)
            raise kopf.PermanentError(f"{kind.service} service rejected {key}: {exc}") from exc

        verb = "created" if created else "updated"
        message = f"{kind.title} {key} {verb} in the {kind.service} service for tenant {tenant}"
        previous = condition(status, "Ready") or {}
        set_ready(patch, status, generation, ready=True, reason="Reconciled", message=message)
        if (
            created
            or previous.get("status") != "True"
            or previous.get("observedGeneration") != generation
        ):
            # Not on a resume that found everything in place: a restart of the operator
            # would otherwise post one event per resource in the cluster.
            post_event(body, warning=False, reason="Reconciled", message=message)
        patch.status["tenant"] = tenant
        patch.status["key"] = key
        patch.status["problem"] = None  # merge-patch null: drop an earlier rejection
        log.info(message)

    def _drift_check_due(
        self, kind: Kind, meta: Mapping[str, Any], status: Mapping[str, Any]
    ) -> bool:
        """Only resources the handlers are done with: applied once, the Ready condition about
        the current generation, not refused for their spec, and no handler retrying (Kopf
        keeps a progress annotation while one is)."""
        if meta.get("deletionTimestamp") or not status.get("tenant"):
            return False
        ready = condition(status, "Ready")
        if not ready or ready.get("observedGeneration") != meta.get("generation"):
            return False
        if ready.get("reason") in ("Rejected", "InvalidSpec"):
            return False
        progress = f"{GROUP}/{kind.service}-apply"
        return not any(k.startswith(progress) for k in (meta.get("annotations") or {}))

    async def check_drift(
        self,
        kind: Kind,
        *,
        body: Mapping[str, Any],
        spec: Mapping[str, Any],
        name: str,
        namespace: str,
        meta: Mapping[str, Any],
        status: Mapping[str, Any],
        patch: kopf.Patch,
        tenants: Iterable[str],
        log: Any,
    ) -> None:
        """The timer: compare what the service holds with the spec, and the namespace's
        tenant with the one applied to; repair either idempotently and say so."""
        if not self._drift_check_due(kind, meta, status):
            return
        generation = meta.get("generation")
        report = functools.partial(self._report, body, patch, status, generation)
        try:
            key = resource_key(namespace, name)
            tenant = resolve_tenant(spec, tenants, self.config.default_tenant)
            desired = kind.body(spec)
        except SpecError:
            return  # the handlers accepted this generation; nothing new to say
        except (TenantMissing, TenantRefused) as exc:
            # The namespace lost its label, or got another one that spec.tenant contradicts:
            # leave the applied rule where it is and say why nothing is reconciled.
            report(ready=False, reason=type(exc).__name__, message=str(exc))
            return

        client = self._client(kind)
        applied_tenant = status.get("tenant")
        try:
            if applied_tenant != tenant:
                reason = "TenantChanged"
                drift = (
                    f"namespace {namespace} now belongs to tenant {tenant} (was {applied_tenant})"
                )
            else:
                actual = await client.get(kind.path(key), tenant=tenant)
                if actual is None:
                    reason, drift = (
                        "DeletedInService",
                        f"{key} was deleted in the {kind.service} service",
                    )
                elif fields := drifted_fields(desired, actual):
                    reason = "ChangedInService"
                    drift = f"{key} was changed in the {kind.service} service ({', '.join(fields)})"
                else:
                    self._in_sync(body, patch, status, generation, kind, key, tenant)
                    return
            await self._upsert(
                kind, client, key=key, tenant=tenant, desired=desired, applied_tenant=applied_tenant
            )
        except ServiceUnavailable as exc:
            # No backoff of our own: the next tick is the retry.
            report(
                ready=False,
                reason="ServiceUnavailable",
                message=f"{kind.service} service unavailable: {exc}",
            )
            return
        except ServiceRejected as exc:
            report(ready=False, reason="Rejected", message=str(exc))
            self._keep_problem(patch, exc)
            return

        message = f"{drift}: re-applied the spec for tenant {tenant}"
        set_ready(patch, status, generation, ready=True, reason="Reconciled", message=message)
        set_condition(
            patch, status, generation, type_="Drifted", value=True, reason=reason, message=message
        )
        patch.status["tenant"] = tenant
        patch.status["key"] = key
        post_event(body, warning=True, reason="Drifted", message=message)
        log.warning(message)

    def _in_sync(
        self,
        body: Mapping[str, Any],
        patch: kopf.Patch,
        status: Mapping[str, Any],
        generation: int | None,
        kind: Kind,
        key: str,
        tenant: str,
    ) -> None:
        """Writes only on a change: a quiet check leaves the object alone."""
        ready = condition(status, "Ready") or {}
        if ready.get("status") != "True":
            message = (
                f"{kind.title} {key} is in sync with the {kind.service} service for tenant {tenant}"
            )
            set_ready(patch, status, generation, ready=True, reason="Reconciled", message=message)
            post_event(body, warning=False, reason="Reconciled", message=message)
        drifted = condition(status, "Drifted")
        if drifted and drifted.get("status") == "True":
            set_condition(
                patch,
                status,
                generation,
                type_="Drifted",
                value=False,
                reason="InSync",
                message=f"the {kind.service} service holds the spec",
            )

    async def remove(
        self,
        kind: Kind,
        *,
        body: Mapping[str, Any],
        spec: Mapping[str, Any],
        name: str,
        namespace: str,
        status: Mapping[str, Any],
        retry: int,
        runtime: datetime.timedelta,
        tenants: Iterable[str],
        log: Any,
    ) -> None:
        try:
            key = resource_key(namespace, name)
        except SpecError:
            return  # never applied: no key could be formed
        tenant = status.get("tenant")
        if not tenant:
            # Never confirmed as applied; the namespace's tenant may still have it if the
            # status write was lost after a successful PUT, so try that before letting go.
            try:
                tenant = resolve_tenant(spec, tenants, self.config.default_tenant)
            except (SpecError, TenantMissing, TenantRefused):
                log.info(f"{kind.title} was never applied: nothing to delete")
                return
        try:
            deleted = await self._client(kind).delete(kind.path(key), tenant=tenant)
        except ServiceUnavailable as exc:
            attempts = retry + 1
            if (
                attempts > self.config.delete_max_retries
                or runtime.total_seconds() >= self.config.delete_timeout_seconds
            ):
                # The service is gone for good (or for longer than anyone waits): release the
                # finalizer rather than block the namespace, and leave a trace of what remains.
                message = (
                    f"{kind.service} service unavailable after {attempts} attempts over "
                    f"{runtime.total_seconds():.0f}s: finalizer released; {key} may remain in "
                    f"tenant {tenant}: {exc}"
                )
                post_event(body, warning=True, reason="FinalizerReleased", message=message)
                log.warning(message)
                return
            delay, message = self._unavailable(kind, exc, retry)
            if retry == 0:
                post_event(body, warning=True, reason="ServiceUnavailable", message=message)
            raise kopf.TemporaryError(message, delay=delay) from exc
        except ServiceRejected as exc:
            # The service says there is nothing it will delete under this key; holding the
            # finalizer forever would only block the namespace.
            message = f"{kind.service} service refused to delete {key}: {exc}; finalizer released"
            post_event(body, warning=True, reason="FinalizerReleased", message=message)
            log.warning(message)
            return
        message = (
            f"{kind.title} {key} {'deleted' if deleted else 'was already gone'} in tenant {tenant}"
        )
        post_event(body, warning=False, reason="Deleted", message=message)
        log.info(message)


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
    # Events are posted explicitly (post_event): a reconcile, a failure, a drift, a delete.
    # Log lines stay log lines (Kopf's default since 1.44: posting.loggers is False).
    settings.posting.enabled = config.post_events
    settings.posting.loggers = False
    settings.posting.reporting_component = "billing-operator"
    # A deletion waits for the drift timer to exit; one caught mid-request would be polled
    # again only after Kopf's default 60 s, holding the finalizer that long.
    settings.background.cancellation_polling = 1.0
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
        body: kopf.Body,
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
            body=body,
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

    async def check(
        body: kopf.Body,
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        meta: kopf.Meta,
        status: kopf.Status,
        patch: kopf.Patch,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        assert namespace is not None
        namespace_tenants: kopf.Index[str, str] = kwargs["namespace_tenants"]
        await reconciler.check_drift(
            kind,
            body=body,
            spec=spec,
            name=name,
            namespace=namespace,
            meta=meta,
            status=status,
            patch=patch,
            tenants=namespace_tenants.get(namespace, []),
            log=logger,
        )

    async def remove(
        body: kopf.Body,
        spec: kopf.Spec,
        name: str,
        namespace: str | None,
        status: kopf.Status,
        retry: int,
        runtime: datetime.timedelta,
        logger: kopf.Logger,
        **kwargs: Any,
    ) -> None:
        assert namespace is not None
        namespace_tenants: kopf.Index[str, str] = kwargs["namespace_tenants"]
        await reconciler.remove(
            kind,
            body=body,
            spec=spec,
            name=name,
            namespace=namespace,
            status=status,
            retry=retry,
            runtime=runtime,
            tenants=namespace_tenants.get(namespace, []),
            log=logger,
        )

    kopf.on.create(*resource, id=handler_id, registry=registry)(apply)
    kopf.on.update(*resource, id=handler_id, field="spec", registry=registry)(apply)
    kopf.on.resume(*resource, id=handler_id, registry=registry)(apply)
    kopf.on.delete(*resource, id=f"{kind.service}-remove", registry=registry)(remove)
    interval = reconciler.config.drift_interval_seconds
    if interval > 0:
        # Idle as long as the interval: never while the object is still changing (the
        # handlers' own patches count), so the timer does not race a handler's retries.
        kopf.timer(
            *resource,
            id=f"{kind.service}-drift",
            interval=interval,
            idle=interval,
            registry=registry,
        )(check)
