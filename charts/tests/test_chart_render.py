"""The billing chart as Helm renders it: `helm install` through Helm's own Go library
(helm-sdkpy) against a kmock Kubernetes emulator, with the default values and with a
non-default set. Every built-in object is validated against the official Kubernetes schemas
(kubernetes-validate, strict); the Dapr resources against schemas of our own with the
component field names Dapr documents. A real cluster still has to run what this renders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

HERE = Path(__file__).resolve().parent
RENDER = HERE / "render_chart.py"
K8S_VERSIONS = ["1.30.0", "1.33.0"]
SERVICES = {"tax": 8001, "discount": 8002, "invoice": 8003, "payment": 8004}
APP_SECRETS = {
    "jwt-signing-key",
    "webhook-secret-sandbox",
    "webhook-secret-stripe",
    "stripe-api-key",
}
DAPR_KINDS = {"Component", "Configuration", "Resiliency"}

# --- rendering ------------------------------------------------------------------------------


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys: the API server's strict decoding does too,
    and PyYAML would silently keep the last one."""


def _mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    keys = [loader.construct_object(key, deep=deep) for key, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {duplicates}", node.start_mark
        )
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


class Rendered:
    def __init__(self, result: dict[str, Any]) -> None:
        self.lint = result.get("lint")
        self.hooks: list[dict[str, Any]] = result.get("hooks") or []
        self.objects: list[dict[str, Any]] = [
            doc for doc in yaml.load_all(result["manifest"], Loader=UniqueKeyLoader) if doc
        ]
        self.hook_objects: list[dict[str, Any]] = [
            doc
            for hook in self.hooks
            for doc in yaml.load_all(hook["manifest"], Loader=UniqueKeyLoader)
            if doc
        ]

    @property
    def everything(self) -> list[dict[str, Any]]:
        return self.objects + self.hook_objects

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.everything if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        return found

    def names(self, kind: str) -> set[str]:
        return {o["metadata"]["name"] for o in self.of_kind(kind)}


def render(values: dict[str, Any], *, lint: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(RENDER), *(["--lint"] if lint else [])]
    return subprocess.run(
        command,
        input=json.dumps(values),
        capture_output=True,
        text=True,
        env={**os.environ, "HELM_DRIVER": "memory"},
        timeout=120,
        check=False,
    )


def rendered(values: dict[str, Any], *, lint: bool = False) -> Rendered:
    done = render(values, lint=lint)
    assert done.returncode == 0, done.stderr[-4000:]
    return Rendered(json.loads(done.stdout))


NON_DEFAULT: dict[str, Any] = {
    "fullnameOverride": "acme-billing",
    "image": {"registry": "localhost:5001", "tag": "1.2.3"},
    "common": {"logLevel": "DEBUG", "extraEnv": {"FEATURE_X": "on"}},
    "services": {
        "tax": {"replicas": 3, "env": {"INVOKE_TIMEOUT_SECONDS": 2}},
        "payment": {"enabled": False},
    },
    "dapr": {
        "tracing": {"zipkinEndpoint": "http://zipkin.observability:9411/api/v2/spans"},
        "controlPlane": {"manage": True},
        "accessControl": {"enabled": False},
    },
    "database": {"existingSecret": "ext-db"},
    "messaging": {"connectionString": "amqps://billing:secret@mq.example.test:5671/billing"},
    "postgresql": {"enabled": False},
    "rabbitmq": {"enabled": False},
    "secrets": {"create": False},
    "ingress": {
        "host": "billing.example.test",
        "annotations": {"traefik.ingress.kubernetes.io/router.entrypoints": "websecure"},
        "tls": [{"secretName": "billing-tls", "hosts": ["billing.example.test"]}],
    },
    "operator": {"useDapr": False, "watchNamespaces": ["billing-demo"], "defaultTenant": "demo"},
}


@pytest.fixture(scope="module")
def default() -> Rendered:
    return rendered({}, lint=True)


@pytest.fixture(scope="module")
def custom() -> Rendered:
    return rendered(NON_DEFAULT)


@pytest.fixture(scope="module", params=["default", "custom"])
def any_render(request: pytest.FixtureRequest) -> Rendered:
    result: Rendered = request.getfixturevalue(request.param)
    return result


# --- generic checks -----------------------------------------------------------------------


def test_helm_lint_finds_no_error(default: Rendered) -> None:
    assert default.lint is not None
    assert default.lint["TotalChartsLinted"] == 1
    # Severity: 1 info, 2 warning, 3 error (Helm's lint support.Severity).
    serious = [m for m in default.lint["Messages"] if m["Severity"] >= 2]
    assert serious == [], serious


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_kubernetes_object_is_valid(any_render: Rendered, version: str) -> None:
    builtin = [o for o in any_render.everything if o["kind"] not in DAPR_KINDS]
    assert len(builtin) > 10
    for obj in builtin:
        kubernetes_validate.validate(obj, version, strict=True)


def test_crds_ship_in_the_crds_directory() -> None:
    crds = sorted(p.name for p in (HERE.parent / "billing" / "crds").glob("*.yaml"))
    assert crds == [
        "discountpolicies.billing.example.dev.yaml",
        "taxrules.billing.example.dev.yaml",
    ]


