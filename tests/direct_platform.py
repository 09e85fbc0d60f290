"""The direct runtime as real processes for the fault tests: four services, each in its own
process with its own fresh PostgreSQL database, RabbitMQ reached through a TCP proxy that a
test can cut (a broker outage as the services see it), and HTTP between them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SERVICES = ("tax", "discount", "invoice", "payment")
SIGNING_KEY = "fault-tests-signing-key-0123456789abcdefghijkl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@dataclass
class DirectPlatform:
    database_urls: dict[str, str]
    amqp_url: str
    workdir: Path
    ports: dict[str, int] = field(default_factory=lambda: {n: free_port() for n in SERVICES})
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def env(self, name: str) -> dict[str, str]:
        return {
            **os.environ,
            "RUNTIME": "direct",
            "DATABASE_URL": self.database_urls[name],
            "AMQP_URL": self.amqp_url,
            "JWT_SIGNING_KEY": SIGNING_KEY,
            "SECRETS_FILE": str(self.workdir / "no-secrets.json"),
            "PEER_URLS": json.dumps({n: self.url(n) for n in SERVICES}),
            "LOAD_SAMPLE_DATA": "true",
            "MIGRATE_ON_START": "true",
            "OUTBOX_POLL_SECONDS": "0.5",
            "INVOKE_RETRIES": "1",
            "BREAKER_RESET_SECONDS": "1",
            "LOG_JSON": "true",
        }

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "billing_launcher",
                "serve",
                name,
                "--runtime",
                "direct",
                "--port",
                str(self.ports[name]),
            ],
            env=self.env(name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    async def wait_ready(self, *names: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            for name in names or SERVICES:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{self.url(name)}/readyz")).status_code == 200:
                            break
                    process = self.processes.get(name)
                    if process is not None and process.poll() is not None:
                        raise RuntimeError(f"{name} exited:\n{self.log(name)}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not ready:\n{self.log(name)}")
                    await asyncio.sleep(0.2)

    def stop_all(self) -> None:
        # Signal every service first, then wait: their graceful shutdowns overlap.
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for name in list(self.processes):
            self.stop(name)
