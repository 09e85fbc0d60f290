"""A stand-in for daprd and its `pubsub.rabbitmq` component, on the real RabbitMQ.

What it re-implements, read from the upstream sources (dapr/dapr d8450742, components-contrib
c23900d2; no code copied), so that the apps and the Dapr resources of this repository meet the
same wire behaviour they meet on a cluster:

- The component (components-contrib pubsub/rabbitmq/rabbitmq.go), parsed from the Component
  resource: one exchange per topic (`exchangeKind`, `durable`, auto-delete =
  `deletedWhenUnused`); publishing with routing key "" (or metadata `routingKey`), content type
  text/plain, `deliveryMode`, *not mandatory* (an exchange with nothing bound drops the
  message), waiting for the confirm with `publisherConfirm`. Subscribing declares the queue
  `<consumerID>-<topic>` (consumerID defaults to the app id), with `enableDeadLetter` first the
  fanout exchange `dlx-<queue>` and the durable lazy queue `dlq-<queue>` bound to it and
  `x-dead-letter-exchange` on the queue; `prefetchCount` (a uint8: larger fails init, as the
  component's decoder does); a handler error nacks with requeue = `requeueInFailure`, success
  acks (`autoAck` false). Unknown fields are ignored, as daprd's decoder ignores them.
- Topic scoping (dapr pkg/scopes, pkg/runtime/pubsub/adapter.go IsOperationAllowed):
  `allowedTopics`, `protectedTopics`, `publishingScopes`, `subscriptionScopes`, checked on
  publish (also on a dead-letter publish) and on subscribe.
- Publishing (pkg/api/grpc PublishEvent, pkg/runtime/pubsub/cloudevents.go, contrib
  pubsub/envelope.go FromCloudEvent): a structured CloudEvent keeps its attributes; `time` is
  added if missing; `traceid` and `traceparent` are set to daprd's own span when the envelope
  has no `traceid`; `topic` and `pubsubname` are set. The outbound Resiliency policy retries.
- Delivery (pkg/runtime/subscription/subscription.go and postman/http/http.go): the body is
  parsed as a CloudEvent (else: dead-letter topic if any, else the error goes back to the
  component); the route of the programmatic subscription; POST with
  `application/cloudevents+json`; 2xx with status SUCCESS/""/no JSON = done, RETRY or an
  unknown status = retriable, DROP and HTTP 404 = dropped (to the dead-letter topic if the
  subscription names one, else acked and gone), other statuses are code errors retried only
  if the retry policy's `matching.httpStatusCodes` lists them; an unreachable app is
  retriable. The inbound Resiliency policy (timeout per attempt, retry policy) runs the
  attempts; on a final error the message goes to the dead-letter topic and is acked, or, with
  none, the error goes back to the component (nack).
- Retry policies (pkg/resiliency, dapr/kit retry, cenkalti/backoff defaults: constant 5s;
  exponential initialInterval 500ms, multiplier 1.5, randomizationFactor 0.5, maxInterval
  60s, maxElapsedTime 15m; maxRetries -1 = unlimited). Waits are multiplied by `time_scale`
  so a test does not sit through minutes; the number and order of attempts are unchanged.
- The sidecar API the apps use: gRPC PublishEvent, GetSecret (secret scopes of the app's
  Configuration), SaveState/GetState/DeleteState (keys prefixed with the app id, numeric
  etags, first-write); HTTP `/v1.0/healthz/outbound` and `/v1.0/invoke/<app>/method/<path>`
  (access control of the *target's* Configuration, by the caller's app id).

One gRPC and one HTTP server stand for every app's sidecar: each app is given its own
DAPR_API_TOKEN (as with `dapr.io/api-token-secret`) and the servers tell the calling app by it.
Not modelled: mTLS and SPIFFE identities (the token stands for them), invocation resiliency
and circuit breakers, bulk and streaming subscriptions, declarative Subscription resources,
routing rules beyond one route, namespaced pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import grpc
import httpx
import uvicorn
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from dapr.proto.runtime.v1 import dapr_pb2_grpc, secret_pb2, state_pb2
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import empty_pb2

CLOUDEVENT_CONTENT_TYPE = "application/cloudevents+json"
TOKEN_HEADER = "dapr-api-token"

# --- resources --------------------------------------------------------------------------


def component_fields(component: dict[str, Any], secrets_by_ref: dict[str, str]) -> dict[str, str]:
    """The component's metadata as daprd hands it to the component: name -> string value
    (secretKeyRef resolved from `secrets_by_ref`, keyed "<secret>/<key>")."""
    fields: dict[str, str] = {}
    for item in component["spec"].get("metadata") or []:
        if "secretKeyRef" in item:
            ref = item["secretKeyRef"]
            fields[item["name"]] = secrets_by_ref.get(f"{ref['name']}/{ref['key']}", "")
        else:
            fields[item["name"]] = str(item.get("value", ""))
    return fields


def applies_to(resource: dict[str, Any], app_id: str) -> bool:
    scopes = resource.get("scopes")
    return not scopes or app_id in scopes


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str | int | float) -> float:
    """A Go duration string ("1m30s", "500ms") in seconds; a bare number is seconds (dapr/kit
    falls back to whole seconds when time.ParseDuration fails)."""
    value = str(text).strip()
    if re.fullmatch(r"\d+", value):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def truthy(value: str) -> bool:
    # dapr/kit utils.IsTruthy
    return value.strip().lower() in {"y", "yes", "true", "t", "on", "1"}


def uint(value: str, bits: int, name: str) -> int:
    """mapstructure's weak decoding of a string into uintN: out of range fails init."""
    number = int(value, 0)
    if not 0 <= number < 2**bits:
        raise ValueError(f"{name}: {value} overflows uint{bits}")
    return number