def test_every_object_carries_the_release_labels(any_render: Rendered) -> None:
    for obj in any_render.everything:
        if obj["metadata"].get("namespace") == "dapr-system":
            continue
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "billing", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


# --- the four services --------------------------------------------------------------------


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(("service", "port"), SERVICES.items())
def test_service_deployment(default: Rendered, service: str, port: int) -> None:
    """Cross-references within one service's objects and with the launcher: the names, ports
    and labels that must agree for the pod to start and be reached."""
    from billing_common.settings import DEFAULT_PORTS

    deployment = default.get("Deployment", f"billing-{service}")
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    container = _container(deployment)
    assert port == DEFAULT_PORTS[service], "the chart's port is the launcher's"
    # daprd calls the port the app listens on, under the app id the others invoke.
    assert annotations["dapr.io/app-id"] == service
    assert annotations["dapr.io/app-port"] == str(container["ports"][0]["containerPort"])
    assert container["command"][-2:] == ["--port", str(port)]
    assert container["command"][:5] == ["python", "-m", "billing_launcher", "serve", service]
    assert annotations["dapr.io/config"] in default.names("Configuration")
    assert annotations["dapr.io/config"] == f"billing-dapr-{service}"  # the app's own
    assert (
        annotations["dapr.io/app-health-check-path"] == container["startupProbe"]["httpGet"]["path"]
    )
    env = _env(container)
    assert env["DATABASE_URL"]["secretKeyRef"]["key"] == service
    assert env["DATABASE_URL"]["secretKeyRef"]["name"] in default.names("Secret")
    assert env["DAPR_PUBSUB_NAME"] in default.names("Component")
    assert env["DAPR_STATE_STORE"] in default.names("Component")
    assert env["DAPR_SECRET_STORE"] in default.names("Component")
    # A read-only root filesystem needs the scratch volume the app writes to.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert env["DATA_DIR"].startswith("/tmp/")
    (tmp,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tmp"]
    assert "emptyDir" in tmp and {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["spec"]["serviceAccountName"] in default.names("ServiceAccount")

    svc = default.get("Service", f"billing-{service}")
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


def _public_paths(service: str) -> set[str]:
    """Every path of the service's own FastAPI app (its OpenAPI document, which FastAPI
    builds from the routes) that a client outside the cluster calls: all but the probes,
    metrics and Dapr's delivery routes."""
    from billing_common.settings import ServiceSettings
    from billing_launcher.registry import app_factory

    app = app_factory(service)(ServiceSettings.for_service(service), None)
    internal = ("/healthz", "/readyz", "/metrics", "/dapr/", "/events/")
    return {path for path in app.openapi()["paths"] if not path.startswith(internal)}


def _routed_to(paths: dict[str, str], path: str) -> str | None:
    """The backend of the longest Ingress Prefix match (element-wise, as the Ingress spec
    defines Prefix), or None."""
    segments = path.strip("/").split("/")
    best: tuple[int, str] | None = None
    for prefix, backend in paths.items():
        parts = prefix.strip("/").split("/")
        if segments[: len(parts)] == parts and (best is None or len(parts) > best[0]):
            best = (len(parts), backend)
    return best[1] if best else None


def test_every_public_route_of_every_service_is_routed_by_the_ingress(default: Rendered) -> None:
    (ingress,) = default.of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule
    assert {p["pathType"] for p in rule["http"]["paths"]} == {"Prefix"}
    paths = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert set(paths.values()) <= default.names("Service")
    served: set[str] = set()
    unrouted = []
    for service in SERVICES:
        public = _public_paths(service)
        assert public, service
        served |= public
        unrouted += [
            (path, _routed_to(paths, path))
            for path in sorted(public)
            if _routed_to(paths, path) != f"billing-{service}"
        ]
    assert unrouted == []
    # And no prefix routes to nothing.
    for prefix in paths:
        assert any(_routed_to({prefix: "x"}, path) for path in served), prefix


def test_ingress_class_is_the_one_make_kind_up_installs(default: Rendered) -> None:
    """The chart's ingressClassName, the controller `make kind-up` installs (pinned chart
    version) with its values file, the kind node it runs on and the namespace the
    NetworkPolicies admit all name the same things."""
    root = HERE.parents[1]
    traefik = yaml.safe_load((root / "kind-traefik-values.yaml").read_text())
    (ingress,) = default.of_kind("Ingress")
    assert traefik["ingressClass"]["name"] == ingress["spec"]["ingressClassName"] == "traefik"
    makefile = (root / "Makefile").read_text()
    (version,) = re.findall(r"^TRAEFIK_CHART_VERSION \?= (\S+)$", makefile, re.M)
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version)
    kind_up = makefile[makefile.index("kind-up:") : makefile.index("kind-down:")]
    assert "--version $(TRAEFIK_CHART_VERSION)" in kind_up
    assert "-f kind-traefik-values.yaml" in kind_up
    assert "ingress-nginx" not in kind_up
    kind = yaml.safe_load((root / "kind-config.yaml").read_text())
    control_plane = kind["nodes"][0]
    assert traefik["nodeSelector"].items() <= control_plane["labels"].items()
    mapped = {m["containerPort"] for m in control_plane["extraPortMappings"]}
    assert {traefik["ports"][p]["hostPort"] for p in ("web", "websecure")} == mapped
    (namespace,) = re.findall(r"--namespace (\S+)", kind_up)
    for service in SERVICES:
        policy = default.get("NetworkPolicy", f"billing-{service}")
        first = policy["spec"]["ingress"][0]["from"]
        assert first == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        ]


