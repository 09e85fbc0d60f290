"""Render the billing chart with Helm's own Go library (helm-sdkpy) against a kmock emulator.

A script, not a module to import: Helm's Go runtime reads HELM_DRIVER from the environment
the process was *started* with (setting os.environ later has no effect), so the chart tests
run this file as a child process with HELM_DRIVER=memory.

    HELM_DRIVER=memory python charts/tests/render_chart.py [--lint] < values.json

prints JSON: {"manifest": "...", "hooks": [{"name", "kind", "events", "manifest"}], "lint": ...}

    HELM_DRIVER=memory python charts/tests/render_chart.py --steps < steps.json

runs several Helm actions against ONE emulator, the way a cluster sees them one after the
other: steps.json is a list of {"action": "install" | "uninstall", "release", "namespace",
"values"}; prints a list of {"action", "release", "namespace", "manifest", "hooks", "error",
"secrets", "objects"}: `secrets` is every Secret in the emulator after the step
(namespace/name: decoded data), `objects` every object (plural/namespace/name), so a test
sees what survives an uninstall.

What the emulator adds to kmock's KubernetesEmulator, each because Helm needs it:
- discovery of the core group says `groupVersion: v1` (kmock says `/v1`, which client-go
  cannot map to a kind);
- `/version` reports a Kubernetes release the chart's kubeVersion accepts;
- lists carry `kind`/`apiVersion` (client-go's decoder and Helm's status watcher need them);
- `/openapi/v3` announces server-side field validation, so Helm does not try to download
  the OpenAPI v2 document for client-side validation of hook manifests;
- Jobs become Complete as soon as they are created: Helm waits for hook Jobs;
- a Secret's `stringData` is merged into `data` (base64), as the API server does, so
  Helm's `lookup` finds the values the chart wrote;
- errors carry the reasons client-go tests for (`AlreadyExists`, `NotFound`): Helm skips a
  CRD that exists and adopts a kept object only when it can tell those cases apart.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[1] / "billing"
NAMESPACE = "billing"
RELEASE = "billing"

# Every kind the chart may create: (group/version/plural, kind, namespaced).
RESOURCES = [
    ("v1/secrets", "Secret", True),
    ("v1/configmaps", "ConfigMap", True),
    ("v1/services", "Service", True),
    ("v1/serviceaccounts", "ServiceAccount", True),
    ("v1/namespaces", "Namespace", False),
    ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget", True),
    ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler", True),
    ("networking.k8s.io/v1/networkpolicies", "NetworkPolicy", True),
    ("v1/pods", "Pod", True),
    ("apps/v1/deployments", "Deployment", True),
    ("apps/v1/statefulsets", "StatefulSet", True),
    ("batch/v1/jobs", "Job", True),
    ("networking.k8s.io/v1/ingresses", "Ingress", True),
    ("rbac.authorization.k8s.io/v1/roles", "Role", True),
    ("rbac.authorization.k8s.io/v1/rolebindings", "RoleBinding", True),
    ("rbac.authorization.k8s.io/v1/clusterroles", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1/clusterrolebindings", "ClusterRoleBinding", False),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False),
    (
        "admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        False,
    ),
    (
        "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        False,
    ),
    ("dapr.io/v1alpha1/components", "Component", True),
    ("dapr.io/v1alpha1/configurations", "Configuration", True),
    ("dapr.io/v1alpha1/resiliencies", "Resiliency", True),
    ("billing.example.dev/v1alpha1/taxrules", "TaxRule", True),
    ("billing.example.dev/v1alpha1/discountpolicies", "DiscountPolicy", True),
]
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete"}


def _emulator_class() -> Any:
    import attrs
    import kmock
    from kmock._internal import k8s as kmock_k8s

    class HelmReadyEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
        async def _handle(self, request: Any) -> Any:
            # kmock keeps every request and matches each new one by scanning all earlier
            # ones, per reaction: quadratic, ~80 % of a chart test's CPU over Helm's
            # thousands of requests. Nothing here reads the history: keep the current one.
            del self._requests[:-1]
            return await super()._handle(request)

        async def _render_error(self, exc: Exception) -> Any:
            if isinstance(exc, kmock_k8s.KubernetesObjectConflictError):
                exc = attrs.evolve(exc, reason="AlreadyExists")
            elif isinstance(exc, kmock_k8s.KubernetesNotFoundError):
                exc = attrs.evolve(exc, reason="NotFound")
            return await super()._render_error(exc)

        async def _serve_version(self, request: Any) -> Any:
            payload = await super()._serve_version(request)
            if payload.get("groupVersion") == "/v1":
                payload["groupVersion"] = "v1"
            return payload

        async def _serve_server_version(self, request: Any) -> Any:
            payload = await super()._serve_server_version(request)
            payload.update(major="1", minor="31", gitVersion="v1.31.0")
            return payload

        async def _serve_list(self, request: Any) -> Any:
            payload = await super()._serve_list(request)
            resource = request.resource
            for path, kind, _ in RESOURCES:
                group_version, plural = path.rsplit("/", 1)
                group = group_version.rsplit("/", 1)[0] if "/" in group_version else ""
                if (resource.group, resource.plural) == (group, plural):
                    payload["kind"] = f"{kind}List"
                    payload["apiVersion"] = group_version
            return payload

    return HelmReadyEmulator


def _group_version_path(path: str) -> str:
    group_version = path.rsplit("/", 1)[0]
    return f"api/{group_version}" if "/" not in group_version else f"apis/{group_version}"


def _install_openapi(emulator: Any) -> None:
    async def root(request: Any) -> dict[str, Any]:
        paths = {_group_version_path(p): {} for p, _, _ in RESOURCES}
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=0"} for gv in paths}}

    async def group_version(request: Any) -> dict[str, Any]:
        wanted = request.url.path.removeprefix("/openapi/v3/")
        paths: dict[str, Any] = {}
        for path, kind, namespaced in RESOURCES:
            if _group_version_path(path) != wanted:
                continue
            group_version_text, plural = path.rsplit("/", 1)
            group, _, version = group_version_text.rpartition("/")
            scope = "/namespaces/{namespace}" if namespaced else ""
            paths[f"/{wanted}{scope}/{plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {
                        "group": group,
                        "version": version,
                        "kind": kind,
                    },
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.31.0"},
            "paths": paths,
        }

    emulator["get", re.compile(r"/openapi/v3")] << root
    emulator["get", re.compile(r"/openapi/v3/.+")] << group_version


async def _complete_jobs(emulator: Any) -> None:
    """Mark every Job Complete: hooks wait for their Jobs, and nothing runs them here."""
    done: set[Any] = set()
    while True:
        for key, obj in list(emulator.objects.items()):
            resource, _, _ = key
            if resource.plural != "jobs" or key in done or obj.deleted:
                continue
            obj.patch(
                {
                    "status": {
                        "succeeded": 1,
                        "conditions": [
                            {"type": "SuccessCriteriaMet", "status": "True"},
                            {"type": "Complete", "status": "True"},
                        ],
                    }
                }
            )
            done.add(key)
        await asyncio.sleep(0.05)


def _kubeconfig(server: str, namespace: str = NAMESPACE) -> str:
    import yaml

    # YAML, not JSON: helm-sdkpy tells a kubeconfig text from a file path by its YAML keys.
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": server}}],
            "users": [{"name": "tester", "user": {"token": "emulator"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
    )


class _Cluster:
    """One kmock emulator that Helm sees as a cluster, for as many actions as a test needs."""

    def __init__(self) -> None:
        import kmock

        self.emulator = _emulator_class()()
        self.server = kmock.Server(self.emulator)
        self._configs: dict[str, Any] = {}

    async def __aenter__(self) -> _Cluster:
        import kmock

        await self.emulator.__aenter__()
        await self.server.__aenter__()
        for path, kind, namespaced in RESOURCES:
            self.emulator.resources[path] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=VERBS, subresources={"status"}
            )
        _install_openapi(self.emulator)
        self._completer = asyncio.create_task(_complete_jobs(self.emulator))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._completer.cancel()
        await self.server.__aexit__(*exc)
        await self.emulator.__aexit__(*exc)

    def config(self, namespace: str) -> Any:
        """One Configuration per namespace for the whole run: the memory driver keeps the
        release records in it, and uninstall must find what install recorded."""
        import helm_sdkpy

        if namespace not in self._configs:
            url = str(self.server.url).rstrip("/")
            self._configs[namespace] = helm_sdkpy.Configuration(
                namespace=namespace, kubeconfig=_kubeconfig(url, namespace)
            )
        return self._configs[namespace]

    def store_secrets(self) -> None:
        """What the API server does on every write of a Secret: stringData into data."""
        for key, obj in list(self.emulator.objects.items()):
            if key[0].plural != "secrets" or obj.deleted or "stringData" not in obj:
                continue
            data = dict(obj.get("data") or {})
            for name, value in dict(obj["stringData"] or {}).items():
                data[name] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
            del obj["stringData"]

    def object_names(self) -> list[str]:
        """plural/namespace/name of every object the emulator holds."""
        return sorted(
            f"{resource.plural}/{namespace or ''}/{name}"
            for (resource, namespace, name), obj in list(self.emulator.objects.items())
            if not obj.deleted
        )

    def secrets(self) -> dict[str, dict[str, str]]:
        self.store_secrets()
        found: dict[str, dict[str, str]] = {}
        for (resource, namespace, name), obj in list(self.emulator.objects.items()):
            if resource.plural != "secrets" or obj.deleted or name.startswith("sh.helm."):
                continue
            data = dict(obj.get("data") or {})
            found[f"{namespace}/{name}"] = {
                k: base64.b64decode(v).decode() for k, v in data.items()
            }
        return found


async def _render(values: dict[str, Any], lint: bool) -> dict[str, Any]:
    import helm_sdkpy

    async with _Cluster() as cluster:
        config = cluster.config(NAMESPACE)
        release = await helm_sdkpy.Install(config).run(
            RELEASE, str(CHART), values=values or None, wait=False, timeout=60
        )
        linted = await helm_sdkpy.Lint(config).run(str(CHART)) if lint else None
    return {"manifest": release.get("manifest", ""), "hooks": release.get("hooks"), "lint": linted}


async def _run_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import helm_sdkpy

    results: list[dict[str, Any]] = []
    async with _Cluster() as cluster:
        for step in steps:
            release_name = step.get("release", RELEASE)
            namespace = step.get("namespace", NAMESPACE)
            config = cluster.config(namespace)
            outcome: dict[str, Any] = {
                "action": step["action"],
                "release": release_name,
                "namespace": namespace,
                "manifest": "",
                "hooks": [],
                "error": None,
            }
            cluster.store_secrets()
            try:
                if step["action"] == "install":
                    release = await helm_sdkpy.Install(config).run(
                        release_name,
                        str(CHART),
                        values=step.get("values") or None,
                        wait=False,
                        timeout=60,
                    )
                    outcome["manifest"] = release.get("manifest", "")
                    outcome["hooks"] = release.get("hooks") or []
                elif step["action"] == "uninstall":
                    await helm_sdkpy.Uninstall(config).run(release_name, wait=False, timeout=60)
                else:
                    raise ValueError(f"unknown action {step['action']!r}")
            except helm_sdkpy.HelmError as error:
                outcome["error"] = str(error)
            outcome["secrets"] = cluster.secrets()
            outcome["objects"] = cluster.object_names()
            results.append(outcome)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lint", action="store_true")
    parser.add_argument("--steps", action="store_true", help="stdin is a list of actions")
    args = parser.parse_args()
    if os.environ.get("HELM_DRIVER") != "memory":
        sys.exit("run with HELM_DRIVER=memory in the environment")
    data = json.loads(sys.stdin.read() or "{}")
    result: Any = asyncio.run(_run_steps(data) if args.steps else _render(data, args.lint))
    sys.stdout.write(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
