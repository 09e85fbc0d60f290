"""The operator end to end, in this test's event loop: Kopf against a kmock Kubernetes
emulator, reconciling into a real HTTP app (uvicorn on 127.0.0.1) that serves the services'
by-key endpoints, checks the bearer token with the platform's own TokenService and records
every request. That app is the wire contract the tax and discount services must honour.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jsonpatch
import kmock
import kopf
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from kmock._internal import parsing as kmock_parsing

from billing_common.auth import AuthError, TokenService
from billing_operator.config import GROUP, VERSION, OperatorConfig
from billing_operator.handlers import Reconciler, build_registry, operator_settings

T = TypeVar("T")
SIGNING_KEY = "operator-test-signing-key-0123456789abcdef"
TAX = f"{GROUP}/{VERSION}/taxrules"
DISCOUNT = f"{GROUP}/{VERSION}/discountpolicies"
NAMESPACES = "v1/namespaces"
TENANT_LABEL = f"{GROUP}/tenant"

# --- the services' side: by-key endpoints that record what they receive -----------------


@dataclass
class Received:
    method: str
    path: str
    key: str
    tenant: str
    scopes: frozenset[str]
    subject: str
    body: dict[str, Any] | None


@dataclass
class FakeServices:
    """What the operator talks to. `script[key]` lists statuses to answer before behaving."""

    tokens: TokenService = field(
        default_factory=lambda: TokenService(
            SIGNING_KEY, issuer="billing-platform", audience="billing-api"
        )
    )
    received: list[Received] = field(default_factory=list)
    stored: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    script: dict[str, list[int]] = field(default_factory=dict)

    def calls(self, method: str, key: str) -> list[Received]:
        return [r for r in self.received if r.method == method and r.key == key]

    def app(self) -> FastAPI:
        app = FastAPI()

        async def handle(kind: str, scope: str, key: str, request: Request) -> Response:
            header = request.headers.get("authorization", "")
            try:
                principal = self.tokens.verify(header.removeprefix("Bearer "))
            except AuthError as exc:
                return JSONResponse({"title": "Unauthorized", "detail": str(exc)}, 401)
            body = await request.json() if request.method == "PUT" else None
            needed = scope.replace(":admin", ":read") if request.method == "GET" else scope
            self.received.append(
                Received(
                    request.method,
                    request.url.path,
                    key,
                    principal.tenant,
                    principal.scopes,
                    principal.subject,
                    body,
                )
            )
            if needed not in principal.scopes:
                return JSONResponse({"title": "Forbidden"}, 403)
            pending = self.script.get(key)
            if pending:
                status = pending.pop(0)
                problem = {
                    "type": "/problems/validation",
                    "title": "Unprocessable request" if status == 422 else "Unavailable",
                    "status": status,
                    "detail": "rate: must not exceed the jurisdiction's maximum"
                    if status == 422
                    else "restarting",
                }
                return JSONResponse(problem, status, media_type="application/problem+json")
            record = (kind, principal.tenant, key)
            if request.method == "GET":
                if record not in self.stored:
                    return JSONResponse({"title": "Not Found"}, 404)
                return JSONResponse({"key": key, **self.stored[record]})
            if request.method == "DELETE":
                if self.stored.pop(record, None) is None:
                    return JSONResponse({"title": "Not Found"}, 404)
                return Response(status_code=204)
            created = record not in self.stored
            assert body is not None
            self.stored[record] = body
            return JSONResponse({"key": key, **body}, 201 if created else 200)

        @app.api_route("/v1/tax/rules/by-key/{key}", methods=["GET", "PUT", "DELETE"])
        async def tax_rule(key: str, request: Request) -> Response:
            return await handle("tax", "tax:admin", key, request)

        @app.api_route("/v1/discounts/policies/{key}", methods=["GET", "PUT", "DELETE"])
        async def discount_policy(key: str, request: Request) -> Response:
            return await handle("discount", "discount:admin", key, request)

        return app


class ServerThread:
    """An event loop in a thread for the servers the operator talks to (kmock, uvicorn).

    Kopf, when stopped, waits for every task created in its loop after it started, and the
    servers' per-connection tasks (a watch stream waiting for events, above all) would hold
    it for its 5-second grace period on every test. In their own loop they cannot."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def run(self, coro: Awaitable[T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def enter(
        self, stack: contextlib.AsyncExitStack, cm: contextlib.AbstractAsyncContextManager[T]
    ) -> T:
        return await self.run(stack.enter_async_context(cm))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@contextlib.asynccontextmanager
async def serve(app: FastAPI, lifespan: str = "off") -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


# --- the cluster's side: kmock's emulator and the operator -----------------------------