def _code_ranges(patterns: str) -> list[tuple[int, int]] | None:
    if not patterns:
        return None
    ranges = []
    for pattern in patterns.split(","):
        if not pattern:
            continue
        start, _, end = pattern.partition("-")
        ranges.append((int(start), int(end or start)))
    return ranges


@dataclass(frozen=True)
class RetryPolicy:
    exponential: bool = False
    duration: float = 5.0
    initial_interval: float = 0.5
    multiplier: float = 1.5
    randomization_factor: float = 0.5
    max_interval: float = 60.0
    max_elapsed: float = 15 * 60.0
    max_retries: int = -1
    http_status_codes: list[tuple[int, int]] | None = None

    @classmethod
    def parse(cls, spec: dict[str, Any]) -> RetryPolicy:
        def seconds(key: str, default: float) -> float:
            return go_duration(spec[key]) if key in spec else default

        matching = spec.get("matching") or {}
        return cls(
            exponential=str(spec.get("policy", "constant")).lower() == "exponential",
            duration=seconds("duration", 5.0),
            initial_interval=seconds("initialInterval", 0.5),
            multiplier=float(spec.get("multiplier", 1.5)),
            randomization_factor=float(spec.get("randomizationFactor", 0.5)),
            max_interval=seconds("maxInterval", 60.0),
            max_elapsed=seconds("maxElapsedTime", 15 * 60.0),
            max_retries=int(spec.get("maxRetries", -1)),
            http_status_codes=_code_ranges(str(matching.get("httpStatusCodes", ""))),
        )

    def retries_status(self, status: int) -> bool:
        """pkg/resiliency statusCodeNeedRetry for an HTTP status: no list = retry all."""
        if self.http_status_codes is None:
            return True
        return any(start <= status <= end for start, end in self.http_status_codes)

    def delays(self) -> Iterator[float]:
        """The waits between attempts, until the policy gives up (backoff.Stop)."""
        current, elapsed, retries = self.initial_interval, 0.0, 0
        while self.max_retries < 0 or retries < self.max_retries:
            retries += 1
            if not self.exponential:
                yield self.duration
                continue
            delta = self.randomization_factor * current
            wait = current - delta + random.random() * (2 * delta)
            current = min(current * self.multiplier, self.max_interval)
            if self.max_elapsed and elapsed + wait > self.max_elapsed:
                return
            elapsed += wait
            yield wait


@dataclass(frozen=True)
class Policy:
    timeout: float | None = None
    retry: RetryPolicy | None = None


