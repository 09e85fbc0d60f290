"""Several uvicorn servers in one event loop, stopped together on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from billing_launcher.uvicorn_server import Config, Server

T = TypeVar("T")


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run the servers' top-level coroutine on uvloop when it is installed (uvicorn[standard]
    brings it). uvicorn chooses its event loop only in `Server.run`; `serve_all` awaits
    `Server.serve` on whatever loop runs it, which with `asyncio.run` is the stdlib's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


class _QuietServer(Server):
    """The launcher owns signal handling; each server must not install its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(
    app: Any,
    host: str,
    port: int,
    *,
    workers_log: bool = False,
    graceful_shutdown_seconds: float = 10.0,
) -> Server:
    """On SIGTERM the server stops accepting, lets requests in flight finish for at most
    `graceful_shutdown_seconds` (then cancels them), and only then runs the lifespan's
    shutdown (relay flush, consumers, database). Without the bound one hung request would
    keep the lifespan from ever closing before Kubernetes' SIGKILL."""
    config = Config(
        app,
        host=host,
        port=port,
        log_config=None,  # loguru owns logging
        access_log=workers_log,
        lifespan="on",
        loop="auto",
        http="auto",
        # No service serves WebSockets; "auto" would import the websockets package (and
        # uvicorn's protocol for it) into every service process for nothing.
        ws="none",
        server_header=False,
        timeout_graceful_shutdown=max(1, round(graceful_shutdown_seconds)),
    )
    return _QuietServer(config)


def _freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, the apps, their routes and models, pools) out of
    the cyclic collector's reach: it lives as long as the process, yet every full collection
    under load walked all of it again (~150,000 objects per service; the collections were
    a visible share of a request's CPU in the profile). Collected once first, so the garbage
    of start-up is not kept."""
    gc.collect()
    gc.freeze()


async def serve_all(servers: list[Server], on_started: Any = None) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    while not all(server.started for server in servers):
        if any(task.done() for task in tasks):
            stop()
            break
        await asyncio.sleep(0.05)
    else:
        _freeze_startup_heap()
        if on_started is not None:
            on_started()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise failed[0]
    if not all(server.started for server in servers):
        raise SystemExit("a service failed to start; see the log above")
