"""FastAPI dependency aliases of the discount routes: the use cases' Dependencies (built by
bootstrap.py in the lifespan) and the caller's Principal checked for each scope. Routes
take these and never read app.state themselves."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billing_common.api_auth import requires
from billing_common.auth import Principal
from discount_service.service_layer.dependencies import Dependencies


async def _dependencies(request: Request) -> Dependencies:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off per
    # request (~7 % of a tax calculation's CPU in the profile) for an attribute read.
    deps: Dependencies = request.app.state.deps
    return deps


Deps = Annotated[Dependencies, Depends(_dependencies)]
Reader = Annotated[Principal, Depends(requires("discount:read"))]
Admin = Annotated[Principal, Depends(requires("discount:admin"))]
Quoter = Annotated[Principal, Depends(requires("discount:quote"))]
Redeemer = Annotated[Principal, Depends(requires("discount:redeem"))]
