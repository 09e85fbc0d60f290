"""What a benchmark run stands on: fresh PostgreSQL databases and a fresh RabbitMQ vhost,
CPU placement, and the clean-up of all of it.

Everything created here is registered in a `Resources` stack and removed when the run ends,
also on an error or Ctrl-C.

The servers under test (the floor app and the four services alike) reach PostgreSQL over its
Unix socket when the admin URL is a loopback one and the server listens on a socket too
(BENCH_POSTGRES_SOCKET_DIR, default /var/run/postgresql), else over the admin URL's TCP: on one
machine the loopback TCP stack's system time per statement (sent and answered) says nothing
about the code under test. Real deployments (README, charts) keep TCP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

ADMIN_POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL",
    os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
)
POSTGRES_SOCKET_DIR = os.environ.get("BENCH_POSTGRES_SOCKET_DIR", "/var/run/postgresql")
ADMIN_AMQP_URL = os.environ.get(
    "BENCH_AMQP_URL", os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
)


class BenchError(Exception):
    """The benchmark cannot run (a missing tool or server); the message says what to do."""


# -- CPU placement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Which cores the load generator and the servers under test run on."""

    client: frozenset[int]
    servers: frozenset[int]

    @property
    def pinned(self) -> bool:
        return not self.client & self.servers

    def describe(self) -> str:
        if not self.pinned:
            return (
                f"not pinned: {len(self.client)} core(s) available, client and servers share them"
            )
        return (
            f"client (wrk, pacing client, this process) on CPU {_cores(self.client)}; "
            f"servers under test on CPU {_cores(self.servers)}; "
            "PostgreSQL and RabbitMQ are system services and are not pinned"
        )


def py_spy_record(py_spy: str, pid: int, seconds: float, out: str | os.PathLike[str]) -> list[str]:
    """The command line of a raw py-spy profile of `pid`: 200 samples a second for `seconds`
    (a whole second at least), written to `out`; what every bench profile records."""
    duration = str(max(1, round(seconds)))
    return [
        py_spy,
        "record",
        "-r",
        "200",
        "-f",
        "raw",
        "-d",
        duration,
        "-p",
        str(pid),
        "-o",
        str(out),
    ]


def _cores(cores: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


def plan_placement() -> Placement:
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return Placement(frozenset(available), frozenset(available))
    # One core drives the load; the rest serve. With two cores that is one each.
    return Placement(frozenset(available[:1]), frozenset(available[1:]))


def pin_self(placement: Placement) -> None:
    """Children (wrk) inherit this process's affinity."""
    if placement.pinned:
        os.sched_setaffinity(0, placement.client)


# -- PostgreSQL and RabbitMQ ----------------------------------------------------------------


def _sqlalchemy_url(admin: str, database: str) -> str:
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


def _socket_url(admin: str, database: str) -> str | None:
    """The SQLAlchemy URL of `database` over the local server's Unix socket (the admin URL's
    user and port), or None when the admin URL is not a loopback one or there is no socket."""
    parts = urlsplit(admin)
    port = parts.port or 5432
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return None
    if not (Path(POSTGRES_SOCKET_DIR) / f".s.PGSQL.{port}").exists():
        return None
    user = parts.netloc.rpartition("@")[0]
    credentials = f"{user}@" if user else ""
    query = f"host={quote(POSTGRES_SOCKET_DIR, safe='/')}&port={port}"
    return f"postgresql+asyncpg://{credentials}/{database}?{query}"


def plain_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


# Whether the admin URL's server took a connection on its socket (tried once per run).
_socket_works: dict[str, bool] = {}


async def _server_url(database: str) -> str:
    """How the servers under test reach `database`: over the Unix socket if the server takes
    a connection there, else as the admin URL does."""
    socket_url = _socket_url(ADMIN_POSTGRES_URL, database)
    if socket_url is None:
        return _sqlalchemy_url(ADMIN_POSTGRES_URL, database)
    works = _socket_works.get(ADMIN_POSTGRES_URL)
    if works is None:
        try:
            conn = await asyncpg.connect(plain_url(socket_url), timeout=5)
        except (OSError, asyncpg.PostgresError):
            works = False  # e.g. peer authentication on the socket: TCP, as the admin URL
        else:
            await conn.close()
            works = True
        _socket_works[ADMIN_POSTGRES_URL] = works
    return socket_url if works else _sqlalchemy_url(ADMIN_POSTGRES_URL, database)


async def _admin_execute(statement: str) -> None:
    try:
        conn = await asyncpg.connect(ADMIN_POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(
            f"PostgreSQL is not reachable at {ADMIN_POSTGRES_URL} ({exc}); "
            "start it (`scripts/ensure-servers.sh`) or set BENCH_POSTGRES_URL"
        ) from exc
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(label: str) -> tuple[str, str]:
    """A fresh database; returns (its name, its SQLAlchemy asyncpg URL for the servers under
    test: the Unix socket's where there is one, see the module's docstring)."""
    name = f"billing_bench_{label}_{uuid.uuid4().hex[:8]}"
    await _admin_execute(f'CREATE DATABASE "{name}"')
    return name, await _server_url(name)


async def drop_database(name: str) -> None:
    await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        raise BenchError("rabbitmqctl is needed to create the benchmark's vhost; install RabbitMQ")
    result = subprocess.run(
        [ctl, "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")


def create_vhost() -> tuple[str, str]:
    """A fresh vhost the admin URL's user may use; returns (its name, its AMQP URL)."""
    parts = urlsplit(ADMIN_AMQP_URL)
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
    return name, urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def delete_vhost(name: str) -> None:
    _rabbitmqctl("delete_vhost", name)


@dataclass
class Resources:
    """Clean-up actions, run last-in first-out; each runs even if an earlier one failed."""

    _undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], object]) -> None:
        self._undo.append((what, action))

    async def close(self) -> None:
        while self._undo:
            what, action = self._undo.pop()
            try:
                result = action()
                if asyncio.iscoroutine(result):
                    await result
            except Exception as exc:
                sys.stderr.write(f"[bench] clean-up of {what} failed: {exc}\n")
