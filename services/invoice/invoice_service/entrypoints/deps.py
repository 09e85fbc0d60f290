"""FastAPI dependencies of the routes, as `Annotated` aliases: what bootstrap wired (`Deps`,
`Documents`) and who is asking (`Reader`, `Writer`: principals holding the scope). Routes
take these and never read `request.app.state` themselves."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from billing_common.api_auth import requires
from billing_common.auth import Principal
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.documents import DocumentServices


def _dependencies(request: Request) -> Dependencies:
    deps: Dependencies = request.app.state.deps
    return deps


def _documents(request: Request) -> DocumentServices:
    documents: DocumentServices = request.app.state.documents
    return documents


Deps = Annotated[Dependencies, Depends(_dependencies)]
Documents = Annotated[DocumentServices, Depends(_documents)]

Reader = Annotated[Principal, Depends(requires("invoice:read"))]
Writer = Annotated[Principal, Depends(requires("invoice:write"))]
Admin = Annotated[Principal, Depends(requires("invoice:admin"))]
