"""Dapr-runtime event bus: publish through the sidecar, receive what the sidecar pushes.

Publishing: `PublishEvent` on the pub/sub component (`pubsub`, a `pubsub.rabbitmq` in the
chart) with topic = event type and our own CloudEvent as the payload, declared as
`application/cloudevents+json` so Dapr passes the envelope through (keeping id, source, type,
subject, tenant) instead of wrapping it in another one. daprd sets `traceid` and `traceparent`
to its own span when the envelope has no `traceid` (components-contrib `FromCloudEvent`), so
the envelope carries `traceid` = our `traceparent` and the trace survives the hop. A failed or
slow publish raises, so the outbox relay keeps the row and tries again.

Receiving (Dapr's programmatic subscription contract, over HTTP):

- `GET /dapr/subscribe` lists one subscription per subscribed event type:
  `{pubsubname, topic, route: /dapr/events/<topic>}`. Dapr's RabbitMQ component gives every
  app id its own durable queue per topic (`<app-id>-<topic>`), so the consumer is the app id:
  one process, one consumer.
- Dapr POSTs each event to its route (`Content-Type: application/cloudevents+json`, the whole
  envelope). We answer HTTP 200 `{"status": "SUCCESS"}` when the handler returned and HTTP 200
  `{"status": "RETRY"}` when it raised: Dapr redelivers under the Resiliency policy
  (`pubsubDelivery`). An event we can never take (PermanentEventError, not a CloudEvent of
  that topic, a topic we do not consume) is answered 422 (problem+json): the policy retries
  only 429/5xx, so that failure is final at once.
- Dead letters: no `deadLetterTopic`. When a delivery fails for good (422, or retries
  exhausted), daprd returns the error to the component, which nacks without requeue
  (`requeueInFailure: false`), and RabbitMQ moves the message to the durable queue
  `dlq-<app-id>-<topic>` the component declared with `enableDeadLetter: true`. There
  `python -m billing_common.dead_letters --dapr-app <app-id>` lists and replays them. Not DROP
  and not a dead-letter topic: daprd acks a DROP (and a 404) when no dead-letter topic is set,
  and publishes to a dead-letter topic non-mandatory, so with nothing bound to that topic's
  exchange the message is gone (components/README.md).
- When the sidecar was given an app token (APP_API_TOKEN), only requests carrying it in
  `dapr-api-token` are accepted, so nothing else that can reach the app port can inject events.

Why not dapr-ext-fastapi's DaprApp (`dapr[fastapi]`): it binds a route per topic to the app at
subscribe time, but here handlers are registered on the bus before the app's lifespan has run
and a lifespan may run more than once per app; it adds a second `/dapr/subscribe` for every
DaprApp made; and its routes parse the body with FastAPI, so an undecodable event becomes a 422
that Dapr retries instead of dropping. The contract is two routes; implementing it keeps
SUCCESS/RETRY/DROP and the token check in one place.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import ValidationError

from billing_common.adapters.dapr_sidecar import (
    API_TOKEN_HEADER,
    DaprSidecar,
    DaprUnavailable,
    describe,
)
from billing_common.events import CloudEvent
from billing_common.ports import EventHandler, PermanentEventError
from billing_common.tracing import bind

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
SUBSCRIBE_PATH = "/dapr/subscribe"
EVENTS_PATH = "/dapr/events"
_MAX_DETAIL_CHARS = 1000
SUCCESS, RETRY = "SUCCESS", "RETRY"
# An event this app can never take: any 4xx but 404 (daprd drops on 404) and 429 is final
# under the delivery policy's `matching`, and the component then dead-letters the message.
REFUSED_STATUS = 422


def no_dead_letter_topic(app_id: str) -> str | None:
    """Dead letters go to the component's dead-letter queue, not to a topic (module doc)."""
    return None


def event_route(topic: str) -> str:
    return f"{EVENTS_PATH}/{topic}"


