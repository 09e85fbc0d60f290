"""Runtime selection and the lifecycle every service shares.

A service's composition root (`<service>/bootstrap.py`) calls `select_adapters` with its
settings and then `open_context`; nothing else in a service knows which runtime it runs in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.adapters.env_secrets import EnvSecretStore
from billing_common.adapters.inprocess_bus import InProcessEventBus
from billing_common.adapters.sql_state import SqlKeyValueStore
from billing_common.auth import TokenService
from billing_common.db import create_engine, migrate, session_factory
from billing_common.events import CloudEvent
from billing_common.health import install_relay_metrics
from billing_common.logs import AccessLog, printable
from billing_common.outbox import OutboxRelay
from billing_common.ports import EventBus, EventHandler, KeyValueStore, SecretStore, ServiceInvoker
from billing_common.settings import ServiceSettings
from billing_common.tracing import bind


@dataclass
class EmbeddedPlatform:
    """What the one-process launcher shares between services: one bus, and the ASGI apps
    by app id for in-process invocation."""

    bus: InProcessEventBus = field(default_factory=InProcessEventBus)
    apps: MutableMapping[str, Any] = field(default_factory=dict)


@dataclass
class Adapters:
    bus: EventBus
    invoker: ServiceInvoker
    secrets: SecretStore
    state_store: Callable[[AsyncEngine], KeyValueStore]
    owns_bus: bool
    # Routes the runtime needs the service's app to serve (Dapr pushes events to the app over
    # HTTP); `open_context(app=...)` installs them. None for runtimes that need none.
    install_routes: Callable[[FastAPI], None] | None = None


def select_adapters(
    settings: ServiceSettings, platform: EmbeddedPlatform | None = None
) -> Adapters:
    secrets = EnvSecretStore(settings.secrets_file)
    match settings.runtime:
        case "embedded":
            # Imported per runtime, like the others' adapters: this one brings httpx (and
            # with it click, rich and pygments where installed) that the direct runtime,
            # on aiohttp, never uses.
            from billing_common.adapters.asgi_invoker import AsgiServiceInvoker

            platform = platform or EmbeddedPlatform()
            return Adapters(
                bus=platform.bus,
                invoker=AsgiServiceInvoker(
                    platform.apps, timeout_seconds=settings.invoke_timeout_seconds
                ),
                secrets=secrets,
                state_store=lambda engine: SqlKeyValueStore(engine),
                owns_bus=False,
            )
        case "direct":
            from billing_common.adapters.http_invoker import HttpServiceInvoker
            from billing_common.adapters.rabbitmq_bus import RabbitMqEventBus

            return Adapters(
                bus=RabbitMqEventBus(
                    settings.amqp_url,
                    exchange=settings.amqp_exchange,
                    prefetch=settings.amqp_prefetch,
                    max_retries=settings.amqp_max_retries,
                    retry_delay_seconds=settings.amqp_retry_delay_seconds,
                ),
                invoker=HttpServiceInvoker(
                    settings.peer_urls,
                    timeout_seconds=settings.invoke_timeout_seconds,
                    retries=settings.invoke_retries,
                    breaker_failure_threshold=settings.breaker_failure_threshold,
                    breaker_reset_seconds=settings.breaker_reset_seconds,
                ),
                secrets=secrets,
                state_store=lambda engine: SqlKeyValueStore(engine),
                owns_bus=True,
            )
        case "dapr":
            from billing_common.adapters.dapr_bus import DaprEventBus
            from billing_common.adapters.dapr_invoker import DaprServiceInvoker
            from billing_common.adapters.dapr_secrets import DaprSecretStore
            from billing_common.adapters.dapr_sidecar import DaprSidecar
            from billing_common.adapters.dapr_state import DaprStateStore

            if not os.environ.get("APP_API_TOKEN"):
                # daprd sends this token on every call to the app; without it the subscription
                # routes take events from any caller that reaches the app's port.
                logger.warning(
                    "APP_API_TOKEN is not set: the event routes accept callers other than the "
                    "Dapr sidecar (set dapr.io/app-token-secret)"
                )
            # One sidecar connection for the bus, the state store and the secret store; the bus
            # (owned: start/stop run with the service) closes it at shutdown.
            sidecar = DaprSidecar()
            bus = DaprEventBus(
                sidecar, pubsub_name=settings.dapr_pubsub_name, app_id=settings.service_name
            )
            dapr_state = DaprStateStore(sidecar, settings.dapr_state_store)
            return Adapters(
                bus=bus,
                invoker=DaprServiceInvoker(timeout_seconds=settings.invoke_timeout_seconds),
                secrets=DaprSecretStore(sidecar, settings.dapr_secret_store),
                state_store=lambda engine: dapr_state,
                owns_bus=True,
                install_routes=bus.install,
            )
    raise NotImplementedError(f"runtime {settings.runtime!r} is not available in this build")


@dataclass
class ServiceContext:
    """Everything a running service holds; the API reads it from `app.state.ctx`."""

    settings: ServiceSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    adapters: Adapters
    state: KeyValueStore
    tokens: TokenService
    metrics: Any = None

    @property
    def bus(self) -> EventBus:
        return self.adapters.bus

    @property
    def invoker(self) -> ServiceInvoker:
        return self.adapters.invoker

    @property
    def secrets(self) -> SecretStore:
        return self.adapters.secrets

    def subscribe(self, event_type: str, handler: EventHandler, *, lane: str | None = None) -> None:
        """Subscribe this service to `event_type`, with one log line and metric per event
        (in `lane`: see billing_common.ports.EventBus.subscribe)."""
        service = self.settings.service_name
        metrics = self.metrics
        # The access line's writer: in JSON mode the line is built without loguru's record
        # (a fifth of a small event's CPU went to it). Type and id come from the event.
        log = AccessLog(service, logged_as=__name__)
        # (type, outcome) -> its counter, looked up once: `labels` validates and looks the
        # values up under a lock on every call.
        handled: dict[tuple[str, str], Any] = {}

        async def logged(event: CloudEvent) -> None:
            bind(event.traceparent)
            started = time.perf_counter()
            outcome = "error"
            try:
                await handler(event)
                outcome = "ok"
            finally:
                elapsed = (time.perf_counter() - started) * 1000
                log.info(
                    f"event {printable(event.type)} {printable(event.id)} {outcome} {elapsed:.1f}ms"
                )
                if metrics is not None:
                    counter = handled.get((event.type, outcome))
                    if counter is None:
                        counter = handled[event.type, outcome] = metrics.events.labels(
                            service, event.type, outcome
                        )
                    counter.inc()

        self.adapters.bus.subscribe(service, event_type, logged, lane=lane)


async def signing_key(settings: ServiceSettings, secrets: SecretStore) -> str:
    key = await secrets.get_secret("jwt-signing-key")
    if key:
        return str(key)
    if settings.development.development_secrets:
        logger.warning("no jwt-signing-key secret set: using the development key")
        return str(settings.jwt_dev_signing_key)
    raise RuntimeError("the jwt-signing-key secret is required outside the embedded runtime")


async def open_context(
    settings: ServiceSettings,
    adapters: Adapters,
    *,
    migrations_dir: Path,
    metrics: Any = None,
    app: FastAPI | None = None,
) -> ServiceContext:
    """`app`: the service's FastAPI app, for runtimes that serve routes of their own (the dapr
    runtime's subscription endpoints). Services pass it always; the other runtimes ignore it."""
    if app is not None and adapters.install_routes is not None:
        adapters.install_routes(app)
    engine = create_engine(
        settings.resolved_database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_max_overflow,
    )
    if settings.development.migrate_on_start:
        await migrate(
            engine, migrations_dir, version_table=f"alembic_version_{settings.service_name}"
        )
    tokens = TokenService(
        await signing_key(settings, adapters.secrets),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    relay = OutboxRelay(
        engine,
        adapters.bus,
        poll_seconds=settings.outbox_poll_seconds,
        batch_size=settings.outbox_batch_size,
    )
    if metrics is not None:
        install_relay_metrics(metrics, relay)
    return ServiceContext(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        relay=relay,
        adapters=adapters,
        state=adapters.state_store(engine),
        tokens=tokens,
        metrics=metrics,
    )


async def start_context(ctx: ServiceContext) -> None:
    """Call after the service subscribed its handlers."""
    if ctx.adapters.owns_bus:
        await ctx.bus.start()
    await ctx.relay.start()
    ctx.relay.notify()  # publish whatever an earlier run left in the outbox


async def close_context(ctx: ServiceContext) -> None:
    # The server has drained its requests by now; publish what they committed while the bus
    # is still open, then let the consumers finish (bus.stop), and only then close the database.
    # Not onto the embedded bus: it lives in memory and is about to stop, so an event handed to
    # it now would be marked sent and lost; in the outbox it waits for the next start.
    flush = ctx.settings.shutdown_flush_seconds if ctx.adapters.owns_bus else 0.0
    await ctx.relay.stop(flush_seconds=flush)
    if ctx.adapters.owns_bus:
        await ctx.bus.stop()
    await ctx.invoker.close()
    await ctx.engine.dispose()
