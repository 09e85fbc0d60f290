"""What a service's API process imports before its first request (issue 11, RSS): Alembic
(about 13 MB with the SQLAlchemy dialects and Mako it loads), httpx with click and rich, and
the Stripe SDK (about 11 MB) stay out of it. Each check runs in a fresh interpreter."""

from __future__ import annotations

import pytest

from tests.app_probes import APP_PREAMBLE, probe_app

KEPT_OUT = ("alembic", "mako", "httpx", "rich", "stripe", "weasyprint")

PROBE = (
    "import billing_launcher.__main__\n"
    + APP_PREAMBLE
    + """
from billing_common.runtime import select_adapters
select_adapters(settings)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""
)


@pytest.mark.parametrize("service", ["tax", "discount", "invoice", "payment"])
def test_the_direct_runtime_app_does_not_import_what_it_does_not_use(service: str) -> None:
    loaded = set(probe_app(service, PROBE))
    assert loaded.isdisjoint(KEPT_OUT), sorted(loaded & set(KEPT_OUT))