# --- start-up order, migrations, probes ----------------------------------------------------


def test_migrations_run_before_the_app_and_no_hook_waits_for_pods(default: Rendered) -> None:
    """`helm install --wait` waits for the pods before post-install hooks run; pods that need
    a migrated schema would wait forever for a post-install migration. Here the schema is
    brought to head by an init container of each pod, after the servers answer."""
    assert not any("post-install" in h["events"] for h in default.hooks)
    assert default.of_kind("Job") == []
    for service in SERVICES:
        pod = default.get("Deployment", f"billing-{service}")["spec"]["template"]["spec"]
        wait, migrate = pod["initContainers"]
        assert wait["command"][:4] == ["python", "-m", "billing_launcher", "wait-for"]
        assert {"DATABASE_URL", "AMQP_URL"} <= set(wait["command"])
        assert migrate["command"] == ["python", "-m", "billing_launcher", "migrate", service]
        (app,) = pod["containers"]
        for init in (wait, migrate):
            assert _env(init)["DATABASE_URL"] == _env(app)["DATABASE_URL"]
            assert init["image"] == app["image"]
        assert _env(wait)["AMQP_URL"] == {
            "secretKeyRef": {"name": "billing-messaging", "key": "connection-string"}
        }
        # With Dapr only the sidecar talks to the broker: the app gets no broker password.
        assert "AMQP_URL" not in _env(app) and "AMQP_URL" not in _env(migrate)
        assert _env(app)["MIGRATE_ON_START"] == "false"
    # The database Secret the init containers read exists before any pod: a pre-install hook.
    (secret_hook,) = [h for h in default.hooks if h["kind"] == "Secret"]
    assert secret_hook["name"] == "billing-database"
    assert set(secret_hook["events"]) == {"pre-install", "pre-upgrade"}


def test_wait_for_understands_the_urls_the_chart_writes(default: Rendered) -> None:
    from billing_launcher.wait_for import address_of

    database = default.get("Secret", "billing-database")["stringData"]
    for service in SERVICES:
        assert address_of(database[service]) == ("billing-postgresql", 5432)
    messaging = default.get("Secret", "billing-messaging")["stringData"]
    assert address_of(messaging["connection-string"]) == ("billing-rabbitmq", 5672)
    assert address_of("amqps://u:p@mq.example.test/billing") == ("mq.example.test", 5671)
    with pytest.raises(ValueError):
        address_of("http://example.test/")


def test_probes_and_shutdown_timings_agree(default: Rendered) -> None:
    """A slow first start is not killed: liveness and readiness wait for the startup probe,
    whose budget exceeds the app's wait for its sidecar. Termination: preStop, then the
    drain, all within the grace period."""
    for service in SERVICES:
        deployment = default.get("Deployment", f"billing-{service}")
        pod = deployment["spec"]["template"]
        container = _container(deployment)
        startup = container["startupProbe"]
        assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        sidecar_wait = int(_env(container)["DAPR_HEALTH_TIMEOUT"])
        assert budget > sidecar_wait + startup["timeoutSeconds"]
        sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        drain = int(pod["metadata"]["annotations"]["dapr.io/graceful-shutdown-seconds"])
        assert sleep > 0
        assert pod["spec"]["terminationGracePeriodSeconds"] > sleep + drain


def test_database_urls_point_at_the_bundled_server(default: Rendered) -> None:
    secret = default.get("Secret", "billing-database")
    data = secret["stringData"]
    for service in SERVICES:
        assert data[service].startswith("postgresql+asyncpg://billing:")
        assert data[service].endswith(f"@billing-postgresql:5432/billing_{service}")
    assert data["dapr-state"].endswith("@billing-postgresql:5432/billing_dapr?sslmode=disable")
    password = data["postgres-password"]
    assert len(password) == 32 and f":{password}@" in data["tax"]
    init = default.get("ConfigMap", "billing-postgresql-init")["data"]["10-databases.sql"]
    for database in [*(f"billing_{s}" for s in SERVICES), "billing_dapr"]:
        assert f"CREATE DATABASE {database};" in init
    assert default.names("StatefulSet") == {"billing-postgresql", "billing-rabbitmq"}


def test_application_secrets_are_generated_and_kept(default: Rendered) -> None:
    for name in APP_SECRETS:
        secret = default.get("Secret", name)
        assert len(secret["stringData"][name]) == 48
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # Each service account reads only its own secrets (tax never stripe-api-key).
    readable: set[str] = set()
    for service in SERVICES:
        (rule,) = default.get("Role", f"billing-{service}-secret-reader")["rules"]
        assert rule["verbs"] == ["get"]
        readable |= set(rule["resourceNames"])
        binding = default.get("RoleBinding", f"billing-{service}-secret-reader")
        assert [s["name"] for s in binding["subjects"]] == [f"billing-{service}"]
        if service != "payment":
            assert rule["resourceNames"] == ["jwt-signing-key"]
    assert readable == APP_SECRETS


