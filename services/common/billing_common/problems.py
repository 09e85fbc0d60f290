"""RFC 9457 problem details: every error leaves a service as application/problem+json."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from billing_common.auth import AuthError, ScopeError
from billing_common.errors import DomainError, slug, title_of
from billing_common.logs import printable
from billing_common.money import MoneyError
from billing_common.ports import PeerUnavailable
from billing_common.tracing import current_trace_id
from billing_common.uniqueness import UniqueViolation

PROBLEM_CONTENT_TYPE = "application/problem+json"
# The members RFC 9457 defines; an extension never replaces one of them.
RFC_9457_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


class Problem(Exception):
    """Raise from an endpoint to answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        /,
        *,
        problem_type: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.problem_type = problem_type or slug(title.replace(" ", ""))
        self.extensions = extensions


class RequestRefused(StarletteHTTPException):
    """A problem found while the request body is read or parsed. FastAPI passes an
    HTTPException raised there on to the handlers and turns any other error into a bare 400,
    so this is one, carrying its problem type."""

    def __init__(self, status: int, title: str, detail: str, *, problem_type: str) -> None:
        super().__init__(status_code=status, detail=detail)
        self.title = title
        self.problem_type = problem_type


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str | None = None,
    /,
    *,
    problem_type: str = "about:blank",
    headers: dict[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
    **more_extensions: Any,
) -> JSONResponse:
    """A problem document. Extensions (from `extensions` and keyword arguments) add members;
    one named like an RFC 9457 member (a domain error's `status="pending"`, say) is left out
    rather than allowed to replace it."""
    body: dict[str, Any] = {
        "type": problem_type if problem_type == "about:blank" else f"/problems/{problem_type}",
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    trace_id = current_trace_id()
    if trace_id:
        body["trace_id"] = trace_id
    for members in (extensions or {}), more_extensions:
        for name, value in members.items():
            if name not in RFC_9457_MEMBERS:
                body[name] = value
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def _allowed_methods(request: Request) -> str:
    """The methods of the resource the path names. Several templates can match one path
    (`/redemptions/{id}` and `/redemptions/releases`); the resource is the most specific,
    the one with the fewest path parameters, as a client reading the OpenAPI document sees
    it, whatever order the routes were declared in."""
    by_template: dict[str, set[str]] = {}
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            template = str(getattr(route, "path", ""))
            methods = by_template.setdefault(template, set())
            methods |= set(getattr(route, "methods", None) or ())
    if not by_template:
        return ""
    resource = min(by_template, key=lambda template: template.count("{"))
    return ", ".join(sorted(by_template[resource]))


def install_problem_handlers(
    app: FastAPI, domain_errors: Mapping[type[Exception], int] | None = None
) -> None:
    """Map framework errors and domain exceptions to problem responses. Every DomainError
    (billing_common.errors) answers with its own status, type and title; `domain_errors`
    maps other exception classes (or overrides a DomainError's status) to an HTTP status,
    the class name naming the type."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(
            request,
            exc.status,
            exc.title,
            exc.detail,
            problem_type=exc.problem_type,
            extensions=exc.extensions,
        )

    async def on_refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestRefused)
        return problem_response(
            request, exc.status_code, exc.title, str(exc.detail), problem_type=exc.problem_type
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        if any(e["type"] == "json_invalid" for e in errors):
            return problem_response(
                request,
                400,
                "Malformed JSON",
                "the request body is not valid JSON",
                problem_type="malformed-json",
                errors=errors,
            )
        return problem_response(
            request,
            422,
            "Validation failed",
            "the request does not match the schema",
            problem_type="validation",
            errors=errors,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; the path's
            # other routes (GET and POST on one collection) are allowed too.
            headers["Allow"] = _allowed_methods(request)
        return problem_response(request, exc.status_code, str(exc.detail), headers=headers)

    async def on_auth(request: Request, exc: Exception) -> JSONResponse:
        return problem_response(
            request,
            401,
            "Unauthorized",
            str(exc),
            problem_type="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="billing"'},
        )

    async def on_scope(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ScopeError)
        return problem_response(
            request,
            403,
            "Forbidden",
            str(exc),
            problem_type="insufficient-scope",
            required_scope=exc.needed,
            headers={
                "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{exc.needed}"'
            },
        )

    async def on_peer(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PeerUnavailable)
        logger.warning("peer unavailable: {}", exc)
        return problem_response(
            request,
            503,
            "Service unavailable",
            str(exc),
            problem_type="peer-unavailable",
            peer=exc.app_id,
            headers={"Retry-After": "2"},
        )

    async def on_unhandled(request: Request, exc: Exception) -> JSONResponse:
        logger.opt(exception=exc).error(
            "unhandled error on {} {}", printable(request.method), printable(request.url.path)
        )
        return problem_response(request, 500, "Internal error", "an unexpected error occurred")

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestRefused, on_refused)
    app.add_exception_handler(AuthError, on_auth)
    app.add_exception_handler(ScopeError, on_scope)
    app.add_exception_handler(PeerUnavailable, on_peer)
    app.add_exception_handler(Exception, on_unhandled)

    def domain_handler(status: int | None) -> Any:
        """A DomainError says its own status, type and title; another exception class of the
        map (or a class listed with another status) answers with the map's status under a
        type named after the class."""

        async def handler(request: Request, exc: Exception) -> JSONResponse:
            name = type(exc).__name__
            if isinstance(exc, DomainError):
                answer, title, problem_type = exc.status, exc.problem_title(), exc.type_slug()
            else:
                answer, title, problem_type = 422, title_of(name), slug(name)
            # A domain error may say when a retry can succeed (e.g. a busy renderer).
            retry_after = getattr(exc, "retry_after_seconds", None)
            return problem_response(
                request,
                status or answer,
                title,
                str(exc),
                problem_type=problem_type,
                headers=None if retry_after is None else {"Retry-After": str(retry_after)},
                extensions=getattr(exc, "problem_extensions", None),
            )

        return handler

    app.add_exception_handler(DomainError, domain_handler(None))
    # A unique violation no use case answered is still a lost race, not a server fault.
    statuses: dict[type[Exception], int] = {
        MoneyError: 422,
        UniqueViolation: 409,
        **(domain_errors or {}),
    }
    for exc_class, status in statuses.items():
        app.add_exception_handler(exc_class, domain_handler(status))
