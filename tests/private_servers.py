"""A private PostgreSQL cluster and a private RabbitMQ node that a fault test may restart.

The machine's shared servers (127.0.0.1:5432 and :5672) serve everybody's tests at once and
must never be restarted; these run from the same binaries with their own data directory, free
ports and (for RabbitMQ) node name, so a test can take them down and bring them back for real.

Missing binaries are a skip with the reason, or a failure under CI=true. KEEP_FAULT_SERVERS=1
keeps their directories (data and logs) after the tests, to read what happened.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _wait_for_port(port: int, timeout: float, alive: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"the server exited with {alive.returncode} before listening")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")
        time.sleep(0.1)


class PrivatePostgres:
    """A throw-away cluster: initdb in a temporary directory, trust auth, fsync off (its data
    only has to survive a clean or fast restart, not a power cut)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            unavailable("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1]).parent
        # Not under pytest's tmp_path: that is private to root, and the cluster may belong to
        # the postgres user; a short path also keeps the unix socket's under its length limit.
        self.dir = Path(tempfile.gettempdir()) / f"billing-pg-{uuid.uuid4().hex[:8]}"
        self.data = self.dir / "data"
        self.port = free_port()
        # initdb refuses to run as root: the cluster belongs to the postgres user then.
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            try:
                pwd.getpwnam(self._user)
            except KeyError:
                unavailable("running as root and there is no postgres user to own a cluster")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / tool), *args]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {result.stdout}{result.stderr}")

    def init(self) -> None:
        self.dir.mkdir(parents=True)
        if self._user is not None:
            user = pwd.getpwnam(self._user)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
            )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast` rolls back open transactions and closes every client connection;
        `immediate` is a crash (recovery on the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if not os.environ.get("KEEP_FAULT_SERVERS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "server.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class PrivateRabbitMq:
    """A RabbitMQ node of its own: unique node name, free AMQP and distribution ports, its
    own config, database and logs, no plugins. It registers with the machine's epmd, which
    the shared node uses too: that is only a name directory, and this node never touches it."""

    SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")

    def __init__(self, workdir: Path) -> None:
        if not self.SERVER.exists():
            unavailable(f"no RabbitMQ server at {self.SERVER}")
        self.dir = workdir / f"rabbit-{uuid.uuid4().hex[:8]}"
        self.node = f"faults-{uuid.uuid4().hex[:8]}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),  # its own Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
        }

    def init(self) -> None:
        self.dir.mkdir(parents=True)
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            # guest may connect over 127.0.0.1 only by default; that is all this node serves.
            "loopback_users.guest = true\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")  # not the machine's NODENAME
        (self.dir / "enabled_plugins").write_text("[].\n")

    def start(self, timeout: float = 90) -> None:
        log = (self.dir / "server.out").open("ab")
        self._process = subprocess.Popen(
            [str(self.SERVER)],
            env=self._env(),
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_for_port(self.port, timeout, self._process)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM: RabbitMQ's own orderly shutdown (connections closed by the broker);
        SIGKILL: a crash."""
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def destroy(self) -> None:
        self.stop(signal.SIGKILL)  # its data goes too: no need for an orderly shutdown
        if not os.environ.get("KEEP_FAULT_SERVERS"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "log" / f"{self.node}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
