"""Profile invoice creation: the platform as the bench starts it, wrk driving
`POST /v1/invoices` (the bench's body and token), each server's CPU per invoice from /proc,
SQL per invoice from the probe, and optionally a py-spy profile of one service meanwhile.

    python -m bench.profile_invoice [--seconds 10] [--runs 2] [--py-spy PATH --service invoice]

Each run: a warm-up, the measured wrk run, then the drain of its events (relays and
consumers count), less the idle background per second. With --py-spy, one more run with
`py-spy record -r 200 -f raw` on the service writes bench/out/<service>-creation.raw.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench import scenarios
from bench.costs import Cost, CostMeter, difference, enable_sql_probe
from bench.infra import Resources, pin_self, plan_placement, py_spy_record
from bench.loadgen import Request, ensure_wrk, wrk
from bench.platform import Platform, start_platform

OUT_DIR = Path(__file__).with_name("out")


async def _measured(
    platform: Platform,
    meter: CostMeter,
    wrk_path: str,
    request: Request,
    *,
    seconds: float,
    connections: int,
    during: list[str] | None = None,
) -> tuple[float, int, dict[str, Cost]]:
    await platform.wait_quiet(60)
    quiet = meter.snapshot()
    await asyncio.sleep(2)
    before = meter.snapshot()
    background = {name: cost.scaled(1 / 2) for name, cost in difference(before, quiet).items()}
    started = time.monotonic()
    spy = subprocess.Popen(during) if during else None
    load = await asyncio.to_thread(
        wrk, wrk_path, platform.url("invoice"), request, seconds=seconds, connections=connections
    )
    if spy is not None:
        spy.wait(timeout=60)
    await platform.wait_quiet(60)
    elapsed = time.monotonic() - started
    done = load.requests - load.errors
    spent = difference(meter.snapshot(), before)
    costs = {
        name: (cost - background[name].scaled(elapsed)).per(done) for name, cost in spent.items()
    }
    return load.rate, done, costs


def _line(label: str, rate: float, done: int, costs: dict[str, Cost]) -> str:
    parts = ", ".join(
        f"{name} {cost.cpu_seconds * 1000:.1f} ms {cost.statements:.1f}/{cost.transactions:.1f}"
        for name, cost in costs.items()
    )
    total = sum(cost.cpu_seconds for cost in costs.values()) * 1000
    return f"{label}: {rate:.1f} inv/s ({done}), CPU ms/invoice total {total:.1f}: {parts}"


async def main(args: argparse.Namespace) -> None:
    placement = plan_placement()
    pin_self(placement)
    wrk_path = ensure_wrk()
    resources = Resources()
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        try:
            counts = Path(tmp) / "sqlcounts"
            enable_sql_probe(counts)
            platform = await start_platform(placement, Path(tmp), resources)
            meter = CostMeter(platform, counts)
            token = platform.token()
            await scenarios.check_requests(platform, {"authorization": f"Bearer {token}"})
            run_id = uuid.uuid4().hex[:8]

            def request(label: str) -> Request:
                return Request(
                    "POST",
                    "/v1/invoices",
                    body=scenarios.body(scenarios.ORDER),
                    token=token,
                    idempotency_prefix=f"prof-{run_id}-{label}",
                )

            warm = request("warm")
            await asyncio.to_thread(
                wrk, wrk_path, platform.url("invoice"), warm, seconds=3, connections=args.c
            )
            for run in range(args.runs):
                rate, done, costs = await _measured(
                    platform,
                    meter,
                    wrk_path,
                    request(f"run{run}"),
                    seconds=args.seconds,
                    connections=args.c,
                )
                print(_line(f"run {run + 1}", rate, done, costs), flush=True)
            if args.py_spy:
                OUT_DIR.mkdir(exist_ok=True)
                out = OUT_DIR / f"{args.service}-creation.raw"
                pid = platform.servers[args.service].running_pid
                argv = py_spy_record(args.py_spy, pid, args.seconds, out)
                rate, done, costs = await _measured(
                    platform,
                    meter,
                    wrk_path,
                    request("spy"),
                    seconds=args.seconds,
                    connections=args.c,
                    during=argv,
                )
                print(_line("with py-spy", rate, done, costs), flush=True)
                print(f"profile: {out}", flush=True)
        finally:
            await resources.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("-c", type=int, default=16)
    parser.add_argument("--py-spy", dest="py_spy")
    parser.add_argument("--service", default="invoice")
    asyncio.run(main(parser.parse_args()))