# --- the operator -------------------------------------------------------------------------


def test_operator_deployment_and_rbac(default: Rendered) -> None:
    deployment = default.get("Deployment", "billing-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["dapr.io/app-id"] == "billing-operator"
    assert "dapr.io/app-port" not in annotations
    container = _container(deployment)
    env = _env(container)
    assert env["TAX_URL"] == "http://localhost:3500/v1.0/invoke/tax/method"
    assert env["DISCOUNT_URL"] == "http://localhost:3500/v1.0/invoke/discount/method"
    assert env["JWT_SIGNING_KEY"] == {
        "secretKeyRef": {"name": "jwt-signing-key", "key": "jwt-signing-key"}
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}

    # Cluster-scoped names carry the release namespace; the rules themselves are checked
    # against the operator's measured requests in operator/tests (test_chart_rbac_...).
    role = default.get("ClusterRole", "billing-operator-billing")

    def allowed(group: str, resource: str) -> set[str]:
        return {
            verb
            for rule in role["rules"]
            if group in rule["apiGroups"] and resource in rule["resources"]
            for verb in rule["verbs"]
        }

    for plural in ("taxrules", "discountpolicies"):
        assert {"list", "watch", "patch"} <= allowed("billing.example.dev", plural)
        assert "patch" in allowed("billing.example.dev", f"{plural}/status")
    assert "create" in allowed("", "events")
    assert {"list", "watch"} <= allowed("", "namespaces")
    assert {"list", "watch"} <= allowed("apiextensions.k8s.io", "customresourcedefinitions")
    binding = default.get("ClusterRoleBinding", "billing-operator-billing")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "billing-operator", "namespace": "billing"}
    ]


# --- Dapr resources -----------------------------------------------------------------------

_STR = {"type": "string"}
_DURATION = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}


def _metadata_items(names: set[str]) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"enum": sorted(names)},
                "value": _STR,  # always a string, even for numbers and booleans
                "secretKeyRef": {
                    "type": "object",
                    "required": ["name", "key"],
                    "additionalProperties": False,
                    "properties": {"name": _STR, "key": _STR},
                },
            },
            "oneOf": [{"required": ["value"]}, {"required": ["secretKeyRef"]}],
        },
    }


# Field names from the components' own metadata definitions (vendored with their upstream
# source in dapr_component_metadata.yaml; value checks in test_dapr_components_semantics).
COMPONENT_FIELDS: dict[tuple[str, str], set[str]] = {
    tuple(kind.split("/")): set(fields)  # type: ignore[misc]
    for kind, fields in yaml.safe_load((HERE / "dapr_component_metadata.yaml").read_text()).items()
}
REQUIRED_FIELDS: dict[str, set[str]] = {
    "pubsub.rabbitmq": {"connectionString"},
    "state.postgresql": {"connectionString"},
    "secretstores.local.file": {"secretsFile"},
}


def component_schema(kind: tuple[str, str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "dapr.io/v1alpha1"},
            "kind": {"const": "Component"},
            "spec": {
                "type": "object",
                "required": ["type", "version", "metadata"],
                "additionalProperties": False,
                "properties": {
                    "type": {"const": kind[0]},
                    "version": {"const": kind[1]},
                    "metadata": _metadata_items(COMPONENT_FIELDS[kind]),
                    "initTimeout": _DURATION,
                    "ignoreErrors": {"type": "boolean"},
                },
            },
            "scopes": {"type": "array", "items": _STR, "minItems": 1},
            "auth": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"secretStore": _STR},
            },
        },
    }


CONFIGURATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "dapr.io/v1alpha1"},
        "kind": {"const": "Configuration"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "tracing": {
                    "type": "object",
                    "required": ["samplingRate"],
                    "additionalProperties": False,
                    "properties": {
                        "samplingRate": {"type": "string", "pattern": r"^[01](\.[0-9]+)?$"},
                        "stdout": {"type": "boolean"},
                        "zipkin": {
                            "type": "object",
                            "required": ["endpointAddress"],
                            "properties": {"endpointAddress": _STR},
                        },
                        "otel": {"type": "object"},
                    },
                },
                "metrics": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
                "logging": {"type": "object"},
                "mtls": {
                    "type": "object",
                    "required": ["enabled"],
                    "additionalProperties": False,
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "workloadCertTTL": _DURATION,
                        "allowedClockSkew": _DURATION,
                    },
                },
                "accessControl": {
                    "type": "object",
                    "required": ["defaultAction", "policies"],
                    "properties": {
                        "defaultAction": {"enum": ["allow", "deny"]},
                        "trustDomain": _STR,
                        "policies": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["appId", "defaultAction", "namespace"],
                                "properties": {
                                    "appId": _STR,
                                    "defaultAction": {"enum": ["allow", "deny"]},
                                    "namespace": _STR,
                                    "trustDomain": _STR,
                                },
                            },
                        },
                    },
                },
                "secrets": {
                    "type": "object",
                    "properties": {
                        "scopes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["storeName"],
                                "properties": {
                                    "storeName": _STR,
                                    "defaultAccess": {"enum": ["allow", "deny"]},
                                    "allowedSecrets": {"type": "array", "items": _STR},
                                    "deniedSecrets": {"type": "array", "items": _STR},
                                },
                            },
                        }
                    },
                },
            },
        },
    },
}

