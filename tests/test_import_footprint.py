"""What a service's API process imports before its first request (issue 11, RSS): Alembic
(about 13 MB with the SQLAlchemy dialects and Mako it loads), httpx with click and rich, the
Stripe SDK (about 11 MB), and uvicorn's command line (click, watchfiles: about 1.8 MB) and
WebSocket protocol (websockets) stay out of it. Each check runs in a fresh interpreter."""

from __future__ import annotations

import pytest

from tests.app_probes import APP_PREAMBLE, probe_app

KEPT_OUT = (
    "alembic",
    "mako",
    "httpx",
    "rich",
    "stripe",
    "weasyprint",
    "click",
    "watchfiles",
    "websockets",
    "wsproto",
)

# The invoice service needs these for documents, e-invoices and seller checks only, not to
# create an invoice: Jinja2 with MarkupSafe and babel (about 4.5 MB), schwifty, python-stdnum
# and pycountry (about 1 MB), the e-invoice and PDF libraries (lxml, factur-x, pypdf, pikepdf,
# drafthorse). Loaded on first use; the PDFs themselves are rendered in worker processes.
KEPT_OUT_OF_INVOICE = (
    *KEPT_OUT,
    "jinja2",
    "markupsafe",
    "babel",
    "schwifty",
    "stdnum",
    "pycountry",
    "lxml",
    "facturx",
    "pypdf",
    "pikepdf",
    "drafthorse",
)

PROBE = (
    "import billing_launcher.__main__\n"
    + APP_PREAMBLE
    + """
from billing_common.runtime import select_adapters
select_adapters(settings)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
)

# As PROBE, and the app's server configured as the launcher's `serve` configures it (the
# protocols uvicorn imports when it loads its config, before it listens).
SERVED_PROBE = (
    "import billing_launcher.__main__\n"
    + APP_PREAMBLE
    + """
from billing_launcher.servers import make_server
make_server(app, "127.0.0.1", 0).config.load()
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
)

# As PROBE, and the invoice service's wiring too (what its lifespan builds before the first
# request: the document renderers, the e-invoice writer), on a context that opens nothing.
INVOICE_WIRED_PROBE = (
    "import billing_launcher.__main__\n"
    + APP_PREAMBLE
    + """
import asyncio
from contextlib import AsyncExitStack
from types import SimpleNamespace
from starlette.datastructures import State
from billing_common.lifecycle import Wiring
from billing_common.runtime import select_adapters
from invoice_service.bootstrap import service_spec
select_adapters(settings)
from sqlalchemy.ext.asyncio import create_async_engine
# The service's engine as wired (nothing answers there: the settlement lane's warm-up logs it).
engine = create_async_engine(settings.database_url)
ctx = SimpleNamespace(
    sessions=None, relay=None, invoker=None, tokens=None, state=State(), engine=engine
)
asyncio.run(service_spec().wire(Wiring(ctx=ctx, state=State(), _closing=AsyncExitStack())))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
)


@pytest.mark.parametrize("service", ["tax", "discount", "invoice", "payment"])
def test_the_direct_runtime_app_does_not_import_what_it_does_not_use(service: str) -> None:
    loaded = set(probe_app(service, PROBE))
    assert loaded.isdisjoint(KEPT_OUT), sorted(loaded & set(KEPT_OUT))


@pytest.mark.parametrize("service", ["tax", "invoice"])
def test_the_served_app_does_not_import_what_it_does_not_use(service: str) -> None:
    loaded = set(probe_app(service, SERVED_PROBE))
    assert "uvicorn" in loaded  # the probe did load the server
    assert loaded.isdisjoint(KEPT_OUT), sorted(loaded & set(KEPT_OUT))


@pytest.mark.parametrize("probe", [PROBE, INVOICE_WIRED_PROBE], ids=["created", "wired"])
def test_the_invoice_app_loads_document_libraries_on_first_use(probe: str) -> None:
    loaded = set(probe_app("invoice", probe))
    assert loaded.isdisjoint(KEPT_OUT_OF_INVOICE), sorted(loaded & set(KEPT_OUT_OF_INVOICE))