@dataclass
class Cluster:
    emulator: VersioningEmulator
    url: str
    http: httpx.AsyncClient

    def obj(self, resource: str, namespace: str | None, name: str) -> Any:
        return self.emulator.objects[resource, namespace, name]

    async def create(self, path: str, body: dict[str, Any]) -> None:
        meta = body["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("resourceVersion", "1")  # Kopf's finalizer patch needs one
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", "2026-11-24T10:00:00Z")
        response = await self.http.post(path, json=body)
        assert response.status_code in (200, 201), response.text

    def namespace(self, name: str, tenant: str | None) -> None:
        # Stored directly (kmock cannot route a POST to the cluster-wide /api/v1/namespaces);
        # the operator lists it when it starts.
        labels = {TENANT_LABEL: tenant} if tenant else {}
        self.emulator.objects[NAMESPACES, None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels, "resourceVersion": "1", "uid": name},
        }

    async def relabel(self, namespace: str, tenant: str | None) -> None:
        """A namespace label change through the API, as `kubectl label` makes it."""
        await self.patch(
            f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {TENANT_LABEL: tenant}}}
        )

    def events(self, name: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        """The core v1 Events the operator posted (optionally about one object, one reason)."""
        found = [
            dict(obj.raw)
            for (resource, _, _), obj in self.emulator.objects.items()
            if resource.plural == "events" and resource.group == "" and not obj.deleted
        ]
        return [
            e
            for e in found
            if (name is None or e["involvedObject"]["name"] == name)
            and (reason is None or e["reason"] == reason)
        ]

    async def patch(self, path: str, body: dict[str, Any]) -> None:
        response = await self.http.patch(
            path, json=body, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status_code == 200, response.text

    async def delete(self, path: str) -> None:
        response = await self.http.delete(path)
        assert response.status_code in (200, 202), response.text


def _resource_info(kind: str, namespaced: bool, *extra: str) -> kmock.ResourceInfo:
    verbs = {"list", "watch", "get", "patch", "update", "create", "delete", *extra}
    subresources = {"status"} if kind in ("TaxRule", "DiscountPolicy") else set()
    return kmock.ResourceInfo(
        kind=kind, namespaced=namespaced, verbs=verbs, subresources=subresources
    )


class VersioningEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    """Three things an API server does and kmock 0.8 does not: every write gets a new
    resourceVersion (kmock keeps the one the client sent, and Kopf then waits out its
    consistency timeout after each patch of its own, expecting a newer version than the one
    it wrote); a JSON patch whose `test` fails is a 422 (kmock answers 500, which Kopf
    retries unchanged for a minute: its finalizer patches test the resourceVersion it last
    saw, so any write racing one held a deletion that long instead of being retried on the
    write's own event); and a create with `generateName` gets a unique name (Kopf's events
    are created so; kmock would store them all under the name None and refuse the second).

    JSON patches (Kopf's finalizer changes) keep the version: kmock's watch replays the
    objects Kopf has just listed, and a replayed body tested against a bumped version would
    conflict with no newer event to retry on (kmock's watch misses writes made while it
    replays), where an API server resumes the watch from the list's version instead.

    kmock keeps every request it served (`list(emulator)`): the RBAC test reads them."""

    _versions = itertools.count(2)
    # Another client's write (with its MODIFIED event) just before the next JSON patch of
    # the object at (namespace, name): the race a timer's status patch can win.
    write_before_json_patch: tuple[str, str] | None = None

    async def _handle(self, request: Any) -> Any:
        writes = (kmock.action.CREATE, kmock.action.UPDATE)
        is_write = request.resource is not None and request.action in writes
        if is_write and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(next(self._versions))
            if request.action == kmock.action.CREATE and not meta.get("name"):
                meta["name"] = f"{meta.get('generateName', '')}{meta['resourceVersion']}"
        if is_write and isinstance(request.data, list):
            await self._write_racing(request)
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc

    async def _write_racing(self, request: Any) -> None:
        if self.write_before_json_patch != (request.namespace, request.name):
            return
        self.write_before_json_patch = None
        obj = self.objects[request.resource, request.namespace, request.name]
        obj.patch({"metadata": {"annotations": {"example.dev/touched": "yes"}}})
        obj.patch({"metadata": {"resourceVersion": str(next(self._versions))}})
        await self._buses[request.resource].put({"type": "MODIFIED", "object": obj.raw})


def _parse_cluster_scoped_namespaces(original: Callable[[str], Any]) -> Callable[[str], Any]:
    """kmock 0.8 reads `/api/v1/namespaces[/<name>]` as "in namespace <name>" and fails on
    the bare list; Kubernetes means the cluster-scoped `namespaces` resource there."""

    def parse_path(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
            name = parts[3] if len(parts) == 4 else None
            return kmock_parsing.ParsedPath("", "v1", "namespaces", None, name, None)
        return original(path)

    return parse_path


@pytest.fixture
def servers() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


@contextlib.asynccontextmanager
async def _emulator() -> AsyncIterator[tuple[VersioningEmulator, str]]:
    async with VersioningEmulator() as emulator, kmock.Server(emulator) as server:
        emulator.resources[TAX] = _resource_info("TaxRule", True)
        emulator.resources[DISCOUNT] = _resource_info("DiscountPolicy", True)
        # Without these two, Kopf's namespace and resource observers never settle.
        emulator.resources[NAMESPACES] = _resource_info("Namespace", False)
        emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = _resource_info(
            "CustomResourceDefinition", False
        )
        emulator.resources["v1/events"] = _resource_info("Event", True)
        yield emulator, str(server.url).rstrip("/")


@pytest.fixture
async def cluster(monkeypatch: pytest.MonkeyPatch, servers: ServerThread) -> AsyncIterator[Cluster]:
    monkeypatch.setattr(
        kmock_parsing, "parse_path", _parse_cluster_scoped_namespaces(kmock_parsing.parse_path)
    )
    stack = contextlib.AsyncExitStack()  # entered and closed in the servers' loop
    try:
        emulator, url = await servers.enter(stack, _emulator())
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            yield Cluster(emulator, url, http)
    finally:
        await servers.run(stack.aclose())


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


Runner = Callable[..., contextlib.AbstractAsyncContextManager[None]]


@pytest.fixture
def operator(cluster: Cluster, services: FakeServices, servers: ServerThread) -> Runner:
    """`async with operator(): ...` runs the operator as a task of this test's loop."""

    @contextlib.asynccontextmanager
    async def run(
        default_tenant: str | None = None,
        urls: tuple[str, str] | None = None,
        drift_interval: float = 0,
        delete_max_retries: int = 8,
        namespaces: tuple[str, ...] = (),
    ) -> AsyncIterator[None]:
        stack = contextlib.AsyncExitStack()  # entered and closed in the servers' loop
        try:
            if urls is None:  # the recording app serves both
                base_url = await servers.enter(stack, serve(services.app()))
                urls = (base_url, base_url)
            config = OperatorConfig(
                tax_url=urls[0],
                discount_url=urls[1],
                jwt_signing_key=SIGNING_KEY,
                retry_base_seconds=0.2,
                retry_max_seconds=0.5,
                default_tenant=default_tenant,
                drift_interval_seconds=drift_interval,
                delete_max_retries=delete_max_retries,
                watch_namespaces=namespaces,
                liveness_endpoint=None,
            )

            def login(**_: Any) -> kopf.ConnectionInfo:
                return kopf.ConnectionInfo(server=cluster.url, insecure=True)

            stop: asyncio.Event = asyncio.Event()
            ready: asyncio.Event = asyncio.Event()
            task = asyncio.create_task(
                kopf.operator(
                    registry=build_registry(Reconciler(config), login=login),
                    settings=operator_settings(config),
                    clusterwide=not namespaces,
                    namespaces=namespaces,
                    standalone=True,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
            try:
                await asyncio.wait_for(ready.wait(), timeout=10)
                yield
            finally:
                stop.set()
                await asyncio.wait_for(task, timeout=15)
        finally:
            await servers.run(stack.aclose())

    return run


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll until `check()` returns something truthy without raising; fail with its last
    error (or its last falsy answer) otherwise. The wait is generous because Kopf's timers
    and retries run on the same two cores as the rest of the suite; a condition that holds
    is met in well under a second when the machine is idle."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
            last = result
        except (AssertionError, KeyError, IndexError, TypeError, ValueError) as exc:
            last = exc
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s: {last!r}")


def ready_condition(obj: Any) -> dict[str, Any]:
    (condition,) = [c for c in obj["status"]["conditions"] if c["type"] == "Ready"]
    return dict(condition)


def tax_rule(name: str, namespace: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TaxRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "displayName": "DE VAT standard",
            "jurisdiction": {"country": "DE"},
            "category": "standard",
            "rate": "0.19",
            "validFrom": "2007-01-01",
            **spec,
        },
    }


def tax_rules_path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/taxrules"
    return f"{base}/{name}" if name else base


# --- the tests ----------------------------------------------------------------------------


async def test_tax_rule_lifecycle_create_update_delete(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("demo", tenant="acme")
    async with operator():
        await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))

        put = (await eventually(lambda: services.calls("PUT", "demo.de-vat")))[0]
        assert put.path == "/v1/tax/rules/by-key/demo.de-vat"
        assert put.body == {
            "name": "DE VAT standard",
            "jurisdiction": {"country": "DE", "region": None},
            "category": "standard",
            "rate": "0.19",
            "compound": False,
            "priority": 0,
            "valid_from": "2007-01-01",
            "valid_to": None,
        }
        assert (put.tenant, put.scopes, put.subject) == (
            "acme",
            frozenset({"tax:admin"}),
            "billing-operator",
        )

        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "demo", "de-vat"))
                and ready_condition(o)["status"] == "True"
                and o
            )
        )
        condition = ready_condition(obj)
        assert condition["reason"] == "Reconciled"
        assert condition["observedGeneration"] == 1
        assert obj["status"]["observedGeneration"] == 1
        assert obj["status"]["tenant"] == "acme"
        assert obj["status"]["key"] == "demo.de-vat"
        assert f"{GROUP}/operator" in obj["metadata"]["finalizers"]
        assert services.stored[("tax", "acme", "demo.de-vat")]["rate"] == "0.19"

        # A spec change (the API server bumps the generation) is upserted again.
        await cluster.patch(
            tax_rules_path("demo", "de-vat"),
            {"metadata": {"generation": 2}, "spec": {"rate": "0.2"}},
        )
        # (Counting calls would be wrong: replayed events may upsert the same spec twice.)
        await eventually(
            lambda: services.calls("PUT", "demo.de-vat")[-1].body["rate"] == "0.2"  # type: ignore[index]
        )
        await eventually(
            lambda: cluster.obj(TAX, "demo", "de-vat")["status"]["observedGeneration"] == 2
        )
        assert services.stored[("tax", "acme", "demo.de-vat")]["rate"] == "0.2"

        # Deletion: the service loses the rule, then the finalizer goes and so does the object.
        await cluster.delete(tax_rules_path("demo", "de-vat"))
        delete = (await eventually(lambda: services.calls("DELETE", "demo.de-vat")))[0]
        assert delete.tenant == "acme"
        await eventually(lambda: cluster.obj(TAX, "demo", "de-vat").deleted)
        assert ("tax", "acme", "demo.de-vat") not in services.stored
        last_seen = cluster.obj(TAX, "demo", "de-vat").last
        assert f"{GROUP}/operator" not in (last_seen["metadata"].get("finalizers") or [])