_POLICY_REF = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"timeout": _STR, "retry": _STR, "circuitBreaker": _STR},
}
RESILIENCY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "dapr.io/v1alpha1"},
        "kind": {"const": "Resiliency"},
        "scopes": {"type": "array", "items": _STR},
        "spec": {
            "type": "object",
            "required": ["policies", "targets"],
            "additionalProperties": False,
            "properties": {
                "policies": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "timeouts": {"type": "object", "additionalProperties": _DURATION},
                        "retries": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["policy", "maxRetries"],
                                "additionalProperties": False,
                                "properties": {
                                    "policy": {"enum": ["constant", "exponential"]},
                                    "duration": _DURATION,
                                    "maxInterval": _DURATION,
                                    "maxRetries": {"type": "integer", "minimum": -1},
                                    "matching": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "httpStatusCodes": _STR,
                                            "gRPCStatusCodes": _STR,
                                        },
                                    },
                                },
                            },
                        },
                        "circuitBreakers": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["trip"],
                                "additionalProperties": False,
                                "properties": {
                                    "maxRequests": {"type": "integer", "minimum": 1},
                                    "interval": _DURATION,
                                    "timeout": _DURATION,
                                    "trip": {"type": "string", "pattern": "consecutiveFailures"},
                                },
                            },
                        },
                    },
                },
                "targets": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "apps": {"type": "object", "additionalProperties": _POLICY_REF},
                        "actors": {"type": "object"},
                        "components": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"outbound": _POLICY_REF, "inbound": _POLICY_REF},
                            },
                        },
                    },
                },
            },
        },
    },
}


def validate_dapr(obj: dict[str, Any]) -> None:
    if obj["kind"] == "Component":
        kind = (obj["spec"]["type"], obj["spec"]["version"])
        assert kind in COMPONENT_FIELDS, f"unexpected component type {kind}"
        jsonschema.validate(obj, component_schema(kind))
        present = {item["name"] for item in obj["spec"]["metadata"]}
        missing = REQUIRED_FIELDS.get(kind[0], set()) - present
        assert not missing, f"{obj['metadata']['name']}: missing {missing}"
    elif obj["kind"] == "Configuration":
        jsonschema.validate(obj, CONFIGURATION_SCHEMA)
    else:
        jsonschema.validate(obj, RESILIENCY_SCHEMA)
        policies = obj["spec"]["policies"]
        targets = obj["spec"]["targets"]
        refs = [*targets.get("apps", {}).values()]
        refs += [d for c in targets.get("components", {}).values() for d in c.values()]
        for ref in refs:
            assert ref.get("timeout", "") in {"", *policies.get("timeouts", {})}
            assert ref.get("retry", "") in {"", *policies.get("retries", {})}
            assert ref.get("circuitBreaker", "") in {"", *policies.get("circuitBreakers", {})}


def dapr_objects(render: Rendered) -> Iterator[dict[str, Any]]:
    yield from (o for o in render.everything if o["kind"] in DAPR_KINDS)


def test_dapr_resources_match_the_dapr_field_names(any_render: Rendered) -> None:
    objects = list(dapr_objects(any_render))
    assert {o["kind"] for o in objects} == DAPR_KINDS
    for obj in objects:
        validate_dapr(obj)


COMPONENTS = HERE.parents[1] / "components"


def test_self_hosted_resources_match_the_dapr_field_names() -> None:
    """components/ (for `dapr run -f .`) holds the same kinds, checked the same way."""
    objects = [yaml.safe_load(p.read_text()) for p in sorted(COMPONENTS.glob("*.yaml"))]
    kinds = sorted((o["kind"], o["spec"].get("type", "")) for o in objects)
    assert kinds == [
        ("Component", "pubsub.rabbitmq"),
        ("Component", "secretstores.local.file"),
        ("Component", "state.postgresql"),
        ("Configuration", ""),
        ("Resiliency", ""),
    ]
    for obj in objects:
        validate_dapr(obj)
    by_name = {o["metadata"]["name"]: o for o in objects}
    pubsub = {m["name"]: m["value"] for m in by_name["pubsub"]["spec"]["metadata"]}
    assert pubsub["connectionString"] == "amqp://guest:guest@localhost:5672"
    secrets = {m["name"]: m["value"] for m in by_name["secretstore"]["spec"]["metadata"]}
    # daprd runs in each app's appDirPath (services/<name>/): two levels up is the repo root.
    assert secrets["secretsFile"] == "../../var/secrets.json" and secrets["nestedSeparator"]
    assert by_name["statestore"]["spec"]["version"] == "v2"


