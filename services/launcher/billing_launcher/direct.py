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
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import httpx

from billing_common.adapters.env_secrets import ensure_secrets_file
from billing_launcher.processes import NotReady, ProcessGroup, ServiceProcess, direct_env
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


def service_env(name: str, database_url: str, amqp_url: str) -> dict[str, str]:
    return direct_env(
        database_url=database_url,
        amqp_url=amqp_url,
        secrets_file=SECRETS_FILE.resolve(),
        PORT=str(port_of(name)),
        LOAD_SAMPLE_DATA=os.environ.get("LOAD_SAMPLE_DATA", "true"),
    )


def processes(urls: dict[str, str] | None = None, amqp_url: str = "") -> ProcessGroup:
    """The four processes of `make up`, found again through their pid files by a later command
    (`make down`); the environment matters only to the command that starts them."""
    return ProcessGroup(
        {
            name: ServiceProcess(
                name,
                port_of(name),
                service_env(name, urls[name], amqp_url) if urls else {},
                LOG_DIR / f"{name}.log",
                pid_file=RUN_DIR / f"{name}.pid",
            )
            for name in SERVICES
        }
    )


def migrate(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        subprocess.run(
            [sys.executable, "-m", "billing_launcher", "migrate", name],
            env={**os.environ, f"{name.upper()}_DATABASE_URL": url},
            check=True,
        )


def start(group: ProcessGroup) -> None:
    for name, member in group.members.items():
        if member.running:
            _say(f"{name} already running")
            continue
        pid = member.start()
        _say(f"started {name} (pid {pid}), log {member.log_path}")


def wait_ready(group: ProcessGroup, timeout: float = 60.0) -> bool:
    try:
        asyncio.run(group.wait_ready(timeout=timeout))
    except NotReady:
        for name, member in group.members.items():
            if not _answers_ready(member.url):
                _say(f"{name} is not ready: see {member.log_path}")
        return False
    return True


def _answers_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def up() -> int:
    ensure_secrets()
    urls = database_urls()
    asyncio.run(ensure_databases(urls))
    amqp_url = ensure_amqp()
    migrate(urls)
    group = processes(urls, amqp_url)
    start(group)
    if not wait_ready(group):
        return 1
    _say("all four services are ready (direct runtime: PostgreSQL + RabbitMQ):")
    for name in SERVICES:
        _say(f"  {name:<9} http://localhost:{port_of(name)}/docs")
    _say("make token · make demo · make logs · make down")
    return 0


def down() -> int:
    group = processes()
    running = list(group.running)
    if running:
        group.stop(*running)  # all signalled first: their graceful shutdowns overlap
    for name in running:
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