async def test_discount_policy_body_scope_and_spec_tenant_that_repeats_the_namespace(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("shop", tenant="acme")
    async with operator():
        await cluster.create(
            f"/apis/{GROUP}/{VERSION}/namespaces/shop/discountpolicies",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "DiscountPolicy",
                "metadata": {"name": "volume", "namespace": "shop"},
                "spec": {
                    "tenant": "acme",  # may only repeat the namespace's tenant
                    "displayName": "Volume discount",
                    "kind": "threshold",
                    "currency": "EUR",
                    "tiers": [
                        {"minimum": "500.00", "discount": {"type": "percent", "rate": "0.05"}},
                        {
                            "minimum": "1000.00",
                            "discount": {"type": "fixed", "amount": "75.00", "currency": "EUR"},
                        },
                    ],
                    "priority": 10,
                    "exclusive": False,
                    "active": True,
                    "startsAt": "2026-01-01T00:00:00Z",
                },
            },
        )
        put = (await eventually(lambda: services.calls("PUT", "shop.volume")))[0]
        assert put.path == "/v1/discounts/policies/shop.volume"
        assert (put.tenant, put.scopes) == ("acme", frozenset({"discount:admin"}))
        assert put.body == {
            "name": "Volume discount",
            "kind": "threshold",
            "currency": "EUR",
            "tiers": [
                {"minimum": "500.00", "discount": {"type": "percent", "rate": "0.05"}},
                {
                    "minimum": "1000.00",
                    "discount": {"type": "fixed", "amount": "75.00", "currency": "EUR"},
                },
            ],
            "priority": 10,
            "exclusive": False,
            "active": True,
            "starts_at": "2026-01-01T00:00:00Z",
        }
        await eventually(
            lambda: ready_condition(cluster.obj(DISCOUNT, "shop", "volume"))["status"] == "True"
        )
        assert cluster.obj(DISCOUNT, "shop", "volume")["status"]["tenant"] == "acme"


