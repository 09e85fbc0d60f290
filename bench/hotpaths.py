"""Server CPU per answer of the tax calculation and the discount quote, beside the bare-JSON
floor, with an optional py-spy profile of each (bench/profiles/tax-discount.md).

    python -m bench.hotpaths                    # CPU per answer, 2 rounds, 8 s each
    python -m bench.hotpaths --py-spy out/      # and a py-spy raw profile per target

The systems are the bench's own (the floor app, the platform on the direct runtime, servers
on the server cores, wrk on the client core). CPU per answer is the server process session's
utime + stime over the measured wrk run divided by the answers: on a shared machine it moves
far less than the request rate does. The floor app and the services reach PostgreSQL on the
same transport: its Unix socket where it listens on one, else TCP (bench.infra).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import scenarios
from bench.costs import session_cpu_seconds
from bench.infra import BenchError, Resources, pin_self, plan_placement, py_spy_record
from bench.loadgen import Request, ensure_wrk, wrk
from bench.platform import Server, start_floor, start_platform


async def _cpu_per_answer(
    wrk_path: str, server: Server, request: Request, seconds: float, connections: int
) -> tuple[float, float]:
    """(ms of server CPU per answer, answers per second) of one wrk run."""
    before = session_cpu_seconds(server.running_pid)
    load = await asyncio.to_thread(
        wrk, wrk_path, server.url, request, seconds=seconds, connections=connections
    )
    spent = session_cpu_seconds(server.running_pid) - before
    answered = max(1, load.requests - load.errors)
    if load.errors:  # timeouts on an overloaded machine, or answers that were not 2xx
        print(f"{load.errors} errors of {load.requests} on {request.path}", flush=True)
    return spent / answered * 1000, load.rate


async def _profile(
    wrk_path: str, server: Server, request: Request, seconds: float, out: Path, label: str
) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise BenchError("py-spy is not installed: pip install py-spy")
    target = out / f"{label}.txt"
    recorder = subprocess.Popen(
        py_spy_record(py_spy, server.running_pid, seconds, target),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.to_thread(wrk, wrk_path, server.url, request, seconds=seconds, connections=32)
    finally:
        await asyncio.to_thread(recorder.wait, 60)


async def measure(args: argparse.Namespace, resources: Resources, workdir: Path) -> None:
    placement = plan_placement()
    pin_self(placement)
    wrk_path = ensure_wrk()
    floor = await start_floor(placement, workdir, resources)
    platform = await start_platform(placement, workdir, resources)
    token = platform.token()
    await scenarios.check_requests(platform, {"authorization": f"Bearer {token}"})
    targets = {
        "json": (floor, Request("GET", "/json")),
        "tax": (
            platform.servers["tax"],
            Request(
                "POST",
                "/v1/tax/calculations",
                body=scenarios.body(scenarios.TAX_CALCULATION),
                token=token,
            ),
        ),
        "quote": (
            platform.servers["discount"],
            Request(
                "POST",
                "/v1/discounts/quotes",
                body=scenarios.body(scenarios.DISCOUNT_QUOTE),
                token=token,
            ),
        ),
    }
    for server, request in targets.values():  # warm-up: caches, prepared statements
        await asyncio.to_thread(wrk, wrk_path, server.url, request, seconds=2, connections=32)
    for round_number in range(1, args.rounds + 1):
        results: dict[str, tuple[float, float]] = {}
        for label, (server, request) in targets.items():
            # The tax calculations' events are published (and consumed) on the server core
            # after their run: a quote measured while they drain gets a part of the core
            # only, and reads as latency-bound. bench.run waits between its runs too.
            await platform.wait_quiet(30)
            results[label] = await _cpu_per_answer(wrk_path, server, request, args.seconds, 32)
        json_rate = results["json"][1]
        print(
            f"round {round_number}: "
            + "; ".join(
                f"{label} {cpu:.3f} ms CPU/answer {rate:,.0f}/s ({rate / json_rate:.1%})"
                for label, (cpu, rate) in results.items()
            ),
            flush=True,
        )
        await platform.wait_quiet(30)
    if args.py_spy is not None:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        for label in ("tax", "quote"):
            server, request = targets[label]
            await _profile(wrk_path, server, request, args.seconds, args.py_spy, label)
            print(f"py-spy profile of {label}: {args.py_spy / (label + '.txt')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--py-spy", type=Path, default=None, help="folder for raw profiles")
    parser.add_argument("--logs", type=Path, default=None, help="keep the servers' logs here")
    args = parser.parse_args()

    async def go() -> None:
        resources = Resources()
        with tempfile.TemporaryDirectory(prefix="bench-hot-") as tmp:
            workdir = args.logs or Path(tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            try:
                await measure(args, resources, workdir)
            finally:
                await resources.close()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
