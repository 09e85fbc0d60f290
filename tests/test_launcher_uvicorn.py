"""The launcher imports uvicorn's server without the package's `__init__` (which imports its
command line, see billing_launcher.uvicorn_server); the rest of uvicorn's namespace must still
be there for whoever asks, loaded then. Each check runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(script: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    answer: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return answer


def test_the_server_and_its_config_come_without_the_command_line() -> None:
    answer = _run(
        """
import json, sys
import billing_launcher.servers
import uvicorn
from uvicorn import Config, Server
import uvicorn.lifespan.on
print(json.dumps({
    "same": Config is billing_launcher.servers.Config and Server is uvicorn.server.Server,
    "cli": "uvicorn.main" in sys.modules or "click" in sys.modules,
}))
"""
    )
    assert answer == {"same": True, "cli": False}


def test_the_rest_of_the_package_loads_when_asked_for() -> None:
    answer = _run(
        """
import json, sys
import billing_launcher.servers
import uvicorn
version = uvicorn.__version__
from uvicorn import run
from importlib.metadata import version as installed
print(json.dumps({
    "version": version == installed("uvicorn"),
    "run": run is sys.modules["uvicorn.main"].run,
    "missing": hasattr(uvicorn, "no_such_name"),
}))
"""
    )
    assert answer == {"version": True, "run": True, "missing": False}


def test_a_uvicorn_imported_before_the_launcher_is_left_as_it_is() -> None:
    answer = _run(
        """
import json, sys
import uvicorn
import billing_launcher.servers
print(json.dumps({"real": uvicorn.run is sys.modules["uvicorn.main"].run,
                  "same": billing_launcher.servers.Server is uvicorn.Server}))
"""
    )
    assert answer == {"real": True, "same": True}