async def test_unavailable_service_is_retried_until_it_answers(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("demo", tenant="acme")
    services.script["demo.flaky"] = [503, 503]
    async with operator():
        await cluster.create(tax_rules_path("demo"), tax_rule("flaky"))
        await eventually(
            lambda: ready_condition(cluster.obj(TAX, "demo", "flaky"))["status"] == "True"
        )
    # Two refusals, then the retry that succeeded (more only if an event was replayed).
    assert len(services.calls("PUT", "demo.flaky")) >= 3
    assert ("tax", "acme", "demo.flaky") in services.stored
    history = [v for v in cluster.obj(TAX, "demo", "flaky").history if v is not None]
    failures = [
        c
        for version in history
        for c in (version.get("status") or {}).get("conditions") or []
        if c["type"] == "Ready" and c["status"] == "False"
    ]
    assert failures, "the object showed Ready False while the service was down"
    assert {c["reason"] for c in failures} == {"ServiceUnavailable"}
    assert "restarting" in failures[0]["message"]


async def test_rejected_spec_fails_permanently_with_the_problem_in_status(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("demo", tenant="acme")
    services.script["demo.too-high"] = [422]
    async with operator():
        await cluster.create(tax_rules_path("demo"), tax_rule("too-high", rate="0.9"))
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "demo", "too-high"))
                and ready_condition(o)["reason"] == "Rejected"
                and o
            )
        )
        condition = ready_condition(obj)
        assert condition["status"] == "False"
        assert "must not exceed" in condition["message"]
        assert obj["status"]["problem"]["title"] == "Unprocessable request"
        assert obj["status"]["problem"]["status"] == 422
        attempts = len(services.calls("PUT", "demo.too-high"))
        await asyncio.sleep(1.0)  # several retry periods: a permanent failure is not retried
        assert len(services.calls("PUT", "demo.too-high")) == attempts
        assert ("tax", "acme", "demo.too-high") not in services.stored

        # Fixing the spec reconciles again and clears the problem.
        await cluster.patch(
            tax_rules_path("demo", "too-high"),
            {"metadata": {"generation": 2}, "spec": {"rate": "0.19"}},
        )
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "demo", "too-high"))
                and ready_condition(o)["status"] == "True"
                and o
            )
        )
        assert not obj["status"].get("problem")
        assert obj["status"]["observedGeneration"] == 2


async def test_replays_and_restarts_are_harmless(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    """The emulator replays ADDED on every watch and a restarted operator resumes every
    object: the service must end up with exactly the one rule, unchanged."""
    cluster.namespace("demo", tenant="acme")
    async with operator():
        await cluster.create(tax_rules_path("demo"), tax_rule("steady"))
        await eventually(
            lambda: ready_condition(cluster.obj(TAX, "demo", "steady"))["status"] == "True"
        )
    first = dict(services.stored)
    await eventually(lambda: cluster.events("steady", "Reconciled"))
    async with operator():
        await asyncio.sleep(1.0)
        assert ready_condition(cluster.obj(TAX, "demo", "steady"))["status"] == "True"
    assert services.stored == first
    # A resume that finds everything in place posts no event (one per resource per restart).
    assert len(cluster.events("steady", "Reconciled")) == 1
    assert all(call.method == "PUT" for call in services.received)
    assert {call.key for call in services.received} == {"demo.steady"}


async def test_missing_tenant_is_retried_until_the_namespace_is_labelled(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    """No tenant yet is a state of the namespace, not of the resource: retried (Kopf
    TemporaryError), so labelling the namespace later is enough."""
    cluster.namespace("orphan", tenant=None)
    async with operator():
        await cluster.create(tax_rules_path("orphan"), tax_rule("nobody", namespace="orphan"))
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "orphan", "nobody"))
                and ready_condition(o)["reason"] == "TenantMissing"
                and o
            )
        )
        assert "no tenant" in ready_condition(obj)["message"]
        (missing,) = await eventually(lambda: cluster.events("nobody", "TenantMissing"))
        assert missing["type"] == "Warning"
        assert services.received == []

        await cluster.relabel("orphan", "acme")
        await eventually(
            lambda: ready_condition(cluster.obj(TAX, "orphan", "nobody"))["status"] == "True"
        )
        assert ("tax", "acme", "orphan.nobody") in services.stored


