"""The FastAPI dependencies of the tax routes, as `Annotated` aliases: the use cases'
Dependencies (built by bootstrap) and the principals with their scopes. The only module
of the entrypoints that reads `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billing_common.api_auth import requires
from billing_common.auth import Principal
from tax_service.service_layer.dependencies import Dependencies


def dependencies_of(request: Request) -> Dependencies:
    """The use cases' Dependencies, for a route that takes the Request instead of `Deps`."""
    deps: Dependencies = request.app.state.deps
    return deps


async def _dependencies(request: Request) -> Dependencies:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hand-off per
    # request (~7 % of a tax calculation's CPU in the profile) for an attribute read.
    return dependencies_of(request)


Deps = Annotated[Dependencies, Depends(_dependencies)]
Reader = Annotated[Principal, Depends(requires("tax:read"))]
Calculator = Annotated[Principal, Depends(requires("tax:calculate"))]
Admin = Annotated[Principal, Depends(requires("tax:admin"))]
