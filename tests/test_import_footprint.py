"""What a service's API process imports before its first request (issue 11, RSS): Alembic
(about 13 MB with the SQLAlchemy dialects and Mako it loads), httpx with click and rich, and
the Stripe SDK (about 11 MB) stay out of it. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEPT_OUT = ("alembic", "mako", "httpx", "rich", "stripe", "weasyprint")

PROBE = """
import json, sys
import billing_launcher.__main__
from billing_common.runtime import select_adapters
from billing_common.settings import ServiceSettings
from billing_launcher.registry import app_factory
settings = ServiceSettings.for_service(
    sys.argv[1], runtime="direct", database_url="postgresql+asyncpg://u@127.0.0.1:1/x",
    amqp_url="amqp://guest:guest@127.0.0.1:1/", migrate_on_start=False, secrets_file=None,
)
app_factory(sys.argv[1])(settings, None)
select_adapters(settings)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("service", ["tax", "discount", "invoice", "payment"])
def test_the_direct_runtime_app_does_not_import_what_it_does_not_use(service: str) -> None:
    loaded = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", PROBE, service],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout.splitlines()[-1]
        )
    )
    assert loaded.isdisjoint(KEPT_OUT), sorted(loaded & set(KEPT_OUT))
