"""Every domain error says its own HTTP status (billing_common.errors.DomainError), which the
kernel's problem handler answers with. Where a bootstrap still lists an error -> status map,
it must agree with the classes, so that the map can go without changing any answer."""

from __future__ import annotations

import importlib
import inspect

import pytest

from billing_common.errors import DomainError

SERVICES = ["tax", "discount", "invoice", "payment"]


@pytest.mark.parametrize("service", SERVICES)
def test_every_domain_error_is_a_kernel_domain_error(service: str) -> None:
    errors = importlib.import_module(f"{service}_service.domain.errors")
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == errors.__name__
    ]
    assert classes and all(issubclass(cls, DomainError) for cls in classes)


@pytest.mark.parametrize("service", SERVICES)
def test_the_bootstrap_map_agrees_with_the_classes(service: str) -> None:
    bootstrap = importlib.import_module(f"{service}_service.bootstrap")
    mapped = getattr(bootstrap, "DOMAIN_ERRORS", {})
    disagree = {
        cls.__name__: (status, cls.status)
        for cls, status in mapped.items()
        if issubclass(cls, DomainError) and cls.status != status
    }
    assert disagree == {}