async def test_never_applied_resource_is_deleted_without_calls(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("orphan", tenant=None)
    async with operator():
        await cluster.create(tax_rules_path("orphan"), tax_rule("nobody", namespace="orphan"))
        await eventually(
            lambda: (
                ready_condition(cluster.obj(TAX, "orphan", "nobody"))["reason"] == "TenantMissing"
            )
        )
        # Deleting it must not wait for a service that never had it.
        await cluster.delete(tax_rules_path("orphan", "nobody"))
        await eventually(lambda: cluster.obj(TAX, "orphan", "nobody").deleted)
    assert services.received == []


async def test_spec_tenant_naming_another_tenant_is_refused(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    """Whoever may create a TaxRule in a namespace of tenant acme must not reach globex:
    the operator mints no token for globex and says so in the status and an event."""
    cluster.namespace("shop", tenant="acme")
    async with operator():
        await cluster.create(
            tax_rules_path("shop"), tax_rule("sneaky", namespace="shop", tenant="globex")
        )
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "shop", "sneaky"))
                and ready_condition(o)["reason"] == "TenantRefused"
                and o
            )
        )
        condition = ready_condition(obj)
        assert condition["status"] == "False"
        assert "'globex' is not this namespace's tenant 'acme'" in condition["message"]
        (event,) = await eventually(lambda: cluster.events("sneaky", "TenantRefused"))
        assert event["type"] == "Warning"
        assert event["involvedObject"]["kind"] == "TaxRule"
        await asyncio.sleep(0.5)  # a few retry periods
    assert services.received == []
    assert not any(tenant == "globex" for _, tenant, _ in services.stored)


async def test_operator_default_tenant_applies_when_nothing_else_names_one(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("plain", tenant=None)
    async with operator(default_tenant="house"):
        await cluster.create(tax_rules_path("plain"), tax_rule("house-rule", namespace="plain"))
        put = (await eventually(lambda: services.calls("PUT", "plain.house-rule")))[0]
    assert put.tenant == "house"


# --- events, drift, relabels, deletion when the service is gone ---------------------------


def condition_of(obj: Any, type_: str) -> dict[str, Any]:
    (found,) = [c for c in obj["status"]["conditions"] if c["type"] == type_]
    return dict(found)


async def test_a_reconcile_a_failure_and_a_drift_each_post_an_event(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("demo", tenant="acme")
    services.script["demo.de-vat"] = [503]
    async with operator(drift_interval=0.3):
        await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))

        (failure,) = await eventually(lambda: cluster.events("de-vat", "ServiceUnavailable"))
        assert failure["type"] == "Warning"
        assert "restarting" in failure["message"]
        assert failure["involvedObject"] | {"uid": None} == {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaxRule",
            "name": "de-vat",
            "namespace": "demo",
            "uid": None,
        }
        assert failure["metadata"]["namespace"] == "demo"
        assert failure["source"]["component"] == "billing-operator"

        reconciled = await eventually(lambda: cluster.events("de-vat", "Reconciled"))
        assert reconciled[0]["type"] == "Normal"
        assert "created in the tax service for tenant acme" in reconciled[0]["message"]

        # Behind the operator's back: the rule is deleted in the service.
        del services.stored[("tax", "acme", "demo.de-vat")]
        (drift,) = await eventually(lambda: cluster.events("de-vat", "Drifted"))
        assert drift["type"] == "Warning"
        assert "deleted in the tax service" in drift["message"]
        await eventually(lambda: ("tax", "acme", "demo.de-vat") in services.stored)
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "demo", "de-vat"))
                and condition_of(o, "Drifted")["status"] == "True"
                and o
            )
        )
        assert condition_of(obj, "Drifted")["reason"] == "DeletedInService"
        assert ready_condition(obj)["status"] == "True"


async def test_drift_in_the_service_is_detected_and_repaired(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    """A rule changed behind the operator's back does not stay Ready=True unnoticed: the
    timer compares, re-applies, and says so; an unchanged rule costs one GET and no write."""
    cluster.namespace("demo", tenant="acme")
    record = ("tax", "acme", "demo.de-vat")
    async with operator(drift_interval=0.3):
        await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))
        await eventually(lambda: record in services.stored)
        await eventually(lambda: services.calls("GET", "demo.de-vat"))  # checked, in sync
        assert len(services.calls("PUT", "demo.de-vat")) == 1
        get = services.calls("GET", "demo.de-vat")[0]
        assert (get.tenant, get.scopes) == ("acme", frozenset({"tax:read"}))
        # The same value written differently is no drift.
        services.stored[record] = {**services.stored[record], "rate": "0.190"}
        checks = len(services.calls("GET", "demo.de-vat"))
        await eventually(lambda: len(services.calls("GET", "demo.de-vat")) > checks + 1)
        assert len(services.calls("PUT", "demo.de-vat")) == 1

        services.stored[record] = {**services.stored[record], "rate": "0.07"}
        await eventually(lambda: services.stored[record]["rate"] == "0.19")
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "demo", "de-vat"))
                and condition_of(o, "Drifted")["status"] == "True"
                and o
            )
        )
        drifted = condition_of(obj, "Drifted")
        assert drifted["reason"] == "ChangedInService"
        assert "(rate)" in drifted["message"]
        assert ready_condition(obj)["status"] == "True"
        await eventually(lambda: cluster.events("de-vat", "Drifted"))
        # The next quiet check says it is in sync again.
        await eventually(
            lambda: (
                condition_of(cluster.obj(TAX, "demo", "de-vat"), "Drifted")["reason"] == "InSync"
            )
        )


