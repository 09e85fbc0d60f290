"""The billing chart as Helm renders it: `helm install` through Helm's own Go library
(helm-sdkpy) against a kmock Kubernetes emulator, with the default values and with a
non-default set. Every built-in object is validated against the official Kubernetes schemas
(kubernetes-validate, strict); the Dapr resources against schemas of our own with the
component field names Dapr documents. A real cluster still has to run what this renders.
"""

from __future__ import annotations

import json
import os
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
        "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "2m"},
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
    deployment = default.get("Deployment", f"billing-{service}")
    pod = deployment["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == service
    assert annotations["dapr.io/app-port"] == str(port)
    assert annotations["dapr.io/config"] == "billing-dapr"
    assert annotations["dapr.io/enable-api-logging"] == "true"

    container = _container(deployment)
    assert container["image"] == f"billing/{service}-service:0.1.0"
    assert container["command"][:5] == ["python", "-m", "billing_launcher", "serve", service]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    env = _env(container)
    assert env["RUNTIME"] == "dapr"
    assert env["LOG_JSON"] == "true"
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "billing-database", "key": service}}
    assert env["DAPR_PUBSUB_NAME"] == "pubsub"
    assert env["MIGRATE_ON_START"] == "false"

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    (tmp,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tmp"]
    assert "emptyDir" in tmp
    assert pod["spec"]["serviceAccountName"] == f"billing-{service}"
    assert f"billing-{service}" in default.names("ServiceAccount")

    svc = default.get("Service", f"billing-{service}")
    assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == port


def test_ingress_routes_each_api_prefix(default: Rendered) -> None:
    (ingress,) = default.of_kind("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert "host" not in rule
    routes = {
        p["path"]: (p["pathType"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]
    }
    assert routes == {
        "/v1/tax": ("Prefix", "billing-tax"),
        "/v1/discounts": ("Prefix", "billing-discount"),
        "/v1/invoices": ("Prefix", "billing-invoice"),
        "/v1/payments": ("Prefix", "billing-payment"),
        "/v1/webhooks": ("Prefix", "billing-payment"),
    }
    services = default.names("Service")
    assert {name for _, name in routes.values()} <= services


# --- migrations as hooks ------------------------------------------------------------------


def test_migration_jobs_are_hooks(default: Rendered) -> None:
    jobs = {h["name"]: h for h in default.hooks if h["kind"] == "Job"}
    assert set(jobs) == {f"billing-{s}-migrate" for s in SERVICES}
    for service in SERVICES:
        job = default.get("Job", f"billing-{service}-migrate")
        annotations = job["metadata"]["annotations"]
        # The bundled PostgreSQL is part of the release: first migration right after install.
        assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        container = _container({"spec": job["spec"]})
        assert container["command"] == ["python", "-m", "billing_launcher", "migrate", service]
        assert _env(container)["DATABASE_URL"]["secretKeyRef"]["key"] == service
        pod = job["spec"]["template"]
        assert pod["spec"]["restartPolicy"] == "Never"
        assert "dapr.io/enabled" not in (pod["metadata"].get("annotations") or {})
    # The database Secret exists before the Jobs: a hook of lower weight.
    (secret_hook,) = [h for h in default.hooks if h["kind"] == "Secret"]
    assert secret_hook["name"] == "billing-database"
    assert set(secret_hook["events"]) == {"pre-install", "pre-upgrade"}
    assert secret_hook["weight"] < 0


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
    role = default.get("Role", "billing-secret-reader")
    (rule,) = role["rules"]
    assert set(rule["resourceNames"]) == APP_SECRETS and rule["verbs"] == ["get"]
    binding = default.get("RoleBinding", "billing-secret-reader")
    assert {s["name"] for s in binding["subjects"]} == {f"billing-{s}" for s in SERVICES}


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


# Field names as Dapr documents them for each component type (see TESTING-THE-CLUSTER-HALF).
COMPONENT_FIELDS: dict[tuple[str, str], set[str]] = {
    ("pubsub.rabbitmq", "v1"): {
        "connectionString",
        "consumerID",
        "durable",
        "deletedWhenUnused",
        "autoAck",
        "deliveryMode",
        "requeueInFailure",
        "prefetchCount",
        "reconnectWait",
        "concurrencyMode",
        "publisherConfirm",
        "enableDeadLetter",
        "maxLen",
        "maxLenBytes",
        "exchangeKind",
        "ttlInSeconds",
    },
    ("state.postgresql", "v2"): {
        "connectionString",
        "host",
        "port",
        "database",
        "user",
        "password",
        "tablePrefix",
        "timeout",
        "cleanupInterval",
    },
    ("secretstores.kubernetes", "v1"): {"defaultNamespace", "kubeconfigPath"},
    ("secretstores.local.file", "v1"): {"secretsFile", "nestedSeparator", "multiValued"},
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
    assert (pubsub["requeueInFailure"], pubsub["publisherConfirm"]) == ("true", "true")
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
    config = default.get("Configuration", "billing-dapr")["spec"]
    assert config["tracing"]["samplingRate"] == "1"
    assert config["accessControl"]["defaultAction"] == "deny"
    assert {p["appId"] for p in config["accessControl"]["policies"]} == {
        "invoice",
        "billing-operator",
    }
    (scope,) = config["secrets"]["scopes"]
    assert scope["defaultAccess"] == "deny" and set(scope["allowedSecrets"]) == APP_SECRETS
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

    # Existing database secret, no bundled server: migrations run before install too.
    assert {h["kind"] for h in custom.hooks} == {"Job"}
    for job in custom.of_kind("Job"):
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert custom.names("Job") == {
        f"acme-billing-{s}-migrate" for s in ("tax", "discount", "invoice")
    }
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
    }

    resiliency = custom.get("Resiliency", "acme-billing")
    assert set(resiliency["spec"]["targets"]["apps"]) == {"tax", "discount", "invoice"}
    config = custom.get("Configuration", "acme-billing-dapr")["spec"]
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
        ({"postgresql": {"enabled": False}}, "database.urls.tax is required"),
        ({"rabbitmq": {"enabled": False}}, "messaging.connectionString is required"),
    ],
    ids=["port-as-string", "unknown-key", "short-jwt-key", "delivery-mode", "no-db", "no-mq"],
)
def test_bad_values_are_refused(values: dict[str, Any], message: str) -> None:
    done = render(values)
    assert done.returncode != 0
    assert message in done.stderr
