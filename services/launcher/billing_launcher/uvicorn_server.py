"""uvicorn's `Config` and `Server` without its command line.

uvicorn's package `__init__` imports `uvicorn.main`: click and the reload and multiprocess
supervisors, which import watchfiles. A service process started by the launcher never runs any
of it, yet it cost ~1.8 MB of resident memory in each (issue 11, RSS). So the package module is
created from its spec without running `__init__`, and only `uvicorn.config` and
`uvicorn.server` are imported into it. The rest of the package's namespace (`uvicorn.run`,
`uvicorn.main`, `__version__`) is still there for whoever asks: the first such attribute runs
the real `__init__` on the same module (PEP 562 `__getattr__`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any


def _package_without_cli() -> None:
    if "uvicorn" in sys.modules:  # imported already (uvicorn's CLI, a test): nothing to save
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None:  # pragma: no cover - uvicorn is a dependency
        raise ImportError("uvicorn is not installed")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:
        # Once only: the real __init__ defines every public name, so a name still missing
        # after it is missing for good.
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = __getattr__
    sys.modules["uvicorn"] = package
    config: ModuleType = importlib.import_module("uvicorn.config")
    server: ModuleType = importlib.import_module("uvicorn.server")
    # `from uvicorn import Config` (uvicorn's lifespan modules) must not need the real __init__.
    package.__dict__.update(Config=config.Config, Server=server.Server)


_package_without_cli()

from uvicorn.config import Config  # noqa: E402 - after the package module above exists
from uvicorn.server import Server  # noqa: E402

__all__ = ["Config", "Server"]