async def test_namespace_relabel_moves_its_resources_to_the_new_tenant(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("demo", tenant="acme")
    async with operator(drift_interval=0.3):
        await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))
        await eventually(lambda: ("tax", "acme", "demo.de-vat") in services.stored)

        await cluster.relabel("demo", "globex")
        await eventually(lambda: ("tax", "globex", "demo.de-vat") in services.stored)
        assert ("tax", "acme", "demo.de-vat") not in services.stored
        obj = await eventually(
            lambda: (
                (o := cluster.obj(TAX, "demo", "de-vat"))
                and o["status"]["tenant"] == "globex"
                and o
            )
        )
        assert condition_of(obj, "Drifted")["reason"] == "TenantChanged"
        deleted = services.calls("DELETE", "demo.de-vat")
        assert [d.tenant for d in deleted] == ["acme"]
        (event,) = await eventually(lambda: cluster.events("de-vat", "Drifted"))
        assert "tenant globex (was acme)" in event["message"]


async def test_delete_releases_the_finalizer_when_the_service_is_gone_for_good(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    cluster.namespace("demo", tenant="acme")
    async with operator(delete_max_retries=2):
        await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))
        await eventually(
            lambda: ready_condition(cluster.obj(TAX, "demo", "de-vat"))["status"] == "True"
        )
        services.script["demo.de-vat"] = [503] * 100  # never answers again
        await cluster.delete(tax_rules_path("demo", "de-vat"))
        await eventually(lambda: cluster.obj(TAX, "demo", "de-vat").deleted)
        (released,) = await eventually(lambda: cluster.events("de-vat", "FinalizerReleased"))
    assert released["type"] == "Warning"
    assert "after 3 attempts" in released["message"]
    assert "demo.de-vat may remain in tenant acme" in released["message"]
    assert len(services.calls("DELETE", "demo.de-vat")) == 3


# --- RBAC from measured requests -----------------------------------------------------------

CHART_RENDER = Path(__file__).resolve().parents[2] / "charts" / "tests" / "render_chart.py"
# Discovery, which every authenticated client may read (the system:discovery ClusterRole).
DISCOVERY = re.compile(r"^/(version|api|apis|api/v1|apis/[^/]+(/[^/]+)?)/?$")
Grant = tuple[str, str, str, str | None]  # verb, API group, resource[/subresource], namespace


def rbac_attributes(method: str, path: str, query: Mapping[str, str]) -> Grant | None:
    """What the API server's authorizer asks about a request (Kubernetes' RequestInfo rules),
    or None for a non-resource URL."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        verb = "watch" if query.get("watch") in ("1", "true") else "get" if name else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            "delete" if name else "deletecollection"
        )
    return verb, group, resource, namespace


def operator_requests(cluster: Cluster) -> set[Grant]:
    """Every request the operator made (Kopf's user agent; the test's own are left out),
    discovery apart, which must be all that is left."""
    measured: set[Grant] = set()
    for request in cluster.emulator:
        if not request.headers.get("User-Agent", "").startswith("kopf/"):
            continue
        attributes = rbac_attributes(request.method.value, request.url.path, request.params)
        if attributes is None:
            assert DISCOVERY.match(request.url.path), request.url.path
        else:
            measured.add(attributes)
    return measured


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart as Helm renders it (charts/tests/render_chart.py, a child process)."""
    rendered = subprocess.run(
        [sys.executable, str(CHART_RENDER)],
        input=json.dumps(values).encode(),
        capture_output=True,
        env={**os.environ, "HELM_DRIVER": "memory"},
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr.decode()[-3000:]
    return [o for o in yaml.safe_load_all(json.loads(rendered.stdout)["manifest"]) if o]


def operator_grants(objects: list[dict[str, Any]]) -> set[Grant]:
    """Every (verb, group, resource, namespace) the chart grants the operator's service
    account: a ClusterRole's rules in every namespace (None), a Role's in its own."""
    subject = {"kind": "ServiceAccount", "name": "billing-operator", "namespace": "billing"}
    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
        for o in objects
        if o["kind"] in ("ClusterRole", "Role")
    }
    grants: set[Grant] = set()
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if subject not in binding["subjects"]:
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            assert "resourceNames" not in rule and "*" not in rule["verbs"], rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        grants.add((verb, group, resource, namespace))
    return grants


def allowed(grants: set[Grant], request: Grant) -> bool:
    verb, group, resource, namespace = request
    return (verb, group, resource, None) in grants or (
        namespace is not None and (verb, group, resource, namespace) in grants
    )