class DaprEventBus:
    def __init__(
        self,
        sidecar: DaprSidecar,
        *,
        pubsub_name: str,
        app_id: str,
        publish_timeout_seconds: float = 5.0,
        app_token: str | None = None,
        dead_letter_topic_for: Callable[[str], str | None] = no_dead_letter_topic,
    ) -> None:
        self._sidecar = sidecar
        self._pubsub = pubsub_name
        self._app_id = app_id
        self._publish_timeout = publish_timeout_seconds
        # Read once at start-up, as Dapr's docs ask: the sidecar sends this on every call.
        self._app_token = app_token if app_token is not None else os.environ.get("APP_API_TOKEN")
        self._dead_letter_topic = dead_letter_topic_for(app_id)
        self._handlers: dict[str, EventHandler] = {}
        self._installed = False
        self._started = False
        self.router = self._build_router()

    # -- EventBus protocol ---------------------------------------------------------------

    def subscribe(
        self, consumer: str, event_type: str, handler: EventHandler, *, lane: str | None = None
    ) -> None:
        # `lane` needs nothing here: Dapr's RabbitMQ component gives every topic of an app
        # its own queue already, so no type waits behind another.
        if consumer != self._app_id:
            # Dapr gives each app id one copy of each event; a second consumer in the same
            # process would silently share it.
            raise ValueError(f"this Dapr app is {self._app_id!r}; cannot consume as {consumer!r}")
        if self._started:
            # The sidecar reads the subscription list once, when the app comes up.
            raise RuntimeError("subscribe before starting the Dapr event bus")
        self._handlers[event_type] = handler

    async def publish(self, event: CloudEvent) -> None:
        try:
            async with asyncio.timeout(self._publish_timeout):
                client = await self._sidecar.client()
                await client.publish_event(
                    pubsub_name=self._pubsub,
                    topic_name=event.type,
                    data=envelope(event),
                    data_content_type=CLOUDEVENTS_CONTENT_TYPE,
                )
        except TimeoutError as exc:
            raise DaprUnavailable(
                f"Dapr did not accept event {event.id} within {self._publish_timeout}s"
            ) from exc
        except DaprUnavailable:
            raise
        except Exception as exc:  # SDK and gRPC errors alike: the row stays
            raise DaprUnavailable(
                f"Dapr refused event {event.id} on {self._pubsub}/{event.type}: {describe(exc)}"
            ) from exc

    async def start(self) -> None:
        if self._handlers and not self._installed:
            raise RuntimeError(
                "the Dapr event bus has subscriptions but its routes are not on the app: "
                "pass app=app to billing_common.runtime.open_context"
            )
        self._started = True

    async def stop(self) -> None:
        # Deliveries in flight are HTTP requests: the server drains them before the lifespan
        # ends. What is left is the sidecar connection the adapters share.
        self._started = False
        await self._sidecar.close()

    # -- the app side of the contract ----------------------------------------------------

    def install(self, app: FastAPI) -> None:
        """Serve the subscription routes on `app` (once per app, whatever the lifespans)."""
        if getattr(app.state, "dapr_routes", None) is not self:
            app.include_router(self.router)
            app.state.dapr_routes = self
        self._installed = True

    def subscriptions(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = []
        for topic in sorted(self._handlers):
            entry: dict[str, Any] = {
                "pubsubname": self._pubsub,
                "topic": topic,
                "route": event_route(topic),
                "metadata": {},
            }
            if self._dead_letter_topic:
                entry["deadLetterTopic"] = self._dead_letter_topic
            listed.append(entry)
        return listed

    def _build_router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)

        @router.get(SUBSCRIBE_PATH)
        async def dapr_subscriptions(request: Request) -> JSONResponse:
            if not self._authorized(request):
                return _unauthorized()
            return JSONResponse(self.subscriptions())

        @router.post(EVENTS_PATH + "/{topic}")
        async def dapr_event(topic: str, request: Request) -> JSONResponse:
            if not self._authorized(request):
                return _unauthorized()
            outcome = await self._deliver(topic, await request.body())
            if isinstance(outcome, Refused):
                return _refused(outcome.reason)
            return JSONResponse({"status": outcome})

        return router

    def _authorized(self, request: Request) -> bool:
        if not self._app_token:
            return True
        presented = request.headers.get(API_TOKEN_HEADER, "")
        return hmac.compare_digest(presented.encode(), self._app_token.encode())

    async def _deliver(self, topic: str, body: bytes) -> str | Refused:
        log = logger.bind(consumer=self._app_id, topic=topic)
        handler = self._handlers.get(topic)
        if handler is None:
            log.error("event on {} refused: {} does not subscribe to it", topic, self._app_id)
            return Refused(f"{self._app_id} does not consume {topic}")
        try:
            event = CloudEvent.from_json(body)
        except (ValidationError, ValueError) as exc:
            log.error("undecodable event on {} refused: {}", topic, describe(exc))
            return Refused(f"not a CloudEvent: {describe(exc)}")
        bind(event.traceparent)
        if event.type != topic:
            log.error("event {} of type {} arrived on {}: refused", event.id, event.type, topic)
            return Refused(f"event of type {event.type} on topic {topic}")
        try:
            await handler(event)
        except PermanentEventError as exc:
            log.error("event {} {} refused (dead letter): {}", event.type, event.id, describe(exc))
            return Refused(describe(exc))
        except Exception as exc:  # noqa: BLE001 - any other failure: Dapr delivers it again
            log.warning("event {} {} failed, Dapr retries: {}", event.type, event.id, describe(exc))
            return RETRY
        return SUCCESS


@dataclass(frozen=True)
class Refused:
    """An event this app can never take (answered REFUSED_STATUS, dead-lettered)."""

    reason: str


def envelope(event: CloudEvent) -> bytes:
    """The structured CloudEvent as published through daprd: with `traceid` beside
    `traceparent`, or daprd replaces both with its own span's context."""
    body = json.loads(event.to_json())
    if event.traceparent:
        body.setdefault("traceid", event.traceparent)
    return json.dumps(body, separators=(",", ":")).encode()


def _refused(reason: str) -> JSONResponse:
    return JSONResponse(
        {
            "type": "/problems/event-refused",
            "title": "Event refused",
            "status": REFUSED_STATUS,
            "detail": reason[:_MAX_DETAIL_CHARS],
        },
        status_code=REFUSED_STATUS,
        media_type="application/problem+json",
    )


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {
            "type": "/problems/unauthorized",
            "title": "Unauthorized",
            "status": 401,
            "detail": "only the Dapr sidecar may call this endpoint",
        },
        status_code=401,
        media_type="application/problem+json",
    )