def component_policies(
    resiliencies: list[dict[str, Any]], app_id: str, component: str
) -> tuple[Policy, Policy]:
    """(outbound, inbound) policies of `component` for `app_id` from the Resiliency resources
    scoped to it; no target = no timeout and no retries."""
    outbound, inbound = Policy(), Policy()
    for resiliency in resiliencies:
        if not applies_to(resiliency, app_id):
            continue
        spec = resiliency["spec"]
        policies = spec.get("policies") or {}
        target = ((spec.get("targets") or {}).get("components") or {}).get(component)
        if not target:
            continue

        def policy(direction: dict[str, Any] | None, policies: dict[str, Any] = policies) -> Policy:
            if not direction:
                return Policy()
            timeout = direction.get("timeout")
            retry = direction.get("retry")
            return Policy(
                timeout=go_duration(policies["timeouts"][timeout]) if timeout else None,
                retry=RetryPolicy.parse(policies["retries"][retry]) if retry else None,
            )

        outbound, inbound = policy(target.get("outbound")), policy(target.get("inbound"))
    return outbound, inbound


# --- errors as daprd classifies them ----------------------------------------------------


class NotAllowed(Exception):
    """rtpubsub.NotAllowedError: the topic is not in this app's scopes."""


class Retriable(Exception):
    """rterrors.RetriableError: RETRY, an unknown status, or the app unreachable."""


class Dropped(Exception):
    """rtpubsub.ErrMessageDropped: DROP or HTTP 404."""


