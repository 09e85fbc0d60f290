"""`python -m billing_launcher` (or `billing`): run, serve, migrate.

run [--services tax,discount,...]   all services in ONE process, embedded runtime
                                     (SQLite per service, in-process bus and invocation)
serve NAME [--runtime direct]        one service in this process (direct or dapr runtime)
migrate [NAME ...]                   apply Alembic migrations to each service's database
wait-for [--timeout S] ENV_NAME ...  wait until the servers whose URLs those variables hold
                                     accept connections (exit 1 after the timeout)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from loguru import logger

from billing_common.db import create_engine, migrate
from billing_common.devtoken import ensure_local_signing_key
from billing_common.logs import configure_logging
from billing_common.runtime import EmbeddedPlatform
from billing_common.settings import ServiceSettings
from billing_launcher.registry import SERVICES, app_factory, migrations_dir
from billing_launcher.servers import make_server, run_event_loop, serve_all
from billing_launcher.wait_for import wait_for


def _banner(host: str, ports: dict[str, int]) -> None:
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104
    lines = ["", "Billing platform is up (embedded runtime). API docs:"]
    lines += [f"  {name:<9} http://{shown}:{port}/docs" for name, port in ports.items()]
    lines += [
        "",
        "Get a development token:  make token    (tenant 'demo', all scopes)",
        "Then click 'Authorize' in Swagger and paste it. Stop with Ctrl-C.",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


async def _run_embedded(names: list[str], host: str) -> None:
    ensure_local_signing_key(ServiceSettings())
    platform = EmbeddedPlatform()
    servers = []
    ports: dict[str, int] = {}
    for name in names:
        settings = ServiceSettings.for_service(name, runtime="embedded", host=host)
        app = app_factory(name)(settings, platform)
        servers.append(
            make_server(
                app,
                host,
                settings.port,
                graceful_shutdown_seconds=settings.graceful_shutdown_seconds,
            )
        )
        ports[name] = settings.port
    await platform.bus.start()
    try:
        await serve_all(servers, on_started=lambda: _banner(host, ports))
    finally:
        await platform.bus.stop()


async def _serve_one(name: str, runtime: str, host: str, port: int | None) -> None:
    overrides: dict[str, object] = {"runtime": runtime, "host": host}
    if port is not None:
        overrides["port"] = port
    settings = ServiceSettings.for_service(name, **overrides)
    if settings.development.migrate_on_start:
        # In a child process, before the app is built: Alembic (its DDL implementations load
        # SQLAlchemy's MySQL, MSSQL and Oracle dialects, and Mako with Pygments) costs the
        # server about 13 MB of resident memory for good when it migrates itself.
        await _migrate_in_child(name, settings.runtime)
        settings = settings.model_copy(update={"migrate_on_start": False})
    app = app_factory(name)(settings, None)
    server = make_server(
        app,
        settings.host,
        settings.port,
        graceful_shutdown_seconds=settings.graceful_shutdown_seconds,
    )
    await serve_all([server])


async def _migrate_in_child(name: str, runtime: str) -> None:
    """`billing migrate <name>` in a child process with this one's environment (and its
    runtime, which decides the default database); raises if it fails."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "billing_launcher", "migrate", name),
        env={**os.environ, "RUNTIME": runtime},
    )
    if await child.wait() != 0:
        raise SystemExit(f"{name}: migrations failed (exit status {child.returncode})")


async def _migrate(names: list[str]) -> None:
    for name in names:
        settings = ServiceSettings.for_service(name)
        engine = create_engine(settings.resolved_database_url)
        try:
            await migrate(engine, migrations_dir(name), version_table=f"alembic_version_{name}")
        finally:
            await engine.dispose()
        logger.info("{}: migrated {}", name, engine.url.render_as_string(hide_password=True))


def _service_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown services: {', '.join(unknown)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="all services in one process (embedded runtime)")
    run.add_argument("--services", type=_service_list, default=list(SERVICES))
    run.add_argument("--host", default="127.0.0.1")
    serve = sub.add_parser("serve", help="one service in this process")
    serve.add_argument("name", choices=SERVICES)
    serve.add_argument("--runtime", choices=["embedded", "direct", "dapr"], default=None)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    mig = sub.add_parser("migrate", help="apply migrations to each service's database")
    mig.add_argument("names", nargs="*", help=f"services (default: all of {', '.join(SERVICES)})")
    wait = sub.add_parser("wait-for", help="wait until servers accept connections")
    wait.add_argument("--timeout", type=float, default=300.0)
    wait.add_argument("env_names", nargs="+", help="variables holding the servers' URLs")
    args = parser.parse_args(argv)

    base = ServiceSettings()
    configure_logging(json=base.log_json, level=base.log_level)
    if args.command == "run":
        run_event_loop(_run_embedded(args.services, args.host))
    elif args.command == "serve":
        settings = ServiceSettings.for_service(args.name)
        run_event_loop(
            _serve_one(
                args.name,
                args.runtime or settings.runtime,
                args.host or settings.host,
                args.port,
            )
        )
    elif args.command == "wait-for":
        return 0 if asyncio.run(wait_for(args.env_names, args.timeout)) else 1
    else:
        names = args.names or list(SERVICES)
        unknown = [n for n in names if n not in SERVICES]
        if unknown:
            parser.error(f"unknown services: {', '.join(unknown)}")
        asyncio.run(_migrate(names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
