"""`make up` / `make down` / `make status`: the direct runtime as four local processes.

Each service gets its own PostgreSQL database (billing_<service>), events go through
RabbitMQ (vhost `billing`), invocations over HTTP. Databases, vhost and user are created when
missing; a random JWT signing key is written to var/secrets.json on first use.

Point it at other servers with ADMIN_POSTGRES_URL (used to create the databases), or
<SERVICE>_DATABASE_URL per service, and AMQP_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from billing_common.adapters.env_secrets import ensure_secrets_file
from billing_launcher.registry import SERVICES, port_of

VAR = Path("var")
RUN_DIR = VAR / "run"
LOG_DIR = VAR / "log"
SECRETS_FILE = VAR / "secrets.json"
DEFAULT_ADMIN_URL = "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://billing:billing@127.0.0.1:5672/billing"


def _say(message: str) -> None:
    sys.stdout.write(f"[up] {message}\n")
    sys.stdout.flush()


def ensure_secrets() -> None:
    if ensure_secrets_file(SECRETS_FILE):
        _say(f"wrote new secrets to {SECRETS_FILE}")


def database_urls() -> dict[str, str]:
    admin = os.environ.get("ADMIN_POSTGRES_URL", DEFAULT_ADMIN_URL)
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return {
        name: os.environ.get(f"{name.upper()}_DATABASE_URL", f"{base}/billing_{name}")
        for name in SERVICES
    }


async def ensure_databases(urls: dict[str, str]) -> None:
    admin = os.environ.get("ADMIN_POSTGRES_URL", DEFAULT_ADMIN_URL)
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        for url in urls.values():
            name = url.rsplit("/", 1)[1].split("?")[0]
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
                _say(f"created database {name}")
    finally:
        await conn.close()


def ensure_amqp() -> str:
    """The broker URL: AMQP_URL if set; otherwise a `billing` vhost and user, created with
    rabbitmqctl when it is at hand, else the default guest account on `/`."""
    if os.environ.get("AMQP_URL"):
        return os.environ["AMQP_URL"]
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return "amqp://guest:guest@127.0.0.1:5672/"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ctl, "-q", *args], capture_output=True, text=True, timeout=60)

    if run("list_vhosts").returncode != 0:
        return "amqp://guest:guest@127.0.0.1:5672/"
    if "billing" not in run("list_vhosts").stdout.split():
        run("add_vhost", "billing")
        _say("created RabbitMQ vhost billing")
    if "billing" not in run("list_users").stdout.split():
        run("add_user", "billing", "billing")
        _say("created RabbitMQ user billing")
    run("set_permissions", "-p", "billing", "billing", ".*", ".*", ".*")
    return DEFAULT_AMQP_URL


def _pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def _running(name: str) -> int | None:
    try:
        pid = int(_pid_file(name).read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def service_env(name: str, database_url: str, amqp_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "RUNTIME": "direct",
        "DATABASE_URL": database_url,
        "AMQP_URL": amqp_url,
        "SECRETS_FILE": str(SECRETS_FILE.resolve()),
        "PORT": str(port_of(name)),
        "LOAD_SAMPLE_DATA": os.environ.get("LOAD_SAMPLE_DATA", "true"),
    }


def migrate(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        subprocess.run(
            [sys.executable, "-m", "billing_launcher", "migrate", name],
            env={**os.environ, f"{name.upper()}_DATABASE_URL": url},
            check=True,
        )


def start(urls: dict[str, str], amqp_url: str) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for name in SERVICES:
        if _running(name):
            _say(f"{name} already running")
            continue
        log = (LOG_DIR / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "billing_launcher", "serve", name, "--runtime", "direct"],
            env=service_env(name, urls[name], amqp_url),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _pid_file(name).write_text(str(process.pid))
        _say(f"started {name} (pid {process.pid}), log {LOG_DIR / (name + '.log')}")


def wait_ready(timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    pending = set(SERVICES)
    with httpx.Client(timeout=2) as client:
        while pending and time.monotonic() < deadline:
            for name in sorted(pending):
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{port_of(name)}/readyz").status_code == 200:
                        pending.discard(name)
            if pending:
                if not all(_running(name) for name in pending):
                    break
                time.sleep(0.3)
    for name in sorted(pending):
        _say(f"{name} is not ready: see {LOG_DIR / (name + '.log')}")
    return not pending


def up() -> int:
    ensure_secrets()
    urls = database_urls()
    asyncio.run(ensure_databases(urls))
    amqp_url = ensure_amqp()
    migrate(urls)
    start(urls, amqp_url)
    if not wait_ready():
        return 1
    _say("all four services are ready (direct runtime: PostgreSQL + RabbitMQ):")
    for name in SERVICES:
        _say(f"  {name:<9} http://localhost:{port_of(name)}/docs")
    _say("make token · make demo · make logs · make down")
    return 0


def down() -> int:
    for name in SERVICES:
        pid = _running(name)
        if pid is None:
            continue
        os.killpg(pid, signal.SIGTERM)
        for _ in range(100):
            if _running(name) is None:
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        _pid_file(name).unlink(missing_ok=True)
        _say(f"stopped {name}")
    return 0


def status() -> int:
    healthy = True
    with httpx.Client(timeout=2) as client:
        for name in SERVICES:
            try:
                answer = client.get(f"http://127.0.0.1:{port_of(name)}/readyz")
                state = "ready" if answer.status_code == 200 else f"not ready: {answer.text}"
            except httpx.HTTPError:
                state = "down"
            healthy &= state == "ready"
            sys.stdout.write(f"{name:<9} {state}\n")
    return 0 if healthy else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    command = parser.parse_args().command
    return {"up": up, "down": down, "status": status}[command]()


if __name__ == "__main__":
    raise SystemExit(main())
