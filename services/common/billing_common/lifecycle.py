"""The lifecycle every service shares. A service's `bootstrap.py` states what it is in a
`ServiceSpec` (its routers, its domain errors, how its use cases are wired, what it consumes)
and `build_app` makes the app and runs it:

    open the context -> wire -> subscribe -> start -> samples -> background tasks -> serve
    -> stop the background tasks -> release what wire opened -> close the context

On a failure anywhere after the context opened, everything already started is closed again
in the same reverse order, so a service that cannot start leaves no relay, consumer or
connection pool behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from loguru import logger
from starlette.datastructures import State

from billing_common.health import readiness_checks
from billing_common.runtime import (
    Adapters,
    EmbeddedPlatform,
    ServiceContext,
    close_context,
    open_context,
    select_adapters,
    start_context,
)
from billing_common.settings import ServiceSettings
from billing_common.web import create_service_app

Deps = TypeVar("Deps")
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


@dataclass(frozen=True)
class Wiring:
    """What `ServiceSpec.wire` is given: the opened context; the app's state, for what the
    entrypoints read beside the Dependencies (invoice's document renderers); and `on_close`,
    for what wiring opened and must release at shutdown (before the context closes)."""

    ctx: ServiceContext
    state: State
    _closing: AsyncExitStack = field(repr=False)

    def on_close(self, release: Callable[[], Awaitable[object]]) -> None:
        self._closing.push_async_callback(release)


@dataclass(frozen=True)
class ServiceSpec(Generic[Deps]):
    """One service, as its composition root states it.

    `wire` builds the use cases' Dependencies from the context (the routes read them from
    `app.state.deps`); `subscribe` registers the event consumers, before the bus starts
    because a broker binds the queues at start; `load_samples` adds the sample data when the
    DevelopmentPolicy says so and answers how many records it added; each of `background`
    runs as a task from start to shutdown (cancelled then).
    """

    name: str
    title: str
    description: str
    package: str  # the distribution whose version the OpenAPI document shows
    routers: Sequence[APIRouter]
    domain_errors: Mapping[type[Exception], int]
    migrations_dir: Path
    wire: Callable[[Wiring], Awaitable[Deps]]
    subscribe: Callable[[ServiceContext, Deps], None] | None = None
    load_samples: Callable[[ServiceContext, Deps], Awaitable[int]] | None = None
    background: Sequence[Callable[[ServiceContext, Deps], Coroutine[Any, Any, None]]] = ()
    openapi_tags: Sequence[Mapping[str, Any]] = ()
    # Beyond the domain-error map: handlers that build their own problem document.
    exception_handlers: Mapping[type[Exception], ExceptionHandler] = field(default_factory=dict)


def build_app(
    spec: ServiceSpec[Any],
    settings: ServiceSettings | None = None,
    platform: EmbeddedPlatform | None = None,
) -> FastAPI:
    """The service's app, registered on `platform` (the in-process invocation registry of
    the embedded runtime) when one is given."""
    settings = settings or ServiceSettings.for_service(spec.name)
    adapters = select_adapters(settings, platform)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running(spec, settings, adapters, app):
            yield

    app = create_service_app(
        service=spec.name,
        title=spec.title,
        description=spec.description,
        version=package_version(spec.package),
        routers=spec.routers,
        lifespan=lifespan,
        domain_errors=dict(spec.domain_errors),
        readiness_checks=readiness_checks,
        max_body_bytes=settings.max_body_bytes,
        openapi_tags=[dict(tag) for tag in spec.openapi_tags] or None,
    )
    for exception, handler in spec.exception_handlers.items():
        app.add_exception_handler(exception, handler)
    if platform is not None:
        platform.apps[spec.name] = app
    return app


@asynccontextmanager
async def _running(
    spec: ServiceSpec[Any], settings: ServiceSettings, adapters: Adapters, app: FastAPI
) -> AsyncIterator[None]:
    log = logger.bind(service=spec.name)
    ctx = await open_context(
        settings, adapters, migrations_dir=spec.migrations_dir, metrics=app.state.metrics, app=app
    )
    app.state.ctx = ctx
    # Unwinds in reverse: background tasks, what wire opened, the context.
    async with AsyncExitStack() as closing:
        closing.push_async_callback(close_context, ctx)
        deps = await spec.wire(Wiring(ctx, app.state, closing))
        app.state.deps = deps  # read only by the service's entrypoints/deps.py
        if spec.subscribe is not None:
            spec.subscribe(ctx, deps)
        await start_context(ctx)
        if spec.load_samples is not None and settings.development.load_samples:
            added = await spec.load_samples(ctx, deps)
            if added:
                log.info("loaded {} sample records", added)
        tasks = [
            asyncio.create_task(job(ctx, deps), name=f"{spec.name}-{_name(job)}")
            for job in spec.background
        ]
        for task in tasks:
            task.add_done_callback(partial(_report_crash, log))
        closing.push_async_callback(_cancel, tasks)
        log.info("{} service started ({} runtime)", spec.name, settings.runtime)
        yield


def _report_crash(log: Any, task: asyncio.Task[None]) -> None:
    """A background task is meant to run until shutdown; say so at once when one ends early."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background task {} failed: {!r}", task.get_name(), task.exception())


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        # A task that failed was reported when it did; shutdown goes on regardless.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _name(job: Callable[..., object]) -> str:
    return getattr(job, "__name__", "task").strip("_").replace("_", "-")


@cache
def package_version(package: str) -> str:
    """The installed version of `package` ("0.0.0" when it runs uninstalled from a checkout)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "0.0.0"


def migrations_beside(bootstrap_file: str) -> Path:
    """A service's Alembic scripts: services/<name>/migrations in a checkout (beside the
    package); ./migrations when the package was installed into site-packages and the scripts
    sit in the working directory."""
    beside_package = Path(bootstrap_file).resolve().parent.parent / "migrations"
    return beside_package if beside_package.is_dir() else Path.cwd() / "migrations"