class CodeError(Exception):
    """resiliency.CodeError: a non-2xx answer other than 404."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"app answered {status}: {body[:200]}")
        self.status = status


async def run_policy(
    policy: Policy, operation: Callable[[], Awaitable[Any]], time_scale: float
) -> Any:
    """resiliency.NewRunner: a timeout per attempt, then the retry policy (code errors stop
    it unless `matching` lists their status)."""

    async def attempt() -> Any:
        if policy.timeout is None:
            return await operation()
        async with asyncio.timeout(policy.timeout):
            return await operation()

    delays = policy.retry.delays() if policy.retry is not None else iter(())
    while True:
        try:
            return await attempt()
        except CodeError as exc:
            if policy.retry is None or not policy.retry.retries_status(exc.status):
                raise
            error: Exception = exc
        except (
            Retriable,
            Dropped,
            NotAllowed,
            TimeoutError,
            OSError,
            aio_pika.AMQPException,
        ) as exc:
            error = exc
        wait = next(delays, None)
        if wait is None:
            raise error
        await asyncio.sleep(wait * time_scale)


# --- the component ----------------------------------------------------------------------


@dataclass
class Delivered:
    """What the component hands daprd: contrib pubsub.NewMessage."""

    data: bytes
    topic: str
    metadata: dict[str, str]


class RabbitMqComponent:
    """pubsub.rabbitmq for one sidecar: one connection and one channel, like the component."""

    def __init__(self, name: str, fields: dict[str, str], consumer_id: str) -> None:
        self.name = name
        self.url = fields["connectionString"]
        self.consumer_id = fields.get("consumerID", "").strip() or consumer_id
        self.durable = truthy(fields.get("durable", "true"))
        self.delete_when_unused = truthy(fields.get("deletedWhenUnused", "true"))
        self.auto_ack = truthy(fields.get("autoAck", "false"))
        self.requeue_in_failure = truthy(fields.get("requeueInFailure", "false"))
        self.enable_dead_letter = truthy(fields.get("enableDeadLetter", "false"))
        self.publisher_confirm = truthy(fields.get("publisherConfirm", "false"))
        self.delivery_mode = uint(fields.get("deliveryMode", "0"), 8, "deliveryMode")
        if self.delivery_mode > 2:
            raise ValueError("invalid RabbitMQ delivery mode, accepted values are between 0 and 2")
        self.prefetch = uint(fields.get("prefetchCount", "0"), 8, "prefetchCount")
        self.exchange_kind = fields.get("exchangeKind", "fanout")
        if self.exchange_kind not in {"fanout", "topic", "direct", "headers"}:
            raise ValueError(f"invalid RabbitMQ exchange kind {self.exchange_kind}")
        self.max_len = int(fields.get("maxLen", "0") or 0)
        self.max_len_bytes = int(fields.get("maxLenBytes", "0") or 0)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.declared_queues: list[str] = []

    async def init(self) -> None:
        self._connection = await aio_pika.connect_robust(self.url, timeout=10)
        self._channel = await self._connection.channel(publisher_confirms=self.publisher_confirm)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._connection is not None:
            await self._connection.close()

    async def _exchange(self, name: str, kind: str, durable: bool) -> AbstractExchange:
        if name not in self._exchanges:
            assert self._channel is not None
            self._exchanges[name] = await self._channel.declare_exchange(
                name, kind, durable=durable, auto_delete=self.delete_when_unused
            )
        return self._exchanges[name]

    def _length_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.max_len > 0:
            args["x-max-length"] = self.max_len
        if self.max_len_bytes > 0:
            args["x-max-length-bytes"] = self.max_len_bytes
        return args

    async def publish(self, topic: str, data: bytes, metadata: dict[str, str]) -> None:
        exchange = await self._exchange(topic, self.exchange_kind, self.durable)
        message = aio_pika.Message(
            body=data,
            content_type=metadata.get("contentType", "text/plain"),
            delivery_mode=self.delivery_mode or None,
            message_id=metadata.get("messageID"),
        )
        # Not mandatory: nothing bound to the exchange means the broker drops it silently.
        await exchange.publish(message, routing_key=metadata.get("routingKey", ""), mandatory=False)

    async def subscribe(
        self,
        topic: str,
        metadata: dict[str, str],
        handler: Callable[[Delivered], Awaitable[None]],
    ) -> str:
        assert self._channel is not None
        queue_name = metadata.get("queueName") or f"{self.consumer_id}-{topic}"
        exchange = await self._exchange(topic, self.exchange_kind, self.durable)
        arguments: dict[str, Any] = {}
        if self.enable_dead_letter:
            dlx = await self._exchange(f"dlx-{queue_name}", "fanout", True)
            dlq = await self._channel.declare_queue(
                f"dlq-{queue_name}",
                durable=True,
                auto_delete=self.delete_when_unused,
                arguments={**self._length_args(), "x-queue-mode": "lazy"},
            )
            await dlq.bind(dlx, routing_key="")
            arguments["x-dead-letter-exchange"] = dlx.name
        arguments = {**arguments, **self._length_args(), "x-queue-type": "classic"}
        queue = await self._channel.declare_queue(
            queue_name,
            durable=self.durable,
            auto_delete=self.delete_when_unused,
            arguments=arguments,
        )
        if self.prefetch > 0:
            await self._channel.set_qos(prefetch_count=self.prefetch)
        await queue.bind(exchange, routing_key=metadata.get("routingKey", ""))
        self.declared_queues.append(queue_name)

        async def on_message(message: AbstractIncomingMessage) -> None:
            # concurrency "parallel" (the default): each message in its own task.
            task = asyncio.create_task(self._handle(message, topic, handler))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        await queue.consume(on_message, no_ack=self.auto_ack)
        return queue_name

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        topic: str,
        handler: Callable[[Delivered], Awaitable[None]],
    ) -> None:
        try:
            await handler(Delivered(message.body, topic, {}))
        except Exception:
            if not self.auto_ack:
                await message.nack(requeue=self.requeue_in_failure)
        else:
            if not self.auto_ack:
                await message.ack()


# --- scoping ----------------------------------------------------------------------------


def _topics(value: str) -> list[str]:
    return [t for t in value.replace(" ", "").split(",")] if value else []


def scoped_topics(fields: dict[str, str], scope: str, app_id: str) -> list[str]:
    """pkg/scopes GetScopedTopics: "app1=t1,t2;app2=t3" (names matched case-insensitively)."""
    value = next((v for k, v in fields.items() if k.lower() == scope.lower()), "")
    topics: list[str] = []
    for entry in value.replace(" ", "").split(";"):
        app, sep, listed = entry.partition("=")
        if sep and app == app_id:
            topics += [t for t in listed.split(",") if t not in topics]
    return topics


def operation_allowed(fields: dict[str, str], topic: str, scoped: list[str]) -> bool:
    """pkg/runtime/pubsub IsOperationAllowed."""
    lowered = {k.lower(): v for k, v in fields.items()}
    allowed = _topics(lowered.get("allowedtopics", ""))
    if allowed and topic not in allowed:
        return False
    protected = _topics(lowered.get("protectedtopics", ""))
    if topic not in protected and not scoped:
        return True
    return topic in scoped


# --- one sidecar ------------------------------------------------------------------------


@dataclass
class Attempt:
    """One POST daprd made to the app, and what came of it."""

    app_id: str
    topic: str
    event_id: str | None
    status: int | None
    outcome: str


class Sidecar:
    """daprd for one app id. `attach` the app before starting it: the app must be made with
    this sidecar's `api_token` as DAPR_API_TOKEN."""

    def __init__(
        self,
        app_id: str,
        cluster: DaprCluster,
        configuration: dict[str, Any] | None,
        components: list[dict[str, Any]],
        app_token: str | None = None,
    ) -> None:
        self.app_id = app_id
        self.app_token = app_token
        self.api_token = f"daprd-{app_id}-{secrets.token_hex(8)}"
        self.cluster = cluster
        self.configuration = configuration or {}
        self.components = components
        self.pubsubs: dict[str, tuple[RabbitMqComponent, dict[str, str], Policy, Policy]] = {}
        self.subscriptions: list[dict[str, Any]] = []
        self.refused_subscriptions: list[str] = []
        self.state: dict[str, tuple[bytes, str]] = {}
        self._version = 0
        self._app_client: httpx.AsyncClient | None = None
        self._closed = False

    def attach(self, app: FastAPI) -> None:
        self._app_client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{self.app_id}"
        )

    @property
    def app_client(self) -> httpx.AsyncClient:
        assert self._app_client is not None, "attach the app first"
        return self._app_client

    # component lifecycle

    async def init_components(self) -> None:
        for component in self.components:
            if component["spec"]["type"] != "pubsub.rabbitmq":
                continue
            name = component["metadata"]["name"]
            fields = component_fields(component, self.cluster.secret_refs)
            # The broker is this test's vhost, whatever the resource's connection string.
            fields["connectionString"] = self.cluster.amqp_url
            pubsub = RabbitMqComponent(name, fields, self.app_id)
            await pubsub.init()
            outbound, inbound = component_policies(self.cluster.resiliencies, self.app_id, name)
            self.pubsubs[name] = (pubsub, fields, outbound, inbound)

    def component_names(self, kind_prefix: str) -> set[str]:
        return {
            c["metadata"]["name"]
            for c in self.components
            if str(c["spec"]["type"]).startswith(kind_prefix)
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pubsub, _, _, _ in self.pubsubs.values():
            await pubsub.close()
        if self._app_client is not None:
            await self._app_client.aclose()

    def _app_headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.app_token} if self.app_token else {}

    # publishing

    async def adapter_publish(
        self, pubsub_name: str, topic: str, data: bytes, metadata: dict[str, str]
    ) -> None:
        """pkg/runtime/pubsub/publisher Publish: scopes, then the outbound policy."""
        if pubsub_name not in self.pubsubs:
            raise LookupError(f"pubsub {pubsub_name} not found")
        pubsub, fields, outbound, _ = self.pubsubs[pubsub_name]
        if not operation_allowed(
            fields, topic, scoped_topics(fields, "publishingScopes", self.app_id)
        ):
            raise NotAllowed(f"topic {topic} is not allowed for app id {self.app_id}")
        await run_policy(
            outbound, lambda: pubsub.publish(topic, data, metadata), self.cluster.time_scale
        )
        self.cluster.published.append((self.app_id, topic, data))

    async def publish_event(
        self,
        pubsub_name: str,
        topic: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str],
        traceparent: str | None,
    ) -> None:
        span = _child_span(traceparent)
        if content_type.startswith(CLOUDEVENT_CONTENT_TYPE):
            envelope = json.loads(data)
            envelope.setdefault("time", datetime.now(UTC).isoformat())
            if "traceid" not in envelope:  # contrib FromCloudEvent
                envelope["traceid"] = span
                envelope["traceparent"] = span
            envelope.setdefault("tracestate", "")
            envelope["topic"], envelope["pubsubname"] = topic, pubsub_name
            envelope.setdefault("source", "Dapr")
            envelope.setdefault("type", "com.dapr.event.sent")
            envelope.setdefault("specversion", "1.0")
        else:  # contrib NewCloudEventsEnvelope around a raw payload
            envelope = {
                "id": secrets.token_hex(16),
                "specversion": "1.0",
                "datacontenttype": content_type or "text/plain",
                "source": self.app_id,
                "type": "com.dapr.event.sent",
                "topic": topic,
                "pubsubname": pubsub_name,
                "traceid": span,
                "traceparent": span,
                "tracestate": "",
                "time": datetime.now(UTC).isoformat(),
                "data": data.decode(errors="replace"),
            }
        await self.adapter_publish(
            pubsub_name, topic, json.dumps(envelope).encode(), dict(metadata)
        )

    # subscribing and delivering

    async def subscribe_all(self) -> None:
        """Read the app's programmatic subscriptions and subscribe each (subscription.New)."""
        answer = await self.app_client.get("/dapr/subscribe", headers=self._app_headers())
        if answer.status_code == 404:
            return
        answer.raise_for_status()
        for entry in answer.json():
            name, topic = entry["pubsubname"], entry["topic"]
            if name not in self.pubsubs:
                self.refused_subscriptions.append(f"{name}/{topic}: no such pubsub")
                continue
            pubsub, fields, _, inbound = self.pubsubs[name]
            if not operation_allowed(
                fields, topic, scoped_topics(fields, "subscriptionScopes", self.app_id)
            ):
                # daprd logs "subscription to topic ... is not allowed" and goes on without it.
                self.refused_subscriptions.append(f"{name}/{topic}: not allowed")
                continue
            route = entry.get("route") or (entry.get("routes") or {}).get("default", "")
            dead_letter = entry.get("deadLetterTopic", "")
            metadata = {k: str(v) for k, v in (entry.get("metadata") or {}).items()}
            self.subscriptions.append(entry)

            async def handler(
                message: Delivered,
                name: str = name,
                route: str = route,
                dead_letter: str = dead_letter,
                inbound: Policy = inbound,
            ) -> None:
                await self._on_message(name, route, dead_letter, inbound, message)

            await pubsub.subscribe(topic, metadata, handler)

    async def _send_to_dead_letter(self, name: str, message: Delivered, topic: str) -> None:
        await self.adapter_publish(name, topic, message.data, message.metadata)

    async def _on_message(
        self, name: str, route: str, dead_letter: str, policy: Policy, message: Delivered
    ) -> None:
        """The handler daprd gives the component (subscription.go); raising = nack."""
        message.metadata["pubsubName"] = name
        try:
            cloud_event = json.loads(message.data)
            if not isinstance(cloud_event, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if dead_letter:
                await self._send_to_dead_letter(name, message, dead_letter)
                return
            raise

        async def deliver() -> None:
            try:
                await self._post(route, message, cloud_event)
            except Dropped:
                if dead_letter:
                    await self._send_to_dead_letter(name, message, dead_letter)
                return

        try:
            await run_policy(policy, deliver, self.cluster.time_scale)
        except Exception:
            if dead_letter:
                # Published, then the original is acked (returns without error).
                await self._send_to_dead_letter(name, message, dead_letter)
                return
            raise

    async def _post(self, route: str, message: Delivered, cloud_event: dict[str, Any]) -> None:
        """postman/http Deliver."""
        event_id = cloud_event.get("id")
        record = Attempt(self.app_id, message.topic, event_id, None, "")
        self.cluster.attempts.append(record)
        headers = {
            "content-type": CLOUDEVENT_CONTENT_TYPE,
            **message.metadata,
            **self._app_headers(),
        }
        trace = cloud_event.get("traceparent") or cloud_event.get("traceid")
        if isinstance(trace, str) and trace:
            headers["traceparent"] = _child_span(trace)
        try:
            answer = await self.app_client.post(
                "/" + route.lstrip("/"), content=message.data, headers=headers
            )
        except httpx.HTTPError as exc:
            record.outcome = "retry (app unreachable)"
            raise Retriable(str(exc)) from exc
        record.status = answer.status_code
        if 200 <= answer.status_code <= 299:
            try:
                status = answer.json().get("status", "")
            except (ValueError, AttributeError):
                record.outcome = "success"
                return
            if status in ("", "SUCCESS"):
                record.outcome = "success"
                return
            if status == "DROP":
                record.outcome = "drop"
                raise Dropped(str(event_id))
            record.outcome = "retry"
            raise Retriable(f"{status} from the app for {event_id}")
        if answer.status_code == 404:
            record.outcome = "drop (404)"
            raise Dropped(str(event_id))
        record.outcome = f"error {answer.status_code}"
        raise CodeError(answer.status_code, answer.text)

    # secrets

    def secret_allowed(self, store: str, key: str) -> bool:
        """Configuration secrets.scopes (pkg/config IsSecretAllowed)."""
        for scope in (self.configuration.get("spec") or {}).get("secrets", {}).get("scopes") or []:
            if scope.get("storeName") != store:
                continue
            allowed = scope.get("allowedSecrets") or []
            if allowed:
                return key in allowed
            if key in (scope.get("deniedSecrets") or []):
                return False
            return str(scope.get("defaultAccess", "allow")).lower() != "deny"
        return True

    # invocation

    def may_be_invoked_by(self, caller: str) -> bool:
        """The target's Configuration accessControl, for an app-wide policy."""
        control = (self.configuration.get("spec") or {}).get("accessControl")
        if not control:
            return True
        for policy in control.get("policies") or []:
            if policy.get("appId") == caller:
                return str(policy.get("defaultAction", "deny")).lower() == "allow"
        return str(control.get("defaultAction", "allow")).lower() == "allow"

    async def serve_invocation(
        self, caller: str, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        if not self.may_be_invoked_by(caller):
            message = {
                "errorCode": "ERR_DIRECT_INVOKE",
                "message": f"access control policy has denied access to id: {caller}",
            }
            return 403, json.dumps(message).encode(), "application/json"
        forwarded = {
            k: v
            for k, v in headers.items()
            if k.lower() not in {TOKEN_HEADER, "host", "content-length"}
        }
        forwarded["dapr-caller-app-id"] = caller
        forwarded.update(self._app_headers())
        answer = await self.app_client.request(
            method, "/" + path + (f"?{query}" if query else ""), content=body, headers=forwarded
        )
        return (
            answer.status_code,
            answer.content,
            answer.headers.get("content-type", "application/json"),
        )


def _child_span(traceparent: str | None) -> str:
    """A daprd span: a child of `traceparent` when there is one, else a new trace."""
    parts = (traceparent or "").split("-")
    trace_id = parts[1] if len(parts) == 4 and len(parts[1]) == 32 else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


# --- the sidecar servers ----------------------------------------------------------------


class _DaprApi(dapr_pb2_grpc.DaprServicer):  # type: ignore[misc]
    def __init__(self, cluster: DaprCluster) -> None:
        self.cluster = cluster

    async def _caller(self, context: Any) -> Sidecar:
        metadata = dict(context.invocation_metadata() or ())
        sidecar = self.cluster.by_token(metadata.get(TOKEN_HEADER))
        if sidecar is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication error")
        assert sidecar is not None
        return sidecar

    async def PublishEvent(self, request: Any, context: Any) -> empty_pb2.Empty:
        sidecar = await self._caller(context)
        traceparent = dict(context.invocation_metadata() or ()).get("traceparent")
        try:
            await sidecar.publish_event(
                request.pubsub_name,
                request.topic,
                request.data,
                request.data_content_type,
                dict(request.metadata),
                traceparent,
            )
        except NotAllowed as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except LookupError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"error when publish to topic {request.topic} in pubsub {request.pubsub_name}: "
                f"{exc}",
            )
        return empty_pb2.Empty()

    async def GetSecret(self, request: Any, context: Any) -> secret_pb2.GetSecretResponse:
        sidecar = await self._caller(context)
        if request.store_name not in sidecar.component_names("secretstores."):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"failed finding secret store with key {request.store_name}",
            )
        if not sidecar.secret_allowed(request.store_name, request.key):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f'access denied by policy to get "{request.key}" from "{request.store_name}"',
            )
        value = self.cluster.secrets.get(request.key)
        if value is None:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"failed getting secret with key {request.key} from secret store "
                f'{request.store_name}: secrets "{request.key}" not found',
            )
        return secret_pb2.GetSecretResponse(data={request.key: value})

    async def _state_key(self, context: Any, store: str, key: str) -> tuple[Sidecar, str]:
        sidecar = await self._caller(context)
        if store not in sidecar.component_names("state."):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"state store {store} is not found"
            )
        return sidecar, f"{sidecar.app_id}||{key}"  # the default keyPrefix strategy: appid

    async def _check_etag(self, context: Any, sidecar: Sidecar, slot: str, item: Any) -> None:
        if not item.HasField("etag"):
            return
        if not item.etag.value.isdigit():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "invalid etag value")
        current = sidecar.state.get(slot)
        if current is None or current[1] != item.etag.value:
            await context.abort(grpc.StatusCode.ABORTED, "possible etag mismatch")

    async def SaveState(self, request: Any, context: Any) -> empty_pb2.Empty:
        for item in request.states:
            sidecar, slot = await self._state_key(context, request.store_name, item.key)
            await self._check_etag(context, sidecar, slot, item)
            sidecar._version += 1
            sidecar.state[slot] = (item.value, str(sidecar._version))
        return empty_pb2.Empty()

    async def GetState(self, request: Any, context: Any) -> state_pb2.GetStateResponse:
        sidecar, slot = await self._state_key(context, request.store_name, request.key)
        stored = sidecar.state.get(slot)
        if stored is None:
            return state_pb2.GetStateResponse()
        return state_pb2.GetStateResponse(data=stored[0], etag=stored[1])

    async def DeleteState(self, request: Any, context: Any) -> empty_pb2.Empty:
        sidecar, slot = await self._state_key(context, request.store_name, request.key)
        await self._check_etag(context, sidecar, slot, request)
        sidecar.state.pop(slot, None)
        return empty_pb2.Empty()


