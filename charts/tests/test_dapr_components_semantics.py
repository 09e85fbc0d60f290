"""What daprd would make of the Dapr resources, beyond their shape: field names from the
components' own metadata definitions (dapr_component_metadata.yaml, vendored with its upstream
source), values daprd can decode (a uint8 prefetch is at most 255), dead letters that land
somewhere (every dead-letter topic consumed; no setting that makes a dead-letter queue
unreachable), topic scopes that match what the apps subscribe, and least privilege per app.
For both components/ (self-hosted) and the chart as Helm renders it.

Why each rule: daprd ignores unknown fields silently, fails at start-up on a value its decoder
cannot convert, acks a message after publishing it to a dead-letter topic (non-mandatory: an
exchange with nothing bound drops it), and the RabbitMQ component nacks a final failure with
requeue = requeueInFailure (true: forever at the head of the queue; false without
enableDeadLetter: dropped by RabbitMQ).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from billing_common.adapters.dapr_bus import REFUSED_STATUS, DaprEventBus
from billing_common.adapters.dapr_sidecar import DaprSidecar
from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_PAYMENT_REJECTED,
    INVOICE_STATUS_CHANGED,
    INVOICE_VOIDED,
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    TAX_CALCULATED,
)
from billing_common.events import registered_event_types
from charts.tests.chart_objects import rendered_objects

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
METADATA: dict[str, dict[str, dict[str, Any]]] = yaml.safe_load(
    (HERE / "dapr_component_metadata.yaml").read_text()
)
APPS = ("tax", "discount", "invoice", "payment")
# Which secrets each service reads (its composition root): the least it needs.
SECRETS_READ = {
    "tax": {"jwt-signing-key"},
    "discount": {"jwt-signing-key"},
    "invoice": {"jwt-signing-key"},
    "payment": {
        "jwt-signing-key",
        "webhook-secret-sandbox",
        "webhook-secret-stripe",
        "stripe-api-key",
    },
}
# What each service subscribes (test_dapr_runtime.test_every_service_starts_in_the_dapr_runtime
# checks these against the services' own GET /dapr/subscribe).
SUBSCRIBED = {
    "tax": [],
    "discount": [],
    "invoice": [
        PAYMENT_RECEIVED,
        PAYMENT_FAILED,
        PAYMENT_REFUNDED,
        TAX_CALCULATED,
        DISCOUNT_APPLIED,
    ],
    "payment": [
        INVOICE_CREATED,
        INVOICE_FINALIZED,
        INVOICE_VOIDED,
        INVOICE_STATUS_CHANGED,
        INVOICE_PAYMENT_REJECTED,
    ],
}
# Who invokes whom through Dapr (invoice's peers adapter, the operator's clients).
# Payment asks invoice about an invoice it has not heard of yet (payment_service's directory).
CALLERS = {
    "tax": {"invoice", "billing-operator"},
    "discount": {"invoice", "billing-operator"},
    "invoice": {"payment"},
}

_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_TRUTHY = {"true", "false"}  # what the resources should say: no silent truthy guesses


# --- the checker ------------------------------------------------------------------------


def fields_of(component: dict[str, Any]) -> dict[str, str | None]:
    """name -> value (None for a secretKeyRef: resolved by daprd, not checkable here)."""
    return {
        item["name"]: (None if "secretKeyRef" in item else str(item.get("value", "")))
        for item in component["spec"].get("metadata") or []
    }


def value_problems(kind: str, name: str, value: str, spec: dict[str, Any]) -> list[str]:
    where = f"{kind} {name}={value!r}"
    declared = spec["type"]
    if declared == "bool" and value.lower() not in _TRUTHY:
        return [f"{where}: not a boolean"]
    if declared in ("uint8", "int64"):
        if not re.fullmatch(r"-?\d+", value):
            return [f"{where}: not an integer"]
        number = int(value)
        low, high = (0, 255) if declared == "uint8" else (-(2**63), 2**63 - 1)
        high = min(high, spec.get("max", high))
        if not low <= number <= high:
            return [f"{where}: out of range {low}..{high} (daprd fails to start)"]
    if declared == "duration" and not (_GO_DURATION.match(value) or value.isdigit()):
        return [f"{where}: not a duration"]
    if declared == "enum" and value not in spec["values"]:
        return [f"{where}: not one of {spec['values']}"]
    return []


def scoped(fields: dict[str, str | None], key: str) -> dict[str, list[str]]:
    """publishingScopes / subscriptionScopes as app -> topics (pkg/scopes' format)."""
    result: dict[str, list[str]] = {}
    for entry in (fields.get(key) or "").replace(" ", "").split(";"):
        app, sep, topics = entry.partition("=")
        if sep:
            result.setdefault(app, []).extend(t for t in topics.split(",") if t)
    return result


def allowed(fields: dict[str, str | None], app: str, topic: str, scope_key: str) -> bool:
    """pkg/runtime/pubsub IsOperationAllowed."""
    allowed_topics = [t for t in (fields.get("allowedTopics") or "").split(",") if t]
    if allowed_topics and topic not in allowed_topics:
        return False
    protected = [t for t in (fields.get("protectedTopics") or "").split(",") if t]
    scopes = scoped(fields, scope_key)
    if topic not in protected and app not in scopes:
        return True
    return topic in scopes.get(app, [])


def subscriptions_of(pubsub: str) -> dict[str, list[dict[str, Any]]]:
    """What each app's GET /dapr/subscribe lists: the real DaprEventBus, subscribed to the
    topics its service subscribes."""
    lists: dict[str, list[dict[str, Any]]] = {}
    for app, topics in SUBSCRIBED.items():
        bus = DaprEventBus(DaprSidecar(), pubsub_name=pubsub, app_id=app)

        async def handler(event: Any) -> None:
            return None

        for topic in topics:
            bus.subscribe(app, topic, handler)
        lists[app] = bus.subscriptions()
    return lists


def delivery_policy(objects: list[dict[str, Any]], pubsub: str) -> dict[str, Any] | None:
    for resiliency in (o for o in objects if o["kind"] == "Resiliency"):
        target = resiliency["spec"]["targets"].get("components", {}).get(pubsub, {})
        name = (target.get("inbound") or {}).get("retry")
        if name:
            policy: dict[str, Any] = resiliency["spec"]["policies"]["retries"][name]
            return policy
    return None


def _retried(policy: dict[str, Any], status: int) -> bool:
    patterns = str((policy.get("matching") or {}).get("httpStatusCodes", ""))
    if not patterns:
        return True  # no list: every code error is retried
    for pattern in patterns.split(","):
        start, _, end = pattern.partition("-")
        if int(start) <= status <= int(end or start):
            return True
    return False


def problems(objects: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for component in (o for o in objects if o["kind"] == "Component"):
        kind = f"{component['spec']['type']}/{component['spec']['version']}"
        known = METADATA.get(kind)
        if known is None:
            found.append(f"{kind}: no vendored metadata definition")
            continue
        fields = fields_of(component)
        for name, value in fields.items():
            if name not in known:
                found.append(f"{kind}: {name} is not a field (daprd ignores it silently)")
            elif value is not None:
                found += value_problems(kind, name, value, known[name])
        if component["spec"]["type"] == "pubsub.rabbitmq":
            found += dead_letter_problems(component, fields, objects)
    return found


def dead_letter_problems(
    component: dict[str, Any], fields: dict[str, str | None], objects: list[dict[str, Any]]
) -> list[str]:
    name = component["metadata"]["name"]

    def flag(key: str, default: str) -> bool:
        return (fields.get(key) or default).lower() == "true"

    found: list[str] = []
    enable_dead_letter = flag("enableDeadLetter", "false")
    requeue = flag("requeueInFailure", "false")
    if enable_dead_letter and requeue:
        found.append(f"{name}: requeueInFailure=true never lets a failure reach its dlq-")
    if enable_dead_letter and flag("autoAck", "false"):
        found.append(f"{name}: autoAck=true acks before delivery: nothing is dead-lettered")
    if enable_dead_letter and flag("deletedWhenUnused", "true"):
        found.append(f"{name}: deletedWhenUnused=true deletes the dlq- with its consumer")
    subscriptions = subscriptions_of(name)
    consumed = {
        (e["pubsubname"], e["topic"]) for entries in subscriptions.values() for e in entries
    }
    for app, entries in subscriptions.items():
        for entry in entries:
            topic = entry["topic"]
            if not allowed(fields, app, topic, "subscriptionScopes"):
                found.append(f"{name}: {app} subscribes to {topic} outside its scopes")
            dead_letter = entry.get("deadLetterTopic")
            if dead_letter:
                if (name, dead_letter) not in consumed:
                    found.append(
                        f"{name}: nothing consumes {app}'s dead-letter topic {dead_letter}"
                    )
                if not allowed(fields, app, dead_letter, "publishingScopes"):
                    found.append(f"{name}: {app} may not publish its dead letters {dead_letter}")
            elif not enable_dead_letter or requeue:
                found.append(
                    f"{name}: {app}/{topic} has no dead-letter topic and the component no "
                    "reachable dead-letter queue: a final failure is requeued forever or dropped"
                )
    policy = delivery_policy(objects, name)
    if policy is None:
        found.append(f"{name}: no inbound retry policy")
    else:
        if int(policy.get("maxRetries", -1)) < 0 and "maxElapsedTime" not in policy:
            found.append(f"{name}: inbound retries without end (15 min default) delay dead letters")
        if _retried(policy, REFUSED_STATUS):
            found.append(f"{name}: {REFUSED_STATUS} (event refused for good) is retried")
    return found


def privilege_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Each app's own Configuration: secrets it reads, callers it has; the pub/sub's owners."""
    found: list[str] = []
    configs = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Configuration"}
    config_of = {
        (d["spec"]["template"]["metadata"].get("annotations") or {}).get("dapr.io/app-id"): (
            d["spec"]["template"]["metadata"].get("annotations") or {}
        ).get("dapr.io/config")
        for d in objects
        if d["kind"] == "Deployment"
    }
    for app in APPS:
        config = configs.get(config_of.get(app) or "")
        if config is None:
            found.append(f"{app}: no Configuration of its own")
            continue
        spec = config["spec"]
        (scope,) = spec["secrets"]["scopes"]
        if scope["defaultAccess"] != "deny" or set(scope["allowedSecrets"]) != SECRETS_READ[app]:
            found.append(f"{app}: may read {scope} instead of {SECRETS_READ[app]}")
        control = spec.get("accessControl") or {}
        callers = {p["appId"] for p in control.get("policies") or []}
        if control.get("defaultAction") != "deny" or callers != CALLERS.get(app, set()):
            found.append(f"{app}: invocable by {callers} (default {control.get('defaultAction')})")
    for role in (
        o for o in objects if o["kind"] == "Role" and "secret-reader" in o["metadata"]["name"]
    ):
        names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
        app = next(a for a in APPS if f"-{a}-" in role["metadata"]["name"])
        if names != SECRETS_READ[app]:
            found.append(f"{role['metadata']['name']}: grants {names}")
    return found


# An event type is billing.<domain>.<event>.v1; its domain is the owning app's name, except
# credit notes, which the invoice service issues (issue 12 names them billing.creditnote.*).
OWNER_OF_DOMAIN = {"creditnote": "invoice"}


def owner_problems(objects: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for component in (o for o in objects if o["kind"] == "Component"):
        if component["spec"]["type"] != "pubsub.rabbitmq":
            continue
        publishing = scoped(fields_of(component), "publishingScopes")
        if set(publishing) != set(APPS):
            found.append(f"apps without a publishing scope may publish anything: {publishing}")
        owners: dict[str, list[str]] = {}
        for app, topics in publishing.items():
            for topic in topics:
                owners.setdefault(topic, []).append(app)
        for topic, apps in owners.items():
            if apps != [OWNER_OF_DOMAIN.get(topic.split(".")[1], topic.split(".")[1])]:
                found.append(f"{topic} is published by {apps}")
        # Every event type the kernel defines may be published by its owner: a topic left
        # out is refused by daprd, and the owner's outbox would retry it forever.
        for topic in sorted(set(registered_event_types()) - set(owners)):
            found.append(f"{topic} has no publisher: its owner may not publish it")
    return found


# --- the resources ----------------------------------------------------------------------


def self_hosted() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "components").glob("*.yaml"))]


@pytest.fixture(scope="module")
def chart() -> list[dict[str, Any]]:
    return rendered_objects()


@pytest.fixture(scope="module", params=["self-hosted", "chart"])
def resources(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    if request.param == "self-hosted":
        return self_hosted()
    objects: list[dict[str, Any]] = request.getfixturevalue("chart")
    return objects


def test_components_say_what_daprd_understands_and_dead_letters_land(
    resources: list[dict[str, Any]],
) -> None:
    assert problems(resources) == []


def test_each_app_has_the_least_privilege(chart: list[dict[str, Any]]) -> None:
    assert privilege_problems(chart) == []
    assert owner_problems(chart) == []


def test_self_hosted_pubsub_scopes_are_the_charts(chart: list[dict[str, Any]]) -> None:
    def scopes(objects: list[dict[str, Any]]) -> dict[str, Any]:
        (pubsub,) = [
            o for o in objects if o["kind"] == "Component" and "pubsub" in o["spec"]["type"]
        ]
        fields = fields_of(pubsub)
        return {
            "publishing": scoped(fields, "publishingScopes"),
            "subscription": {k: sorted(v) for k, v in scoped(fields, "subscriptionScopes").items()},
            "allowed": sorted((fields.get("allowedTopics") or "").split(",")),
        }

    assert owner_problems(self_hosted()) == []
    assert scopes(self_hosted()) == scopes(chart)


def _with_field(objects: list[dict[str, Any]], name: str, value: str) -> list[dict[str, Any]]:
    changed = json.loads(json.dumps(objects))
    for component in changed:
        if component["kind"] == "Component" and component["spec"]["type"] == "pubsub.rabbitmq":
            items = [i for i in component["spec"]["metadata"] if i["name"] != name]
            component["spec"]["metadata"] = [*items, {"name": name, "value": value}]
    return changed


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("reconnectWait", "3s", "reconnectWait is not a field"),
        ("prefetchCount", "300", "out of range 0..255"),
        ("deliveryMode", "3", "out of range 0..2"),
        ("durable", "yes please", "not a boolean"),
        ("reconnectWaitSeconds", "soon", "not a duration"),
        ("requeueInFailure", "true", "never lets a failure reach"),
        ("enableDeadLetter", "false", "no reachable dead-letter queue"),
        ("deletedWhenUnused", "true", "deletes the dlq-"),
    ],
)
def test_the_checker_finds_what_daprd_would_trip_on(name: str, value: str, expected: str) -> None:
    found = problems(_with_field(self_hosted(), name, value))
    assert any(expected in problem for problem in found), found


def test_the_checker_finds_a_dead_letter_topic_nobody_consumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The seed's configuration: every subscription named billing.deadletter.<app-id>."""
    original = DaprEventBus.__init__

    def with_dead_letter_topic(self: DaprEventBus, *args: Any, **kwargs: Any) -> None:
        kwargs["dead_letter_topic_for"] = lambda app: f"billing.deadletter.{app}"
        original(self, *args, **kwargs)

    monkeypatch.setattr(DaprEventBus, "__init__", with_dead_letter_topic)
    found = problems(self_hosted())
    assert any("nothing consumes invoice's dead-letter topic" in p for p in found), found
    assert any("invoice may not publish its dead letters" in p for p in found), found
