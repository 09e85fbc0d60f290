"""The FastAPI dependencies of the tax routes, as `Annotated` aliases: the use cases'
Dependencies (built by bootstrap) and the principals with their scopes. The only module
of the entrypoints that reads `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billing_common.api_auth import requires
from billing_common.auth import Principal
from tax_service.service_layer.dependencies import Dependencies


def _dependencies(request: Request) -> Dependencies:
    deps: Dependencies = request.app.state.deps
    return deps


Deps = Annotated[Dependencies, Depends(_dependencies)]
Reader = Annotated[Principal, Depends(requires("tax:read"))]
Calculator = Annotated[Principal, Depends(requires("tax:calculate"))]
Admin = Annotated[Principal, Depends(requires("tax:admin"))]
