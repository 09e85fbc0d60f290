"""Dapr-runtime event bus: publish through the sidecar, receive what the sidecar pushes.

Publishing: `PublishEvent` on the pub/sub component (`pubsub`, a `pubsub.rabbitmq` in the
chart) with topic = event type and our own CloudEvent as the payload, declared as
`application/cloudevents+json` so Dapr passes the envelope through (keeping id, source, type,
subject, tenant, traceparent) instead of wrapping it in another one. A failed or slow publish
raises, so the outbox relay keeps the row and tries again.

Receiving (Dapr's programmatic subscription contract, over HTTP):

- `GET /dapr/subscribe` lists one subscription per subscribed event type:
  `{pubsubname, topic, route: /dapr/events/<topic>, deadLetterTopic}`. Dapr's RabbitMQ
  component gives every app id its own durable queue per topic, so the consumer is the app
  id: one process, one consumer.
- Dapr POSTs each event to its route (`Content-Type: application/cloudevents+json`, the whole
  envelope). We answer HTTP 200 with `{"status": "SUCCESS"}` when the handler returned,
  `{"status": "RETRY"}` when it raised (Dapr redelivers under the Resiliency policy's
  `pubsubRetry`, then dead-letters), and `{"status": "DROP"}` when it raised
  PermanentEventError or the body is not a valid CloudEvent of that topic.
- Dead letters: every subscription names the per-service topic `billing.deadletter.<app-id>`.
  Dapr (1.16+) publishes a dropped event there at once, and a retried one once its retries are
  exhausted. Like the direct runtime's `<queue>.dlq` it is one place per consumer to inspect
  and replay from; on RabbitMQ it is an exchange of that name, so bind a durable queue to it
  (or subscribe an inspector app) to keep what lands there.
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
import os
from collections.abc import Callable
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
SUCCESS, RETRY, DROP = "SUCCESS", "RETRY", "DROP"


def dead_letter_topic(app_id: str) -> str:
    return f"billing.deadletter.{app_id}"


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
        dead_letter_topic_for: Callable[[str], str | None] = dead_letter_topic,
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

    def subscribe(self, consumer: str, event_type: str, handler: EventHandler) -> None:
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
                    data=event.to_json(),
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
            return JSONResponse({"status": await self._deliver(topic, await request.body())})

        return router

    def _authorized(self, request: Request) -> bool:
        if not self._app_token:
            return True
        presented = request.headers.get(API_TOKEN_HEADER, "")
        return hmac.compare_digest(presented.encode(), self._app_token.encode())

    async def _deliver(self, topic: str, body: bytes) -> str:
        log = logger.bind(consumer=self._app_id, topic=topic)
        handler = self._handlers.get(topic)
        if handler is None:
            log.error("event on {} dropped: {} does not subscribe to it", topic, self._app_id)
            return DROP
        try:
            event = CloudEvent.from_json(body)
        except (ValidationError, ValueError) as exc:
            log.error("undecodable event on {} dropped: {}", topic, describe(exc))
            return DROP
        bind(event.traceparent)
        if event.type != topic:
            log.error("event {} of type {} arrived on {}: dropped", event.id, event.type, topic)
            return DROP
        try:
            await handler(event)
        except PermanentEventError as exc:
            log.error("event {} {} dropped (dead letter): {}", event.type, event.id, describe(exc))
            return DROP
        except Exception as exc:  # noqa: BLE001 - any other failure: Dapr delivers it again
            log.warning("event {} {} failed, Dapr retries: {}", event.type, event.id, describe(exc))
            return RETRY
        return SUCCESS


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