async def exercise_every_path(cluster: Cluster, services: FakeServices) -> None:
    """What the operator does in its life: retry, reconcile, update, drift repair, a
    namespace relabel, events, deletion with finalizers."""
    services.script["demo.de-vat"] = [503]
    await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))
    await cluster.create(
        f"/apis/{GROUP}/{VERSION}/namespaces/demo/discountpolicies",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DiscountPolicy",
            "metadata": {"name": "premium", "namespace": "demo"},
            "spec": {
                "displayName": "Premium",
                "kind": "user_type",
                "customerType": "premium",
                "discount": {"type": "percent", "rate": "0.05"},
            },
        },
    )
    await eventually(
        lambda: ready_condition(cluster.obj(TAX, "demo", "de-vat"))["status"] == "True"
    )
    await cluster.patch(
        tax_rules_path("demo", "de-vat"), {"metadata": {"generation": 2}, "spec": {"rate": "0.2"}}
    )
    await eventually(
        lambda: cluster.obj(TAX, "demo", "de-vat")["status"]["observedGeneration"] == 2
    )
    del services.stored[("tax", "acme", "demo.de-vat")]
    await eventually(lambda: cluster.events("de-vat", "Drifted"))
    await cluster.relabel("demo", "globex")
    await eventually(lambda: ("discount", "globex", "demo.premium") in services.stored)
    await cluster.delete(tax_rules_path("demo", "de-vat"))
    await cluster.delete(f"/apis/{GROUP}/{VERSION}/namespaces/demo/discountpolicies/premium")
    await eventually(lambda: cluster.obj(TAX, "demo", "de-vat").deleted)
    await eventually(lambda: cluster.obj(DISCOUNT, "demo", "premium").deleted)
    await eventually(lambda: cluster.events("premium", "Deleted"))


@pytest.mark.parametrize(
    ("namespaces", "values"),
    [
        pytest.param((), {}, id="cluster-wide"),
        pytest.param(("demo",), {"operator": {"watchNamespaces": ["demo"]}}, id="namespaced"),
    ],
)
async def test_chart_rbac_grants_exactly_the_requests_the_operator_makes(
    cluster: Cluster,
    services: FakeServices,
    operator: Runner,
    namespaces: tuple[str, ...],
    values: dict[str, Any],
) -> None:
    """Sufficient: every request the operator made is granted by the chart's rules for its
    service account. Least privilege: every verb on every resource the rules grant was used.
    (The emulator authorizes nothing: the grant is computed from the rendered rules.)"""
    cluster.namespace("demo", tenant="acme")
    cluster.namespace("elsewhere", tenant="acme")
    # Meanwhile, in a thread: at its shutdown Kopf cancels every task of the loop that appeared
    # after it started (kopf._core.reactor.running.run_tasks), and asyncio's subprocess pipes
    # read in such tasks, so a render still running then (a loaded machine) was cancelled.
    rendering = asyncio.create_task(asyncio.to_thread(render_chart, values))
    async with operator(drift_interval=0.3, namespaces=namespaces):
        await exercise_every_path(cluster, services)
    measured = operator_requests(cluster)
    grants = operator_grants(await rendering)

    missing = {request for request in measured if not allowed(grants, request)}
    assert not missing, f"the operator makes requests the chart does not grant: {missing}"
    unused = {
        grant
        for grant in grants
        if not any(
            request[:3] == grant[:3] and grant[3] in (None, request[3]) for request in measured
        )
    }
    assert not unused, f"the chart grants what the operator never uses: {unused}"
    if namespaces:
        # Namespaced: writes only where it reconciles; cluster-wide only reads.
        assert {g for g in grants if g[3] is None and g[0] not in ("list", "watch")} == set()
        assert {g[3] for g in grants if g[1] == GROUP} == {"demo"}


# --- into the real services ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def real_services(tmp_path: Any) -> AsyncIterator[tuple[str, str, Any]]:
    """The tax and discount services' own apps (embedded runtime, SQLite) on local ports."""
    tax_bootstrap = pytest.importorskip("tax_service.bootstrap")
    discount_bootstrap = pytest.importorskip("discount_service.bootstrap")
    from billing_common.runtime import EmbeddedPlatform
    from billing_common.settings import ServiceSettings

    platform = EmbeddedPlatform()
    apps = []
    for name, bootstrap in (("tax", tax_bootstrap), ("discount", discount_bootstrap)):
        settings = ServiceSettings.for_service(
            name,
            runtime="embedded",
            database_url=f"sqlite+aiosqlite:///{tmp_path / name}.db",
            secrets_file=None,
            load_sample_data=False,
        )
        apps.append(bootstrap.create_app(settings, platform))
    await platform.bus.start()
    try:
        async with (
            serve(apps[0], lifespan="on") as tax_url,
            serve(apps[1], lifespan="on") as discount_url,
        ):
            yield tax_url, discount_url, apps[0]
    finally:
        await platform.bus.stop()


