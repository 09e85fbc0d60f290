"""Services as real processes, one per service: the one launcher behind `make up`, the fault
tests and the benchmarks.

A `ServiceProcess` is one server process on a given port with its environment, logging to a
file; a `ProcessGroup` starts several, waits until every one answers its readiness path, stops
them (all signalled first, so their graceful shutdowns overlap) and shows their logs. What
differs between the callers is only the environment they pass and, for `make up`, pid files so
that a later `make down` finds processes started by an earlier command.
"""

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_argv(name: str, port: int, runtime: str = "direct") -> list[str]:
    """The command that serves one service: `python -m billing_launcher serve <name>`."""
    return [
        sys.executable,
        *("-m", "billing_launcher", "serve", name),
        *("--runtime", runtime, "--port", str(port)),
    ]


def direct_env(
    *,
    database_url: str,
    amqp_url: str,
    secrets_file: Path,
    peers: Mapping[str, str] | None = None,
    signing_key: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """One service's environment on the direct runtime: its database, the broker, where its
    peers are; `extra` adds or overrides variables (e.g. LOAD_SAMPLE_DATA, LOG_JSON)."""
    env = {
        **os.environ,
        "RUNTIME": "direct",
        "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url,
        "SECRETS_FILE": str(secrets_file),
    }
    if peers is not None:
        env["PEER_URLS"] = json.dumps(dict(peers))
    if signing_key is not None:
        env["JWT_SIGNING_KEY"] = signing_key
    env.update(extra)
    return env


def _exited(pid: int) -> bool:
    """A zombie has exited (it only waits for its parent to read its status)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


class NotReady(RuntimeError):
    """A service exited during start-up or did not become ready in time; the message ends with
    the tail of its log."""


@dataclass
class ServiceProcess:
    """One server process. With a `pid_file` it can be found again (and stopped) from another
    command than the one that started it."""

    name: str
    port: int
    env: Mapping[str, str]
    log_path: Path
    argv: Sequence[str] = ()
    pid_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.argv:
            self.argv = serve_argv(self.name, self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running process's id, or None once it has exited (or was never started)."""
        if self.process is not None:
            return self.process.pid if self.process.poll() is None else None
        if self.pid_file is None:
            return None
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return None if _exited(pid) else pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                env=dict(self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: Ctrl-C reaches the caller only, which stops it in order.
                start_new_session=True,
            )
        if self.pid_file is not None:
            self.pid_file.parent.mkdir(parents=True, exist_ok=True)
            self.pid_file.write_text(str(self.process.pid))
        return self.process.pid

    def send_signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Send `sig`, wait up to `timeout` for the exit, then SIGKILL."""
        self.send_signal(sig)
        self.wait_stopped(timeout)

    def wait_stopped(self, timeout: float = 15.0) -> None:
        """Wait up to `timeout` for the exit of a signalled process, then SIGKILL it."""
        if not self._wait_exit(timeout):
            self.send_signal(signal.SIGKILL)
            self._wait_exit(5.0)
        self.process = None
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def _wait_exit(self, timeout: float) -> bool:
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    async def wait_ready(self, path: str = "/readyz", timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}{path}")).status_code == 200:
                        return
                if not self.running:
                    raise NotReady(f"{self.name} exited during start-up:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise NotReady(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)


@dataclass
class ProcessGroup:
    """Several service processes started, awaited and stopped together."""

    members: dict[str, ServiceProcess]

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.members[name]

    def url(self, name: str) -> str:
        return self.members[name].url

    @property
    def running(self) -> dict[str, ServiceProcess]:
        return {name: member for name, member in self.members.items() if member.running}

    def start(self, *names: str) -> None:
        """Start the named members (all by default) that are not running yet."""
        for name in names or tuple(self.members):
            if not self.members[name].running:
                self.members[name].start()

    async def wait_ready(self, *names: str, path: str = "/readyz", timeout: float = 60.0) -> None:
        await asyncio.gather(
            *(self.members[n].wait_ready(path, timeout) for n in names or tuple(self.members))
        )

    def stop(self, *names: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the named members (all by default): every one is signalled first, then each is
        waited for, so their graceful shutdowns overlap."""
        chosen = [self.members[n] for n in names or self.members]
        for member in chosen:
            member.send_signal(sig)
        for member in chosen:
            member.wait_stopped()

    def log(self, name: str, chars: int = 4000) -> str:
        return self.members[name].log_tail(chars)
