"""The direct runtime as real processes for the fault tests: four services started by the
launcher's process group (as `make up` and the benchmarks start them), each with its own fresh
PostgreSQL database, RabbitMQ reached through a TCP proxy that a test can cut (a broker outage
as the services see it), and HTTP between them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from pathlib import Path

from billing_launcher.processes import (
    ProcessGroup,
    ServiceProcess,
    direct_env,
    free_port,
)
from billing_launcher.registry import SERVICES

__all__ = ["SERVICES", "SIGNING_KEY", "DirectPlatform", "TcpProxy", "free_port"]

SIGNING_KEY = "fault-tests-signing-key-0123456789abcdefghijkl"


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and refuses new
    ones until `restore()` — what a broker outage looks like from the client side."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        await self.cut()


class DirectPlatform:
    """The four services as processes (the launcher's `ProcessGroup`), configured for the
    fault tests: fresh databases, a broker URL that may go through a `TcpProxy`, a fixed
    signing key, a fast outbox relay and circuit breaker."""

    def __init__(self, database_urls: dict[str, str], amqp_url: str, workdir: Path) -> None:
        self.database_urls = database_urls
        self.amqp_url = amqp_url
        self.workdir = workdir
        self.ports = ports = {name: free_port() for name in SERVICES}
        peers = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        self.group = ProcessGroup(
            {
                name: ServiceProcess(
                    name,
                    ports[name],
                    direct_env(
                        database_url=database_urls[name],
                        amqp_url=amqp_url,
                        secrets_file=workdir / "no-secrets.json",
                        peers=peers,
                        signing_key=SIGNING_KEY,
                        LOAD_SAMPLE_DATA="true",
                        MIGRATE_ON_START="true",
                        OUTBOX_POLL_SECONDS="0.5",
                        INVOKE_RETRIES="1",
                        BREAKER_RESET_SECONDS="1",
                        LOG_JSON="true",
                    ),
                    workdir / f"{name}.log",
                )
                for name in SERVICES
            }
        )

    @property
    def processes(self) -> dict[str, subprocess.Popen[bytes]]:
        """The processes started and not stopped since (one may have exited by itself)."""
        return {
            name: member.process
            for name, member in self.group.members.items()
            if member.process is not None
        }

    def url(self, name: str) -> str:
        return self.group.url(name)

    def start(self, name: str) -> None:
        self.group.start(name)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        self.group[name].stop(sig)

    def log(self, name: str) -> str:
        return self.group.log(name)

    async def wait_ready(self, *names: str, timeout: float = 60.0) -> None:
        await self.group.wait_ready(*names, timeout=timeout)

    def stop_all(self) -> None:
        self.group.stop()