def _http_api(cluster: DaprCluster, loop: asyncio.AbstractEventLoop) -> FastAPI:
    """The sidecars' HTTP API. It runs in its own thread (the SDK probes it with blocking
    urllib); invocations are carried over to the apps' event loop."""
    api = FastAPI()

    @api.get("/v1.0/healthz/outbound")
    async def healthz() -> Response:
        return Response(status_code=204)

    @api.api_route(
        "/v1.0/invoke/{app_id}/method/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    )
    async def invoke(app_id: str, path: str, request: Request) -> Response:
        caller = cluster.by_token(request.headers.get(TOKEN_HEADER))
        if caller is None:
            return JSONResponse({"errorCode": "ERR_UNAUTHORIZED"}, status_code=401)
        target = cluster.sidecars.get(app_id)
        if target is None:
            return JSONResponse({"errorCode": "ERR_DIRECT_INVOKE"}, status_code=500)
        call = target.serve_invocation(
            caller.app_id,
            request.method,
            path,
            request.url.query,
            await request.body(),
            dict(request.headers),
        )
        status, body, media_type = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(call, loop)
        )
        return Response(body, status_code=status, media_type=media_type)

    return api


# --- the cluster ------------------------------------------------------------------------


@dataclass
class DaprResources:
    """The Dapr resources the sidecars load, and which Configuration each app uses."""

    components: list[dict[str, Any]]
    resiliencies: list[dict[str, Any]]
    configurations: dict[str, dict[str, Any]]
    config_of_app: dict[str, str | None]

    @classmethod
    def from_objects(
        cls, objects: list[dict[str, Any]], config_of_app: dict[str, str | None]
    ) -> DaprResources:
        return cls(
            components=[o for o in objects if o["kind"] == "Component"],
            resiliencies=[o for o in objects if o["kind"] == "Resiliency"],
            configurations={
                o["metadata"]["name"]: o for o in objects if o["kind"] == "Configuration"
            },
            config_of_app=config_of_app,
        )


