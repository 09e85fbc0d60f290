"""No route of a service's API resolves a plain `def` dependency: FastAPI runs those in its
thread pool, a thread hand-off on every request for what is an attribute read (issue 11;
~2-7 % of a hot path's CPU in the profiles). Each check builds the app in a fresh
interpreter, as the direct runtime does."""

from __future__ import annotations

import pytest

from tests.app_probes import APP_PREAMBLE, probe_app

PROBE = (
    APP_PREAMBLE
    + """
import inspect
from fastapi.routing import APIRoute

def is_async(call):
    if inspect.isclass(call):
        return inspect.iscoroutinefunction(getattr(call, "__call__", None))
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)
    )

sync = set()
def walk(dependant, path):
    for sub in dependant.dependencies:
        if sub.call is not None and not is_async(sub.call):
            sync.add(f"{path}: {getattr(sub.call, '__qualname__', sub.call)!r}")
        walk(sub, path)

def routes(container):
    for route in container:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # FastAPI's lazily included router
            yield from routes(route.original_router.routes)

found = list(routes(app.routes))
assert len(found) > 5, found  # the service's own routes were reached
for route in found:
    walk(route.dependant, route.path)
print(json.dumps(sorted(sync)))
"""
)


@pytest.mark.parametrize("service", ["tax", "discount", "invoice", "payment"])
def test_every_route_dependency_runs_on_the_event_loop(service: str) -> None:
    found = probe_app(service, PROBE)
    assert found == [], found
