"""The services' resident memory through the full bench's load phases, in about a minute.

    python -m bench.rss_probe [--seconds 13] [--connections 32]

Starts the platform as `make bench` does (bench.platform), then runs the phases that grow the
invoice process: tax calculations (whose `tax.calculated` events the invoice service consumes)
and invoice creations, each with wrk at the full profile's concurrency for warm-up + measured
seconds, and prints every service's VmRSS and VmHWM (peak) after start-up, after each phase
and once its events are settled. Settings for one service only go in the environment with
the service's prefix (INVOICE_AMQP_PREFETCH=8 ...), which the launcher passes on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
from pathlib import Path

from bench import scenarios
from bench.infra import Resources, pin_self, plan_placement
from bench.loadgen import Request, ensure_wrk, wrk
from bench.platform import Platform, start_platform

MB = 1024 * 1024


def memory(pid: int | None) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in values:
            values[key] = int(line.split()[1]) / 1024
    return values["VmRSS"], values["VmHWM"]


def show(platform: Platform, label: str) -> None:
    parts = []
    for name, server in platform.servers.items():
        rss, hwm = memory(server.pid)
        threads = len(list(Path(f"/proc/{server.pid}/task").iterdir()))
        parts.append(f"{name} {rss:6.1f}/{hwm:6.1f} {threads}t")
    print(f"{label:<22} RSS/HWM MB: " + "  ".join(parts), flush=True)
    if os.environ.get("RSS_PROBE_SIGNAL"):  # a diagnostic hook of the caller's (SIGUSR1)
        os.kill(platform.servers["invoice"].running_pid, signal.SIGUSR1)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=13.0, help="wrk seconds per phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--logs", type=Path, help="keep the services' logs in this directory")
    args = parser.parse_args()
    placement = plan_placement()
    pin_self(placement)
    wrk_path = ensure_wrk()
    resources = Resources()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
            workdir = args.logs or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            platform = await start_platform(placement, workdir, resources)
            token = platform.token()
            headers = {"authorization": f"Bearer {token}"}
            await scenarios.check_requests(platform, headers)
            await platform.wait_quiet(60)
            show(platform, "idle")
            phases = (
                (
                    "tax",
                    Request(
                        "POST",
                        "/v1/tax/calculations",
                        body=scenarios.body(scenarios.TAX_CALCULATION),
                        token=token,
                    ),
                ),
                (
                    "invoice",
                    Request(
                        "POST",
                        "/v1/invoices",
                        body=scenarios.body(scenarios.ORDER),
                        token=token,
                        idempotency_prefix="rss-probe",
                    ),
                ),
            )
            for service, request in phases:
                load = await asyncio.to_thread(
                    wrk,
                    wrk_path,
                    platform.url(service),
                    request,
                    seconds=args.seconds,
                    connections=args.connections,
                )
                show(platform, f"after {service} ({load.requests})")
                await platform.wait_quiet(60)
                show(platform, f"{service} settled")
    finally:
        await resources.close()


if __name__ == "__main__":
    asyncio.run(main())
