"""FastAPI dependencies of the payment routes: the use cases' Dependencies (built once by
bootstrap.py) and the principals each route requires."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billing_common.api_auth import requires
from billing_common.auth import Principal
from payment_service.service_layer.dependencies import Dependencies


async def _dependencies(request: Request) -> Dependencies:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off
    # per request for an attribute read.
    deps: Dependencies = request.app.state.deps
    return deps


Deps = Annotated[Dependencies, Depends(_dependencies)]
Reader = Annotated[Principal, Depends(requires("payment:read"))]
Writer = Annotated[Principal, Depends(requires("payment:write"))]
Refunder = Annotated[Principal, Depends(requires("payment:refund"))]
