"""Run a probe against a service's direct-runtime app in a fresh interpreter (nothing the
test process imported leaks into what the probe sees). The probe script starts with
`APP_PREAMBLE`, which builds the app as `app`, and prints one JSON value as its last line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

APP_PREAMBLE = """
import json, sys
from billing_common.settings import ServiceSettings
from billing_launcher.registry import app_factory
settings = ServiceSettings.for_service(
    sys.argv[1], runtime="direct", database_url="postgresql+asyncpg://u@127.0.0.1:1/x",
    amqp_url="amqp://guest:guest@127.0.0.1:1/", migrate_on_start=False, secrets_file=None,
)
app = app_factory(sys.argv[1])(settings, None)
"""


def probe_app(service: str, probe: str) -> Any:
    """The JSON value the probe (after the preamble) printed last for `service`."""
    done = subprocess.run(
        [sys.executable, "-c", probe, service],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout.splitlines()[-1])