@dataclass
class DaprCluster:
    resources: DaprResources
    amqp_url: str
    secrets: dict[str, str]
    time_scale: float = 1.0
    secret_refs: dict[str, str] = field(default_factory=dict)
    sidecars: dict[str, Sidecar] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    published: list[tuple[str, str, bytes]] = field(default_factory=list)
    grpc_port: int = 0
    http_port: int = 0

    @property
    def resiliencies(self) -> list[dict[str, Any]]:
        return self.resources.resiliencies

    def by_token(self, token: str | None) -> Sidecar | None:
        return next((s for s in self.sidecars.values() if s.api_token == token), None)

    def sidecar_for(self, app_id: str, app_token: str | None = None) -> Sidecar:
        config_name = self.resources.config_of_app.get(app_id)
        configuration = self.resources.configurations.get(config_name) if config_name else None
        components = [c for c in self.resources.components if applies_to(c, app_id)]
        sidecar = Sidecar(app_id, self, configuration, components, app_token)
        self.sidecars[app_id] = sidecar
        return sidecar


@contextlib.asynccontextmanager
async def sidecar_servers(cluster: DaprCluster) -> AsyncIterator[None]:
    """Start the gRPC and HTTP servers every sidecar shares; sets cluster's ports."""
    server = grpc.aio.server()
    dapr_pb2_grpc.add_DaprServicer_to_server(_DaprApi(cluster), server)
    cluster.grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    http = uvicorn.Server(
        uvicorn.Config(
            _http_api(cluster, asyncio.get_running_loop()),
            log_level="warning",
            lifespan="off",
            ws="none",
        )
    )
    thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not http.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the sidecars' HTTP server did not start")
        await asyncio.sleep(0.01)
    cluster.http_port = int(sock.getsockname()[1])
    try:
        yield
    finally:
        http.should_exit = True
        await asyncio.to_thread(thread.join, 5)
        sock.close()
        for sidecar in cluster.sidecars.values():
            await sidecar.close()
        await server.stop(grace=None)
