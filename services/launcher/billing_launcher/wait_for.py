"""`billing wait-for ENV_NAME ...`: wait until the servers named by URLs in the environment
accept TCP connections (a Kubernetes init container runs it before migrations and sidecars).

Only reachability: the server's own protocol (authentication, the database existing) is the
next step's business, which fails with the server's own message. Env names rather than URLs
on the command line, so no password shows in `ps` or in the pod spec.
"""

from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import urlsplit

from loguru import logger

DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "amqp": 5672, "amqps": 5671}


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if not parts.hostname or scheme not in DEFAULT_PORTS:
        raise ValueError(f"not a PostgreSQL or AMQP URL with a host: {parts.scheme}://…")
    return parts.hostname, parts.port or DEFAULT_PORTS[scheme]


async def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_for(env_names: list[str], timeout: float, interval: float = 1.0) -> bool:
    """True once every address answers; False when `timeout` seconds pass first. Names whose
    variable is unset or empty are skipped (e.g. no broker configured)."""
    pending = {name: address_of(os.environ[name]) for name in env_names if os.environ.get(name, "")}
    deadline = time.monotonic() + timeout
    while True:
        for name, (host, port) in list(pending.items()):
            if await _reachable(host, port, timeout=min(interval * 3, 5.0)):
                logger.info("{} reachable at {}:{}", name, host, port)
                del pending[name]
        if not pending:
            return True
        if time.monotonic() >= deadline:
            for name, (host, port) in pending.items():
                logger.error("{} not reachable at {}:{} after {} s", name, host, port, timeout)
            return False
        await asyncio.sleep(interval)
