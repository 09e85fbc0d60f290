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
from invoice_service.service_layer.einvoices import EInvoiceWriter
from invoice_service.service_layer.ports import CreditNoteHtml

# The providers are `async def`: FastAPI runs a plain `def` dependency in its thread pool,
# a thread hop on every request for a read of app.state.


async def _dependencies(request: Request) -> Dependencies:
    deps: Dependencies = request.app.state.deps
    return deps


async def _documents(request: Request) -> DocumentServices:
    documents: DocumentServices = request.app.state.documents
    return documents


async def _credit_note_html(request: Request) -> CreditNoteHtml:
    html: CreditNoteHtml = request.app.state.credit_note_html
    return html


async def _einvoice_writer(request: Request) -> EInvoiceWriter:
    writer: EInvoiceWriter = request.app.state.einvoice_writer
    return writer


Deps = Annotated[Dependencies, Depends(_dependencies)]
Documents = Annotated[DocumentServices, Depends(_documents)]
CreditNoteDocuments = Annotated[CreditNoteHtml, Depends(_credit_note_html)]
EInvoices = Annotated[EInvoiceWriter, Depends(_einvoice_writer)]

Reader = Annotated[Principal, Depends(requires("invoice:read"))]
Writer = Annotated[Principal, Depends(requires("invoice:write"))]
Admin = Annotated[Principal, Depends(requires("invoice:admin"))]