def test_the_schemas_catch_outdated_and_misspelt_fields(default: Rendered) -> None:
    """The own schemas must fail on what they are for: the old `host` field of the RabbitMQ
    component, a numeric metadata value, a dangling Resiliency reference."""
    pubsub = json.loads(json.dumps(default.get("Component", "pubsub")))
    pubsub["spec"]["metadata"][0] = {"name": "host", "value": "amqp://localhost:5672"}
    with pytest.raises(jsonschema.ValidationError):
        validate_dapr(pubsub)
    state = json.loads(json.dumps(default.get("Component", "statestore")))
    state["spec"]["metadata"][1]["value"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate_dapr(state)
    resiliency = json.loads(json.dumps(default.get("Resiliency", "billing")))
    resiliency["spec"]["targets"]["apps"]["tax"]["retry"] = "noSuchRetry"
    with pytest.raises(AssertionError):
        validate_dapr(resiliency)


def test_pubsub_and_state_components(default: Rendered) -> None:
    def fields(name: str) -> dict[str, Any]:
        component = default.get("Component", name)
        return {
            m["name"]: m.get("value", m.get("secretKeyRef")) for m in component["spec"]["metadata"]
        }

    pubsub = fields("pubsub")
    assert default.get("Component", "pubsub")["spec"]["type"] == "pubsub.rabbitmq"
    assert pubsub["connectionString"] == {"name": "billing-messaging", "key": "connection-string"}
    assert (pubsub["durable"], pubsub["deliveryMode"]) == ("true", "2")
    # Failed deliveries are dead-lettered, not requeued forever (test_daprd_delivery_loop).
    assert (pubsub["requeueInFailure"], pubsub["publisherConfirm"]) == ("false", "true")
    assert (pubsub["enableDeadLetter"], pubsub["prefetchCount"]) == ("true", "32")
    messaging = default.get("Secret", "billing-messaging")["stringData"]
    assert messaging["connection-string"].startswith("amqp://billing:")
    assert messaging["connection-string"].endswith("@billing-rabbitmq:5672/")

    state = default.get("Component", "statestore")
    assert (state["spec"]["type"], state["spec"]["version"]) == ("state.postgresql", "v2")
    assert fields("statestore")["connectionString"] == {
        "name": "billing-database",
        "key": "dapr-state",
    }
    assert fields("statestore")["tablePrefix"] == "dapr_"
    store = default.get("Component", "secretstore")
    assert store["spec"]["type"] == "secretstores.kubernetes"
    for component in default.of_kind("Component"):
        assert set(component["scopes"]) == set(SERVICES)


def test_configuration_and_resiliency(default: Rendered) -> None:
    # One Configuration per app id (least privilege: test_dapr_components_semantics).
    config = default.get("Configuration", "billing-dapr-tax")["spec"]
    assert config["tracing"]["samplingRate"] == "1"
    assert config["accessControl"]["defaultAction"] == "deny"
    assert {p["appId"] for p in config["accessControl"]["policies"]} == {
        "invoice",
        "billing-operator",
    }
    # Payment asks invoice about an invoice it has not heard of yet.
    invoice = default.get("Configuration", "billing-dapr-invoice")["spec"]
    assert {p["appId"] for p in invoice["accessControl"]["policies"]} == {"payment"}
    (scope,) = config["secrets"]["scopes"]
    assert scope["defaultAccess"] == "deny" and scope["allowedSecrets"] == ["jwt-signing-key"]
    payment = default.get("Configuration", "billing-dapr-payment")["spec"]
    assert set(payment["secrets"]["scopes"][0]["allowedSecrets"]) == APP_SECRETS
    # mTLS belongs to the control plane's own Configuration, which Dapr's installer owns.
    assert "daprsystem" not in default.names("Configuration")

    resiliency = default.get("Resiliency", "billing")
    apps = resiliency["spec"]["targets"]["apps"]
    assert set(apps) == set(SERVICES)
    breakers = {app: target["circuitBreaker"] for app, target in apps.items()}
    assert len(set(breakers.values())) == len(SERVICES), "one circuit breaker per app"
    retry = resiliency["spec"]["policies"]["retries"][apps["tax"]["retry"]]
    assert retry["policy"] == "exponential"
    assert retry["matching"]["httpStatusCodes"] == "429,500-599"
    pubsub = resiliency["spec"]["targets"]["components"]["pubsub"]
    assert pubsub["outbound"]["circuitBreaker"] and pubsub["inbound"]["retry"]
    assert "billing-operator" in resiliency["scopes"]


# --- non-default values -------------------------------------------------------------------


def test_non_default_values(custom: Rendered) -> None:
    assert custom.names("Deployment") == {
        "acme-billing-tax",
        "acme-billing-discount",
        "acme-billing-invoice",
        "acme-billing-operator",
    }
    assert custom.of_kind("StatefulSet") == []
    tax = custom.get("Deployment", "acme-billing-tax")
    assert tax["spec"]["replicas"] == 3
    container = _container(tax)
    assert container["image"] == "localhost:5001/billing/tax-service:1.2.3"
    env = _env(container)
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "ext-db", "key": "tax"}}
    assert (env["FEATURE_X"], env["INVOKE_TIMEOUT_SECONDS"], env["LOG_LEVEL"]) == (
        "on",
        "2",
        "DEBUG",
    )
    assert "INVOKE_TIMEOUT_SECONDS" not in _env(
        _container(custom.get("Deployment", "acme-billing-invoice"))
    )

    # Existing database secret: no hook at all.
    assert custom.hooks == []
    assert not APP_SECRETS & custom.names("Secret")
    assert custom.get("Secret", "acme-billing-messaging")["stringData"] == {
        "connection-string": "amqps://billing:secret@mq.example.test:5671/billing"
    }

    (ingress,) = custom.of_kind("Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "billing.example.test"
    assert ingress["spec"]["tls"] == [
        {"secretName": "billing-tls", "hosts": ["billing.example.test"]}
    ]
    assert {p["path"] for p in rule["http"]["paths"]} == {
        "/v1/tax",
        "/v1/discounts",
        "/v1/invoices",
        "/v1/sellers",
        "/v1/credit-notes",
        "/v1/customers",
    }

    resiliency = custom.get("Resiliency", "acme-billing")
    assert set(resiliency["spec"]["targets"]["apps"]) == {"tax", "discount", "invoice"}
    config = custom.get("Configuration", "acme-billing-dapr-tax")["spec"]
    assert "accessControl" not in config
    assert config["tracing"]["zipkin"]["endpointAddress"].startswith("http://zipkin.")
    system = custom.get("Configuration", "daprsystem")
    assert system["metadata"]["namespace"] == "dapr-system"
    assert system["spec"]["mtls"]["enabled"] is True

    operator = _container(custom.get("Deployment", "acme-billing-operator"))
    operator_env = _env(operator)
    assert operator_env["TAX_URL"] == "http://acme-billing-tax.billing.svc:8001"
    assert operator_env["DISCOUNT_URL"] == "http://acme-billing-discount.billing.svc:8002"
    assert (operator_env["WATCH_NAMESPACES"], operator_env["OPERATOR_DEFAULT_TENANT"]) == (
        "billing-demo",
        "demo",
    )
    pod = custom.get("Deployment", "acme-billing-operator")["spec"]["template"]
    assert "dapr.io/enabled" not in (pod["metadata"].get("annotations") or {})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"services": {"tax": {"port": "8001"}}}, "schema"),
        ({"unknownKey": True}, "schema"),
        ({"secrets": {"jwtSigningKey": "too-short"}}, "schema"),
        ({"dapr": {"pubsub": {"deliveryMode": 3}}}, "schema"),
        ({"dapr": {"pubsub": {"prefetchCount": 256}}}, "schema"),
        ({"dapr": {"pubsub": {"requeueInFailure": True}}}, "schema"),
        ({"postgresql": {"enabled": False}}, "database.urls.tax is required"),
        ({"rabbitmq": {"enabled": False}}, "messaging.connectionString is required"),
    ],
    ids=[
        "port-as-string",
        "unknown-key",
        "short-jwt-key",
        "delivery-mode",
        "prefetch-over-uint8",
        "requeue-hides-dead-letters",
        "no-db",
        "no-mq",
    ],
)
def test_bad_values_are_refused(values: dict[str, Any], message: str) -> None:
    done = render(values)
    assert done.returncode != 0
    assert message in done.stderr


