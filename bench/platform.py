"""The systems under test: the floor app, and the platform on the direct runtime — four
processes, each with its own fresh PostgreSQL database, one fresh RabbitMQ vhost, HTTP between
them (the approach of tests/direct_platform.py, without its fault-injection proxy)."""

from __future__ import annotations

import asyncio
import json
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
    Server,
    create_database,
    create_vhost,
    delete_vhost,
    drop_database,
    free_port,
    plain_url,
)
from billing_common.auth import ALL_SCOPES, TokenService

SERVICES = ("tax", "discount", "invoice", "payment")
# A key for this run only; the services get it as JWT_SIGNING_KEY.
SIGNING_KEY = "bench-signing-key-" + os.urandom(24).hex()


async def start_floor(placement: Placement, workdir: Path, resources: Resources) -> Server:
    name, url = await create_database("floor")
    resources.push(f"database {name}", lambda: drop_database(name))
    server = Server(
        name="floor",
        argv=[
            sys.executable,
            "-m",
            "bench.floor_app",
            "--port",
            str(port := free_port()),
            "--dsn",
            plain_url(url),
        ],
        env=dict(os.environ),
        port=port,
        log_path=workdir / "floor.log",
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
            for name in SERVICES:
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


def _service_env(
    name: str,
    database_url: str,
    amqp_url: str,
    peers: dict[str, str],
    workdir: Path,
) -> dict[str, str]:
    return {
        **os.environ,
        "RUNTIME": "direct",
        "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url,
        "JWT_SIGNING_KEY": SIGNING_KEY,
        "SECRETS_FILE": str(workdir / "no-secrets.json"),
        "PEER_URLS": json.dumps(peers),
        "LOAD_SAMPLE_DATA": "true",
        "MIGRATE_ON_START": "true",
        "LOG_JSON": "true",
    }


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
        server = Server(
            name=service,
            argv=[
                sys.executable,
                "-m",
                "billing_launcher",
                "serve",
                service,
                "--runtime",
                "direct",
                "--port",
                str(ports[service]),
            ],
            env=_service_env(service, databases[service], amqp_url, peers, workdir),
            port=ports[service],
            log_path=workdir / f"{service}.log",
            cores=placement.servers,
        )
        server.start()
        resources.push(f"the {service} service", server.stop)
        servers[service] = server
    for server in servers.values():
        await server.wait_ready()
    platform = Platform(servers, databases, amqp_url)
    if await platform.wait_quiet(30):
        raise BenchError("the platform did not settle its start-up events")
    return platform
