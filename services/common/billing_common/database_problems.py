"""The problem a service answers while its database is unavailable: 503 with Retry-After,
never a 500, so that clients (and their retry policies) know to send the request again."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from loguru import logger

from billing_common.db import DatabaseUnavailable
from billing_common.problems import problem_response

# About how long PostgreSQL takes to come back from a restart or a failover.
RETRY_AFTER_SECONDS = 2


def install_database_problem_handler(app: FastAPI) -> None:
    async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable on {} {}: {}", request.method, request.url.path, exc)
        return problem_response(
            request,
            503,
            "Service unavailable",
            "the database is unavailable right now; send the same request again shortly",
            problem_type="database-unavailable",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    app.add_exception_handler(DatabaseUnavailable, on_database_unavailable)