# --- without Dapr, app token, NetworkPolicies, availability --------------------------------


@pytest.fixture(scope="module")
def direct() -> Rendered:
    return rendered(
        {"dapr": {"enabled": False}, "availability": {"autoscaling": {"enabled": True}}}
    )


def test_without_dapr_the_services_run_the_direct_runtime(
    direct: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sidecar to wait for: the launcher's direct runtime with RabbitMQ and the peers'
    Services, and the secrets from env, each service only the ones it reads."""
    from billing_common.settings import ServiceSettings

    for service in SERVICES:
        deployment = direct.get("Deployment", f"billing-{service}")
        pod = deployment["spec"]["template"]
        assert not any(k.startswith("dapr.io/") for k in pod["metadata"].get("annotations", {}))
        container = _container(deployment)
        assert container["command"][5:7] == ["--runtime", "direct"]
        env = _env(container)
        assert env["RUNTIME"] == "direct"
        assert "DAPR_HEALTH_TIMEOUT" not in env and "APP_API_TOKEN" not in env
        assert env["AMQP_URL"] == {
            "secretKeyRef": {"name": "billing-messaging", "key": "connection-string"}
        }
        # The settings class reads the value the chart writes, from the environment, as the
        # peers' Services.
        monkeypatch.setenv("PEER_URLS", env["PEER_URLS"])
        assert ServiceSettings.for_service(service).peer_urls == {
            s: f"http://billing-{s}.billing.svc:{port}" for s, port in SERVICES.items()
        }
        for name, port in SERVICES.items():
            assert direct.get("Service", f"billing-{name}")["spec"]["ports"][0]["port"] == port
        secrets = {
            k
            for k, v in env.items()
            if isinstance(v, dict) and v["secretKeyRef"]["name"] in APP_SECRETS
        }
        expected = {"JWT_SIGNING_KEY"}
        if service == "payment":
            expected |= {"WEBHOOK_SECRET_SANDBOX", "WEBHOOK_SECRET_STRIPE", "STRIPE_API_KEY"}
        assert secrets == expected
        assert "billing-app-token" not in direct.names("Secret")
        # HPA on: the Deployment leaves replicas to it.
        assert "replicas" not in deployment["spec"]
        hpa = direct.get("HorizontalPodAutoscaler", f"billing-{service}")
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": f"billing-{service}",
        }
    for obj in direct.everything:
        if obj["kind"] not in DAPR_KINDS:
            kubernetes_validate.validate(obj, K8S_VERSIONS[0], strict=True)


def test_the_app_token_daprd_sends_is_the_one_the_app_checks(default: Rendered) -> None:
    """daprd reads the key `token` of the Secret named by dapr.io/app-token-secret and sends
    it as `dapr-api-token`; the app compares with APP_API_TOKEN: both from one Secret."""
    secret = default.get("Secret", "billing-app-token")
    assert len(secret["stringData"]["token"]) >= 32
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for service in SERVICES:
        deployment = default.get("Deployment", f"billing-{service}")
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/app-token-secret"] == "billing-app-token"
        assert _env(_container(deployment))["APP_API_TOKEN"] == {
            "secretKeyRef": {"name": "billing-app-token", "key": "token"}
        }


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _reachable(
    policies: list[dict[str, Any]],
    target: dict[str, str],
    port: int,
    source: dict[str, str],
    source_namespace: str,
    namespace: str = "billing",
) -> bool:
    """NetworkPolicy ingress semantics: a pod no policy selects accepts everything; a
    selected pod accepts a connection that some rule of some selecting policy allows (peer
    podSelector alone: the policy's namespace; namespaceSelector: by the namespace label)."""
    selecting = [p for p in policies if _selects(p["spec"]["podSelector"], target)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
                continue
            for peer in rule.get("from", [{}]):
                namespace_ok = (
                    _selects(
                        peer["namespaceSelector"], {"kubernetes.io/metadata.name": source_namespace}
                    )
                    if "namespaceSelector" in peer
                    else source_namespace == namespace
                )
                pod_ok = _selects(peer["podSelector"], source) if "podSelector" in peer else True
                if namespace_ok and pod_ok:
                    return True
    return False


def _pod_labels(render: Rendered, kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = render.get(kind, name)["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("render_name", ["default", "direct"])
def test_only_the_sidecars_and_the_ingress_controller_reach_the_apps(
    request: pytest.FixtureRequest, render_name: str
) -> None:
    render: Rendered = request.getfixturevalue(render_name)
    policies = render.of_kind("NetworkPolicy")
    with_dapr = render_name == "default"
    traefik = {"app.kubernetes.io/name": "traefik"}
    stranger = {"app": "curl"}
    operator = _pod_labels(render, "Deployment", "billing-operator")
    for service, port in SERVICES.items():
        target = _pod_labels(render, "Deployment", f"billing-{service}")
        peer = _pod_labels(
            render, "Deployment", f"billing-{'tax' if service != 'tax' else 'invoice'}"
        )
        assert _reachable(policies, target, port, traefik, "traefik")
        assert not _reachable(policies, target, port, stranger, "default")
        assert not _reachable(policies, target, port, stranger, "billing"), (
            "any pod could POST events"
        )
        assert not _reachable(policies, target, port, traefik, "billing")
        # Peers: through their sidecars with Dapr, straight to the app port without.
        assert _reachable(policies, target, port, peer, "billing") is (not with_dapr)
        assert _reachable(policies, target, 50002, peer, "billing") is with_dapr
        assert _reachable(policies, target, 50002, operator, "billing") is with_dapr
        assert not _reachable(policies, target, 50002, stranger, "billing")
        assert not _reachable(policies, target, 3500, peer, "billing"), "the Dapr API is local"
    for server, port in (("postgresql", 5432), ("rabbitmq", 5672)):
        target = _pod_labels(render, "StatefulSet", f"billing-{server}")
        assert _reachable(
            policies, target, port, _pod_labels(render, "Deployment", "billing-tax"), "billing"
        )
        assert not _reachable(policies, target, port, stranger, "billing")
        assert not _reachable(policies, target, port, stranger, "default")


def test_every_service_has_a_disruption_budget_matching_its_pods(default: Rendered) -> None:
    for service in SERVICES:
        budget = default.get("PodDisruptionBudget", f"billing-{service}")
        labels = _pod_labels(default, "Deployment", f"billing-{service}")
        assert _selects(budget["spec"]["selector"], labels)
        others = [
            _pod_labels(default, "Deployment", f"billing-{s}") for s in SERVICES if s != service
        ]
        assert not any(_selects(budget["spec"]["selector"], o) for o in others)
        assert budget["spec"]["maxUnavailable"] == 1
        sa = default.get("Deployment", f"billing-{service}")["spec"]["template"]["spec"]
        assert sa["serviceAccountName"] == f"billing-{service}"
