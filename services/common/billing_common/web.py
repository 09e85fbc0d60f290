"""The FastAPI application every service is built on: problem details, trace context,
request logging, body limits, strict JSON bodies, Prometheus metrics, liveness and
readiness."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ValidationError
from starlette._exception_handler import ExceptionHandlers, StatusHandlers
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, HTTPExceptionHandler, Message, Receive, Scope, Send

from billing_common import json_body, tracing
from billing_common.database_problems import install_database_problem_handler
from billing_common.logs import AccessLog, printable
from billing_common.openapi import install_contract
from billing_common.problems import PROBLEM_CONTENT_TYPE, RequestRefused, install_problem_handlers

PrincipalT = TypeVar("PrincipalT")
ModelT = TypeVar("ModelT", bound=BaseModel)

ReadinessCheck = Callable[[], Awaitable[None]]


class ServiceMetrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            registry=self.registry,
        )
        self.events = Counter(
            "events_handled_total",
            "Events handled",
            ["service", "type", "outcome"],
            registry=self.registry,
        )
        self.service = service


class RequestContextMiddleware:
    """Pure ASGI (no per-request task) for speed: binds the trace context, refuses bodies over
    the limit with 413 and NUL characters in the path, query or headers with 422 (PostgreSQL
    text cannot hold them), and writes one log line and the metrics per request."""

    def __init__(
        self, app: ASGIApp, *, service: str, metrics: ServiceMetrics, max_body: int
    ) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        self.max_body = max_body
        self._log = AccessLog(service, logged_as=__name__)
        # (method, route, status) -> its request counter and latency histogram: `labels`
        # validates and looks the label values up under a lock on every call. As many keys
        # as the registry holds series for them.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # (method, path) -> the route answering it directly, and the exception handlers of
        # the ExceptionMiddleware inside (set by _ServiceApp when it builds the stack).
        self._direct: dict[tuple[str, str], DirectJsonRoute] = {}
        self._exception_handlers: ExceptionHandlers = {}
        self._status_handlers: StatusHandlers = {}

    def answer_directly(
        self, routes: dict[tuple[str, str], DirectJsonRoute], handlers: ExceptionMiddleware
    ) -> None:
        """Answer these routes' requests here, with the handlers of `handlers` (the stack's
        own ExceptionMiddleware, so an error gets the problem it gets there)."""
        self._direct = routes
        # Its own tables, so that a handler the app adds later is seen by both.
        self._exception_handlers = handlers._exception_handlers
        self._status_handlers = handlers._status_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The headers read here, without decoding every header into a dict (the last of a
        # repeated name wins, as it did in that dict; a repeated content type is none).
        traceparent = request_id = declared = content_type = None
        for name, value in scope["headers"]:
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"content-type":
                content_type = value if content_type is None else b""
        tracing.bind(traceparent, request_id)
        started = time.perf_counter()
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._too_large(scope, receive, send)
            self._record(scope, 413, started)
            return
        if _has_nul(scope):
            await _problem(
                scope,
                receive,
                send,
                RequestRefused(
                    422,
                    "Unacceptable character",
                    "the path, query and headers must not contain NUL characters",
                    problem_type="unacceptable-character",
                ),
            )
            self._record(scope, 422, started)
            return

        trace_header = (b"x-trace-id", (tracing.current_trace_id() or "").encode())
        if content_type == b"application/json" and self._direct and not scope.get("root_path"):
            route = self._direct.get((scope["method"], scope["path"]))
            if route is not None:
                replayed = await self._answer_directly(
                    route, scope, receive, send, started, trace_header
                )
                if replayed is None:
                    return
                receive = replayed  # not answered: the stack below, with the body given again

        received = 0
        status = 500

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), trace_header]
            await send(message)

        try:
            # FastAPI's AsyncExitStackMiddleware, folded in (see _ServiceApp): the stack its
            # request handler closes uploaded files on.
            async with AsyncExitStack() as files:
                scope["fastapi_middleware_astack"] = files
                await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            status = 413
            await self._too_large(scope, receive, send)
        finally:
            self._record(scope, status, started)

    async def _answer_directly(
        self,
        route: DirectJsonRoute,
        scope: Scope,
        receive: Receive,
        send: Send,
        started: float,
        trace_header: tuple[bytes, bytes],
    ) -> Receive | None:
        """Answer a JSON request (its content type `application/json`, its body strict JSON)
        with `route.answer_well_formed`, as the stack below would have answered (the same
        exception handlers, the same log line and metrics), without Starlette's exception
        layers, its router and FastAPI's handler. None when answered; else a `receive`
        giving again what was read, for the stack below (a body over the limit, a
        disconnect, or a request the route leaves to FastAPI: the answer is then the one
        FastAPI always gave)."""
        messages: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return _replaying(messages, receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return _replaying(messages, receive)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            document = json_body.loads(b"".join(chunks))
        except Exception:  # noqa: BLE001 - refused: FastAPI's handler gives its problem
            return _replaying(messages, receive)
        scope.update(route.direct_scope)  # as the router's match would set it
        request = Request(scope, _replaying(messages, receive))
        status = 500  # unless answered: an error no handler takes is ServerErrorMiddleware's
        answered = True
        try:
            try:
                response = await route.answer_well_formed(request, document)
            except Exception as exc:  # noqa: BLE001 - to the handlers, as ExceptionMiddleware
                response = await self._handled(request, exc)
            if response is None:
                answered = False
                return _replaying(messages, receive)
            response.raw_headers.append(trace_header)
            status = response.status_code
            await response(scope, request.receive, send)
        finally:
            if answered:
                self._record(scope, status, started)
        return None

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The response of the handler ExceptionMiddleware would give `exc` to; `exc`
        raised again when it has none (ServerErrorMiddleware answers it with a 500)."""
        handler = None
        if isinstance(exc, HTTPException):
            handler = self._status_handlers.get(exc.status_code)
        if handler is None:
            for cls in type(exc).__mro__:
                if cls in self._exception_handlers:
                    handler = self._exception_handlers[cls]
                    break
        if handler is None:
            raise exc
        on_http = cast("HTTPExceptionHandler", handler)  # an HTTP request's handler
        if is_async_callable(on_http):
            response = await on_http(request, exc)
        else:
            response = await run_in_threadpool(on_http, request, exc)
        exc.__traceback__ = None  # as Starlette: a reused instance gathers tracebacks
        assert isinstance(response, Response)
        return response

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _problem(scope, receive, send, _BodyTooLarge(self.max_body))

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        route_path = getattr(route, "path", "unmatched")
        method = scope.get("method", "")
        path = scope.get("path", "")
        if path not in ("/healthz", "/readyz", "/metrics"):
            self._log.info(f"{printable(method)} {printable(path)} {status} {elapsed * 1000:.1f}ms")
        key = (method, route_path, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.metrics.requests.labels(self.service, method, route_path, str(status)),
                self.metrics.latency.labels(self.service, method, route_path),
            )
        series[0].inc()
        series[1].observe(elapsed)