async def test_reconciles_into_the_real_tax_and_discount_services(
    cluster: Cluster,
    operator: Runner,
    servers: ServerThread,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TaxRule and DiscountPolicy created -> served by the services' own APIs -> Ready;
    deleted -> gone from the APIs -> finalizers released."""
    monkeypatch.setenv("JWT_SIGNING_KEY", SIGNING_KEY)  # the services' key, from the env
    cluster.namespace("demo", tenant="acme")
    stack = contextlib.AsyncExitStack()
    try:
        tax_url, discount_url, tax_app = await servers.enter(stack, real_services(tmp_path))
        token = tax_app.state.ctx.tokens.mint(
            subject="reader", tenant="acme", scopes={"tax:read", "discount:read"}
        )
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            operator(urls=(tax_url, discount_url), drift_interval=0.3),
            httpx.AsyncClient() as http,
        ):
            await cluster.create(
                tax_rules_path("demo"), tax_rule("de-vat", compound=False, priority=5)
            )
            await cluster.create(
                f"/apis/{GROUP}/{VERSION}/namespaces/demo/discountpolicies",
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "DiscountPolicy",
                    "metadata": {"name": "premium", "namespace": "demo"},
                    "spec": {
                        "displayName": "Premium customers 5%",
                        "kind": "user_type",
                        "customerType": "premium",
                        "discount": {"type": "percent", "rate": "0.05"},
                        "priority": 50,
                    },
                },
            )
            await eventually(
                lambda: ready_condition(cluster.obj(TAX, "demo", "de-vat"))["status"] == "True"
            )
            await eventually(
                lambda: (
                    ready_condition(cluster.obj(DISCOUNT, "demo", "premium"))["status"] == "True"
                )
            )

            rule = await http.get(f"{tax_url}/v1/tax/rules/by-key/demo.de-vat", headers=headers)
            assert rule.status_code == 200, rule.text
            assert rule.json() | {"id": None, "created_at": None, "updated_at": None} == {
                "id": None,
                "key": "demo.de-vat",
                "jurisdiction": {"country": "DE", "region": None},
                "category": "standard",
                "name": "DE VAT standard",
                "rate": "0.19",
                "valid_from": "2007-01-01",
                "valid_to": None,
                "zero_rated": False,
                "compound": False,
                "priority": 5,
                "supply": "services",
                "created_at": None,
                "updated_at": None,
            }
            policy = await http.get(
                f"{discount_url}/v1/discounts/policies/demo.premium", headers=headers
            )
            assert policy.status_code == 200, policy.text
            assert policy.json()["customer_type"] == "premium"
            assert policy.json()["discount"] == {"type": "percent", "rate": "0.05"}
            assert policy.json()["priority"] == 50

            # Changed behind the operator's back through the service's own API: repaired.
            admin = tax_app.state.ctx.tokens.mint(
                subject="someone", tenant="acme", scopes={"tax:admin"}
            )
            tampered = await http.put(
                f"{tax_url}/v1/tax/rules/by-key/demo.de-vat",
                headers={"Authorization": f"Bearer {admin}"},
                json={
                    k: rule.json()[k]
                    for k in ("name", "jurisdiction", "category", "compound", "priority")
                }
                | {"rate": "0.07", "valid_from": "2007-01-01"},
            )
            assert tampered.status_code == 200, tampered.text
            await eventually(
                lambda: (
                    condition_of(cluster.obj(TAX, "demo", "de-vat"), "Drifted")["reason"]
                    == "ChangedInService"
                )
            )
            repaired = await http.get(f"{tax_url}/v1/tax/rules/by-key/demo.de-vat", headers=headers)
            assert repaired.json()["rate"] == "0.19"
            # In sync with the real service's representation: no drift reported forever.
            await eventually(
                lambda: (
                    condition_of(cluster.obj(DISCOUNT, "demo", "premium"), "Ready")["status"]
                    == "True"
                )
            )
            await asyncio.sleep(1.0)
            assert not cluster.events("premium", "Drifted")

            # Another tenant sees nothing of it.
            other = tax_app.state.ctx.tokens.mint(
                subject="reader", tenant="globex", scopes={"tax:read"}
            )
            hidden = await http.get(
                f"{tax_url}/v1/tax/rules/by-key/demo.de-vat",
                headers={"Authorization": f"Bearer {other}"},
            )
            assert hidden.status_code == 404

            await cluster.delete(tax_rules_path("demo", "de-vat"))
            await cluster.delete(
                f"/apis/{GROUP}/{VERSION}/namespaces/demo/discountpolicies/premium"
            )
            await eventually(lambda: cluster.obj(TAX, "demo", "de-vat").deleted)
            await eventually(lambda: cluster.obj(DISCOUNT, "demo", "premium").deleted)
            gone = await http.get(f"{tax_url}/v1/tax/rules/by-key/demo.de-vat", headers=headers)
            assert gone.status_code == 404
            gone = await http.get(
                f"{discount_url}/v1/discounts/policies/demo.premium", headers=headers
            )
            assert gone.status_code == 404
    finally:
        await servers.run(stack.aclose())


async def test_deletion_completes_when_another_write_races_the_finalizer_patch(
    cluster: Cluster, services: FakeServices, operator: Runner
) -> None:
    """Kopf removes its finalizer with a JSON patch that tests the resourceVersion it last
    saw; a write in between (here another client's, in the suite a drift timer's status
    patch) makes the API server refuse it with 422, and Kopf retries on that write's event.
    Answered 500, as kmock does, the deletion waited out Kopf's retries: about a minute."""
    cluster.namespace("demo", tenant="acme")
    async with operator(drift_interval=0.3):
        await cluster.create(tax_rules_path("demo"), tax_rule("de-vat"))
        await eventually(
            lambda: ready_condition(cluster.obj(TAX, "demo", "de-vat"))["status"] == "True"
        )
        cluster.emulator.write_before_json_patch = ("demo", "de-vat")
        await cluster.delete(tax_rules_path("demo", "de-vat"))
        await eventually(lambda: cluster.obj(TAX, "demo", "de-vat").deleted)
        assert cluster.emulator.write_before_json_patch is None  # the race did happen
        assert services.calls("DELETE", "demo.de-vat")
