"""The services of the platform and how to load their composition roots by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import DEFAULT_PORTS, ServiceSettings

SERVICES: tuple[str, ...] = ("tax", "discount", "invoice", "payment")

AppFactory = Callable[[ServiceSettings | None, EmbeddedPlatform | None], Any]


def bootstrap_module(name: str) -> Any:
    if name not in SERVICES:
        raise SystemExit(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
    return importlib.import_module(f"{name}_service.bootstrap")


def app_factory(name: str) -> AppFactory:
    factory: AppFactory = bootstrap_module(name).create_app
    return factory


def migrations_dir(name: str) -> Path:
    module = bootstrap_module(name)
    path: Path = module.MIGRATIONS_DIR
    return path


def port_of(name: str) -> int:
    return DEFAULT_PORTS[name]
