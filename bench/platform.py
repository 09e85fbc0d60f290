"""The systems under test: the floor app, and the platform on the direct runtime — four
processes, each with its own fresh PostgreSQL database, one fresh RabbitMQ vhost, HTTP between
them. The processes are the launcher's (billing_launcher.processes, as for `make up` and the
fault tests); what is the benchmark's own is pinning them to the server cores and reading
their memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import aio_pika
import asyncpg

from bench.infra import (
    BenchError,
    Placement,
    Resources,
    create_database,
    create_vhost,
    delete_vhost,
    drop_database,
    plain_url,
)
from billing_common.auth import ALL_SCOPES, TokenService
from billing_launcher.processes import NotReady, ServiceProcess, direct_env, free_port

SERVICES = ("tax", "discount", "invoice", "payment")
# The consumers' lane queues (billing_common.adapters.rabbitmq_bus): the invoice service takes
# the payment events in its "settlement" lane.
LANE_QUEUES = ("invoice.settlement",)
# A key for this run only; the services get it as JWT_SIGNING_KEY.
SIGNING_KEY = "bench-signing-key-" + os.urandom(24).hex()


@dataclass
class Server(ServiceProcess):
    """A launcher process pinned to the server cores, whose resident memory can be read."""

    cores: frozenset[int] = frozenset()

    def start(self) -> int:
        pid = super().start()
        # Set at once, before the interpreter has started any thread: threads inherit it.
        if self.cores:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(pid, self.cores)
        return pid

    @property
    def running_pid(self) -> int:
        """The pid of the running process; a BenchError if it has exited or never started."""
        pid = self.pid
        if pid is None:
            raise BenchError(f"the {self.name} server is not running")
        return pid

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS), 0 if the process is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (FileNotFoundError, ProcessLookupError):
            return 0
        return 0

    async def wait_ready(self, path: str = "/readyz", timeout: float = 90.0) -> None:
        try:
            await super().wait_ready(path, timeout)
        except NotReady as exc:
            raise BenchError(str(exc)) from exc


async def start_floor(placement: Placement, workdir: Path, resources: Resources) -> Server:
    name, url = await create_database("floor")
    resources.push(f"database {name}", lambda: drop_database(name))
    port = free_port()
    server = Server(
        "floor",
        port,
        dict(os.environ),
        workdir / "floor.log",
        argv=[
            sys.executable,
            "-m",
            "bench.floor_app",
            "--port",
            str(port),
            "--dsn",
            plain_url(url),
        ],
        cores=placement.servers,
    )
    server.start()
    resources.push("the floor server", server.stop)
    await server.wait_ready("/json")
    return server


@dataclass
class Platform:
    servers: dict[str, Server]
    database_urls: dict[str, str]
    amqp_url: str
    exchange: str = "billing.events"

    def url(self, name: str) -> str:
        return self.servers[name].url

    def token(self) -> str:
        tokens = TokenService(SIGNING_KEY, issuer="billing-platform", audience="billing-api")
        return tokens.mint(subject="bench", tenant="demo", scopes=ALL_SCOPES, ttl_seconds=7200)

    def rss(self) -> dict[str, int]:
        return {name: server.rss_bytes() for name, server in self.servers.items()}

    async def backlog(self) -> int:
        """Events not yet settled: unpublished outbox rows plus messages waiting in queues."""
        pending = 0
        for url in self.database_urls.values():
            conn = await asyncpg.connect(plain_url(url))
            try:
                pending += int(
                    await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                )
            finally:
                await conn.close()
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in (*SERVICES, *LANE_QUEUES):
                try:
                    queue = await channel.declare_queue(f"{self.exchange}.{name}", passive=True)
                except aio_pika.exceptions.ChannelClosed:
                    channel = await connection.channel()  # a service without a queue
                    continue
                result = queue.declaration_result
                pending += int(result.message_count or 0)
        return pending

    async def wait_quiet(self, timeout: float) -> int:
        """Wait until every event of the last phase is settled (or `timeout`); return what is
        left, so the next phase does not measure the last one's backlog."""
        deadline = time.monotonic() + timeout
        while (left := await self.backlog()) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        return left


async def start_platform(placement: Placement, workdir: Path, resources: Resources) -> Platform:
    databases: dict[str, str] = {}
    for service in SERVICES:
        name, url = await create_database(service)
        resources.push(f"database {name}", partial(drop_database, name))
        databases[service] = url
    vhost, amqp_url = await asyncio.to_thread(create_vhost)
    resources.push(f"vhost {vhost}", lambda: asyncio.to_thread(delete_vhost, vhost))
    ports = {service: free_port() for service in SERVICES}
    peers = {service: f"http://127.0.0.1:{port}" for service, port in ports.items()}
    servers: dict[str, Server] = {}
    for service in SERVICES:
        env = direct_env(
            database_url=databases[service],
            amqp_url=amqp_url,
            secrets_file=workdir / "no-secrets.json",
            peers=peers,
            signing_key=SIGNING_KEY,
            LOAD_SAMPLE_DATA="true",
            MIGRATE_ON_START="true",
            LOG_JSON="true",
        )
        server = Server(
            service, ports[service], env, workdir / f"{service}.log", cores=placement.servers
        )
        server.start()
        resources.push(f"the {service} service", server.stop)
        servers[service] = server
    await asyncio.gather(*(server.wait_ready() for server in servers.values()))
    platform = Platform(servers, databases, amqp_url)
    if await platform.wait_quiet(30):
        raise BenchError("the platform did not settle its start-up events")
    return platform