class _BodyTooLarge(RequestRefused):
    """Raised from `receive` once a (chunked) body passes the limit. As an HTTPException it
    gets through FastAPI's body parsing to the problem handlers, where any other error would
    become a 400."""

    def __init__(self, max_body: int) -> None:
        super().__init__(
            413,
            "Payload too large",
            f"request bodies are limited to {max_body} bytes",
            problem_type="payload-too-large",
        )


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` giving `messages` again, then what `receive` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    return (
        "\x00" in scope.get("path", "")
        or b"%00" in query
        or b"\x00" in query
        # Every raw header, not the dict above: of repeated names it keeps only the last,
        # while Starlette's Headers.get answers the first.
        or any(b"\x00" in value for _, value in scope["headers"])
    )


async def _problem(scope: Scope, receive: Receive, send: Send, refused: RequestRefused) -> None:
    """Answer outside FastAPI (before routing), the same document its handlers would give."""
    response = JSONResponse(
        {
            "type": f"/problems/{refused.problem_type}",
            "title": refused.title,
            "status": refused.status_code,
            "detail": refused.detail,
            "instance": printable(scope.get("path", "")),
        },
        status_code=refused.status_code,
        media_type=PROBLEM_CONTENT_TYPE,
    )
    await response(scope, receive, send)


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = json_body.loads(await self.body())
            except json_body.JsonBodyError as exc:
                raise RequestRefused(
                    exc.status, exc.title, exc.detail, problem_type=exc.problem_type
                ) from exc
        return self._json


class StrictJsonRoute(APIRoute):
    """The route class of every service router (`APIRouter(route_class=StrictJsonRoute)`):
    JSON bodies are parsed by billing_common.json_body, which refuses duplicate keys, NUL
    characters, lone surrogates and nesting the parser cannot follow, as problems."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


class DirectJsonRoute(StrictJsonRoute):
    """A hot route answered by RequestContextMiddleware itself when the request is well
    formed (`answer_well_formed`), before Starlette's exception middleware, its router and
    FastAPI's request handler (dependencies, body field, response check): in-process, ~35
    of the ~185 µs of a tax calculation with its use case stubbed.

    Only a request sent as `application/json` whose body billing_common.json_body parses is
    answered directly. `answer_well_formed` gets the request and the parsed body; it returns
    None for anything it does not answer (a token or a document it refuses), with nothing
    done, and the request then takes the usual way with its body given again, so every
    refusal is the problem FastAPI's handler gives. What it raises once it answers goes to
    the app's exception handlers, as from any endpoint. The route stays a FastAPI route for
    that fallback and for the OpenAPI document. Only a path without parameters, not
    shadowed by an earlier route, is answered directly (`_direct_routes`)."""

    @property
    def direct_scope(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "path_params": {}, "route": self}

    async def answer_well_formed(self, request: Request, document: Any) -> Response | None:
        return None


def first_header(request: Request, name: bytes) -> str | None:
    """A header's value as FastAPI's Header() reads it (Starlette's Headers.get: the first
    raw header of that lower-case name; ASGI servers give lower-case names), for a
    DirectJsonRoute that must see the same value its FastAPI handler would."""
    for raw_name, value in request.scope["headers"]:
        if raw_name == name:
            return str(value.decode("latin-1"))
    return None


async def accepted(
    request: Request,
    document: Any,
    authorise: Callable[[Request], Awaitable[PrincipalT]],
    schema: type[ModelT],
) -> tuple[PrincipalT, ModelT] | None:
    """For a DirectJsonRoute: the principal `authorise` finds and `document` as `schema`, or
    None when either refuses (nothing done: FastAPI's handler then gives the problem)."""
    try:
        principal = await authorise(request)
    except Exception:  # noqa: BLE001 - refused: FastAPI's handler raises it again
        return None
    try:
        return principal, schema.model_validate(document)
    except ValidationError:
        return None


def _direct_routes(routes: Sequence[BaseRoute]) -> dict[tuple[str, str], DirectJsonRoute]:
    """(method, path) -> its DirectJsonRoute, for the paths without parameters that no
    earlier route matches: those the router would hand to it."""
    direct: dict[tuple[str, str], DirectJsonRoute] = {}
    for index, route in enumerate(routes):
        if not isinstance(route, DirectJsonRoute) or route.param_convertors:
            continue
        for method in route.methods or ():
            probe = {"type": "http", "path": route.path, "root_path": "", "method": method}
            earlier = (other.matches(probe)[0] for other in routes[:index])
            if all(match is not Match.FULL for match in earlier):
                direct[(method, route.path)] = route
    return direct


class _ServiceApp(FastAPI):
    """FastAPI with the middleware stack the services need and nothing that does no work.

    FastAPI wraps every request in ServerErrorMiddleware, its OpenTelemetry exception
    observer, its body-limit middleware, the user middleware, ExceptionMiddleware and an
    AsyncExitStackMiddleware: each a coroutine (some with a `send` wrapper) per request.
    Here the telemetry is off (the services configure no OpenTelemetry; RequestContext-
    Middleware does the logs, metrics and trace context), the body limit is ours (FastAPI's
    only acts with `max_body_size`, never set), and the exit stack is opened by
    RequestContextMiddleware, the innermost user middleware. The rest is as FastAPI builds
    it: the 500 handler outermost, the exception handlers inside the user middleware."""

    def build_middleware_stack(self) -> ASGIApp:
        error_handler = None
        exception_handlers: dict[Any, Any] = {}
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                error_handler = value
            else:
                exception_handlers[key] = value
        exceptions = ExceptionMiddleware(self.router, handlers=exception_handlers, debug=self.debug)
        app: ASGIApp = exceptions
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
            if isinstance(app, RequestContextMiddleware) and not self.debug:
                app.answer_directly(_direct_routes(self.router.routes), exceptions)
        return ServerErrorMiddleware(app, handler=error_handler, debug=self.debug)


# FastAPI's native OpenTelemetry off: without it FastAPI asks the three global providers on
# every request whether they are configured.
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    version: str,
    routers: Sequence[APIRouter],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    domain_errors: dict[type[Exception], int],
    readiness_checks: Callable[[FastAPI], Sequence[ReadinessCheck]],
    max_body_bytes: int = 1_048_576,
    openapi_tags: list[dict[str, Any]] | None = None,
) -> FastAPI:
    app = _ServiceApp(
        telemetry=_NO_TELEMETRY,
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        openapi_tags=openapi_tags,
    )
    metrics = ServiceMetrics(service)
    app.state.metrics = metrics
    app.state.service_name = service
    install_problem_handlers(app, domain_errors)
    install_database_problem_handler(app)
    app.add_middleware(
        RequestContextMiddleware, service=service, metrics=metrics, max_body=max_body_bytes
    )

    @app.get("/healthz", tags=["operations"], summary="Liveness: the process is serving")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["operations"], summary="Readiness: dependencies reachable")
    async def readyz(request: Request) -> Response:
        failures: dict[str, str] = {}
        for check in readiness_checks(request.app):
            try:
                await check()
            except Exception as exc:  # noqa: BLE001 - report every failing dependency
                failures[getattr(check, "__name__", "check")] = str(exc) or type(exc).__name__
        if failures:
            return JSONResponse(
                {
                    "type": "/problems/not-ready",
                    "title": "Not ready",
                    "status": 503,
                    "failures": failures,
                },
                status_code=503,
                media_type=PROBLEM_CONTENT_TYPE,
            )
        return JSONResponse({"status": "ready", "service": service})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        lenient = [
            route.path
            for route in router.routes
            if isinstance(route, APIRoute) and not isinstance(route, StrictJsonRoute)
        ]
        if lenient:
            raise TypeError(
                f"routes {lenient} parse JSON leniently: create their router with "
                "APIRouter(route_class=StrictJsonRoute)"
            )
        _add_routes(app, router)
    install_contract(app)
    return app


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add `router`'s routes to the app's own router, as FastAPI < 0.130 did on include.

    `include_router` now appends one lazy `_IncludedRouter` that re-matches its routes on
    every request (the app's router matches, then the include matches again) and exposes
    no `methods`, so a 405 could not name the allowed ones. Service routers carry no
    lifespan, startup or shutdown handler of their own (checked), and their prefix, tags
    and dependencies are already in each route, so re-adding the routes loses nothing;
    the app's router becomes their `dependency_overrides_provider`, as on include."""
    if router.on_startup or router.on_shutdown:
        raise TypeError("service routers must not carry startup or shutdown handlers")
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"service routers hold API routes only, not {route!r}")
        app.router.add_api_route(
            route.path,
            route.endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=list(route.tags),
            dependencies=list(route.dependencies),
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=dict(route.responses),
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            route_class_override=type(route),
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            generate_unique_id_function=route.generate_unique_id_function,
            strict_content_type=route.strict_content_type,
            max_body_size=route.max_body_size,
            form_limits=route.form_limits,
        )


def model_response(model: BaseModel, *, status_code: int = 200) -> Response:
    """`model` as a JSON response, serialised once by pydantic's Rust core.

    Returning a model from a route with a `response_model` makes FastAPI validate it again
    and serialise it through `jsonable_encoder`: on a hot endpoint that costs more than the
    route's own work. A route that returns this keeps its `response_model` for the OpenAPI
    schema; the body is byte-for-byte what FastAPI would have sent for the same model (the
    same aliases and `None` handling: FastAPI's defaults)."""
    return Response(
        model.model_dump_json(by_alias=True),
        status_code=status_code,
        media_type="application/json",
    )
