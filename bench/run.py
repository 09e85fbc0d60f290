"""`make bench` / `make bench-quick`: the platform on the direct runtime, each figure beside a
floor measured in the same run. Prints one table and writes bench/out/results.json.

python -m bench.run            full run (a few minutes)
python -m bench.run --quick    smoke run of every section (under a minute; asserts no speed)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform as pyplatform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import scenarios
from bench.costs import (
    Cost,
    CostMeter,
    difference,
    enable_sql_probe,
    session_cpu_seconds,
    total,
)
from bench.infra import (
    ADMIN_POSTGRES_URL,
    BenchError,
    Placement,
    Resources,
    pin_self,
    plan_placement,
)
from bench.loadgen import Load, Request, ensure_wrk, paced, wrk
from bench.platform import Platform, start_floor, start_platform
from bench.report import Figure, Report, percentile
from billing_launcher import seed_flows

OUT_DIR = Path(__file__).with_name("out")
MB = 1024 * 1024


@dataclass(frozen=True)
class Profile:
    name: str
    warmup: float  # seconds of load before each measured wrk run, not counted
    seconds: float  # each measured wrk / paced run
    connections: int  # wrk's fixed concurrency, the same for every closed-loop figure
    paced_connections: int
    # Payments timed while creation is paced (at 50 % and at 100 %), spread evenly over
    # `settlement_seconds`: 150 make p99 the second-worst payment, not the worst of 40.
    settlement_samples: int
    settlement_seconds: float  # each paced run of section 3 (its invoice p50 / p99 too)
    broker_samples: int
    pdf_renders: int
    quiet_timeout: float
    idle_seconds: float  # the servers' background cost is measured this long, then subtracted


FULL = Profile("full", 3, 10, 32, 64, 150, 20, 200, 30, 60, 3)
QUICK = Profile("quick", 0.5, 2, 16, 32, 4, 2, 20, 3, 15, 1)


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


class RssSampler:
    """The largest RSS of each service while load runs, sampled every 250 ms."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self.peak: dict[str, int] = dict.fromkeys(platform.servers, 0)
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            for name, rss in self._platform.rss().items():
                self.peak[name] = max(self.peak[name], rss)
            await asyncio.sleep(0.25)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._task = asyncio.create_task(self._sample())
        try:
            yield
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def closed_loop(
    wrk_path: str,
    url: str,
    request: Request,
    profile: Profile,
    label: str,
    *,
    after_warmup: Callable[[], Awaitable[object]] | None = None,
) -> Load:
    """A warm-up run, then the measured one, both at the profile's fixed concurrency;
    `after_warmup` runs between them (to let the warm-up's backlog settle, say)."""
    say(f"{label}: wrk -c{profile.connections} {profile.seconds:g}s (+{profile.warmup:g}s warm-up)")
    if profile.warmup:
        # Its own Idempotency-Keys: a key the measured run reused would be a cheap replay.
        warmup = replace(
            request,
            idempotency_prefix=request.idempotency_prefix and f"{request.idempotency_prefix}-w",
        )
        await asyncio.to_thread(
            wrk, wrk_path, url, warmup, seconds=profile.warmup, connections=profile.connections
        )
    if after_warmup is not None:
        await after_warmup()
    load = await asyncio.to_thread(
        wrk, wrk_path, url, request, seconds=profile.seconds, connections=profile.connections
    )
    say(
        f"{label}: {load.rate:,.0f}/s p50 {load.p50_ms:.2f} ms p99 {load.p99_ms:.2f} ms"
        f" ({load.errors} errors of {load.requests})"
    )
    return load


def machine(placement: Placement, wrk_path: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
    wrk_version = subprocess.run(
        [wrk_path, "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory / 1024**3, 1),
        "python": pyplatform.python_version(),
        "kernel": pyplatform.release(),
        "wrk": " ".join(wrk_version[0].split()[:2]) if wrk_version else "wrk",
        "placement": placement.describe(),
    }


async def postgres_version() -> str:
    conn = await asyncpg.connect(ADMIN_POSTGRES_URL)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def measure(profile: Profile, resources: Resources, workdir: Path) -> Report:
    placement = plan_placement()
    pin_self(placement)
    wrk_path = ensure_wrk()
    report = Report(profile=profile.name, machine=machine(placement, wrk_path))
    report.machine["postgresql"] = await postgres_version()
    say(placement.describe())
    run_id = uuid.uuid4().hex[:8]

    # 1. Floors -----------------------------------------------------------------------------
    floor = await start_floor(placement, workdir, resources)
    bare = await closed_loop(wrk_path, floor.url, Request("GET", "/json"), profile, "floor json")
    insert_cpu: list[float] = []

    async def floor_cpu_mark() -> None:
        insert_cpu.append(session_cpu_seconds(floor.running_pid))

    insert = await closed_loop(
        wrk_path,
        floor.url,
        Request(
            "POST",
            "/insert",
            body=scenarios.body(scenarios.ORDER),
            idempotency_prefix=f"floor-{run_id}",
        ),
        profile,
        "floor insert",
        after_warmup=floor_cpu_mark,
    )
    report.floor_cpu_per_insert = (session_cpu_seconds(floor.running_pid) - insert_cpu[0]) / max(
        1, insert.requests - insert.errors
    )
    report.floor_rss = floor.rss_bytes()
    floor.stop()  # its CPU and memory are not the platform's
    report.loads.update({"floor_json": bare, "floor_insert": insert})

    # 2. The platform -------------------------------------------------------------------------
    say("starting the platform: four services, fresh databases and vhost")
    counts_dir = workdir / "sqlcounts"
    enable_sql_probe(counts_dir)  # the services count their SQL; the floor app did not
    platform = await start_platform(placement, workdir, resources)
    meter = CostMeter(platform, counts_dir)
    token = platform.token()
    headers = {"authorization": f"Bearer {token}"}
    await scenarios.check_requests(platform, headers)
    settle_ids = await scenarios.issued_invoices(platform, headers, profile.settlement_samples)
    rest_ids = await scenarios.issued_invoices(platform, headers, profile.settlement_samples)
    pdf_id = settle_ids[0]
    settle_ids = settle_ids[1:]
    await platform.wait_quiet(profile.quiet_timeout)
    idle = platform.rss()

    sampler = RssSampler(platform)
    async with sampler.running():
        # 4. Tax and discount alone
        tax = await closed_loop(
            wrk_path,
            platform.url("tax"),
            Request(
                "POST",
                "/v1/tax/calculations",
                body=scenarios.body(scenarios.TAX_CALCULATION),
                token=token,
            ),
            profile,
            "tax calculation",
        )
        await platform.wait_quiet(profile.quiet_timeout)
        quote = await closed_loop(
            wrk_path,
            platform.url("discount"),
            Request(
                "POST",
                "/v1/discounts/quotes",
                body=scenarios.body(scenarios.DISCOUNT_QUOTE),
                token=token,
            ),
            profile,
            "discount quote",
        )
        report.loads.update({"tax": tax, "discount_quote": quote})
        await platform.wait_quiet(profile.quiet_timeout)

        # 2. Invoice creation, end to end
        create = Request(
            "POST",
            "/v1/invoices",
            body=scenarios.body(scenarios.ORDER),
            token=token,
            idempotency_prefix=f"bench-{run_id}-max",
        )
        before: dict[str, Cost] = {}
        background: dict[str, Cost] = {}  # per second, with nothing to do (relay polls, sweepers)
        marks: list[float] = []

        async def settle_then_snapshot() -> None:
            await platform.wait_quiet(profile.quiet_timeout)
            quiet = meter.snapshot()
            await asyncio.sleep(profile.idle_seconds)
            before.update(meter.snapshot())
            background.update(
                {
                    name: cost.scaled(1 / profile.idle_seconds)
                    for name, cost in difference(before, quiet).items()
                }
            )
            marks.append(time.monotonic())

        sustained = await closed_loop(
            wrk_path,
            platform.url("invoice"),
            create,
            profile,
            "invoice creation",
            after_warmup=settle_then_snapshot,
        )
        report.loads["invoice_max"] = sustained
        left = await platform.wait_quiet(profile.quiet_timeout)
        # Everything an invoice costs, its events' relays and consumers included: the
        # measured run and the drain of what it left in outboxes and queues.
        spent = difference(meter.snapshot(), before)
        elapsed = time.monotonic() - marks[0]
        report.costs["invoice"] = {
            name: (cost - background[name].scaled(elapsed)).per(
                sustained.requests - sustained.errors
            )
            for name, cost in spent.items()
        }
        report.notes.append(f"events still unsettled after the sustained run's drain: {left}")
        rate = max(1.0, sustained.rate)

        # 3. Settlement, measured while invoice creation runs at 50 % of that rate: from the
        # payment POST answering `succeeded` to the invoice row reading `paid`, one payment
        # at a time, `settlement_samples` of them spread over 90 % of the paced run (150 over
        # 18 s in the full profile: 8 payments/s on top of the creations; it was 40 over 9 s
        # before the eighth round, when p99 was the single worst payment).
        for fraction, label, ids in ((0.5, "half", settle_ids), (1.0, "full", rest_ids)):
            offered = rate * fraction
            say(f"invoice creation paced at {offered:,.0f}/s for {profile.settlement_seconds:g}s")
            paced_run = paced(
                platform.url("invoice"),
                Request(
                    "POST",
                    "/v1/invoices",
                    body=scenarios.body(scenarios.ORDER),
                    token=token,
                    idempotency_prefix=f"bench-{run_id}-{label}",
                ),
                rate=offered,
                seconds=profile.settlement_seconds,
                connections=profile.paced_connections,
            )
            settling = scenarios.settlement(
                platform, headers, ids, spread_seconds=profile.settlement_seconds * 0.9
            )
            load, samples = await asyncio.gather(paced_run, settling)
            report.loads[f"invoice_{label}"] = load
            report.samples[f"settlement_{label}"] = samples
            say(
                f"  {load.rate:,.0f}/s p50 {load.p50_ms:.2f} ms p99 {load.p99_ms:.2f} ms"
                f" ({load.errors} errors {load.error_kinds or ''});"
                f" settlement p50 {percentile(samples, 0.5):.1f} ms"
                f" p99 {percentile(samples, 0.99):.1f} ms over {len(samples)} payments"
            )
            await platform.wait_quiet(profile.quiet_timeout)

        # 5. PDF: the cached download under load
        html = await scenarios.invoice_html(platform, headers, pdf_id)
        download = await closed_loop(
            wrk_path,
            platform.url("invoice"),
            Request("GET", f"/v1/invoices/{pdf_id}/pdf", token=token),
            profile,
            "cached PDF download",
        )
        report.loads["pdf_download"] = download
    report.rss_idle = idle
    report.rss_load = sampler.peak

    # 5. PDF render, warm, in the service's worker process (nothing else running)
    say(f"PDF render in a worker process x{profile.pdf_renders}")
    renders, pages = await asyncio.to_thread(scenarios.render_pdf, html, profile.pdf_renders)
    report.samples["pdf_render"] = renders
    report.pdf_pages = pages

    # 3. The settlement floor: one broker hop
    report.samples["broker_hop"] = await scenarios.broker_hop(
        platform.amqp_url, profile.broker_samples
    )
    return report


def _count(per_invoice: float) -> str:
    """A per-invoice count to one decimal. The idle background subtracted from it is
    sampled over a few seconds, so a service whose periodic work (a sweeper's transaction)
    fell into that window comes out a hair below zero: shown as 0.0, not "-0"."""
    return f"{max(per_invoice, 0.0) if per_invoice > -0.05 else per_invoice:.1f}"


def cost_figures(report: Report) -> list[Figure]:
    """What one invoice costs the servers: CPU beside the INSERT floor's CPU per answer,
    and SQL statements / transactions (BEGIN and COMMIT not counted as statements)."""
    costs = report.costs.get("invoice")
    if not costs:
        return []
    whole = total(costs)
    cpu_parts = ", ".join(f"{name} {cost.cpu_seconds * 1000:.1f}" for name, cost in costs.items())
    sql_parts = ", ".join(
        f"{name} {_count(cost.statements)}/{_count(cost.transactions)}"
        for name, cost in costs.items()
    )
    return [
        Figure(
            f"invoice server CPU per answer ({cpu_parts})",
            whole.cpu_seconds * 1000,
            "ms",
            floor=report.floor_cpu_per_insert * 1000 or None,
        ),
        Figure(
            f"invoice SQL statements / transactions ({sql_parts})",
            whole.statements,
            "",
            second=whole.transactions,
        ),
    ]


def figures(report: Report, profile: Profile) -> list[Figure]:
    loads, samples = report.loads, report.samples
    bare, insert = loads["floor_json"], loads["floor_insert"]
    half, full = loads["invoice_half"], loads["invoice_full"]
    hop = samples["broker_hop"]
    rows = [
        Figure("floor: bare JSON", bare.rate, "req/s"),
        Figure("floor: bare JSON p50 / p99", bare.p50_ms, "ms", second=bare.p99_ms),
        Figure("floor: one INSERT", insert.rate, "req/s"),
        Figure("floor: one INSERT p50 / p99", insert.p50_ms, "ms", second=insert.p99_ms),
        Figure(
            "invoice creation, sustained",
            loads["invoice_max"].rate,
            "inv/s",
            floor=insert.rate,
            target_ratio=0.04,
            target_text=">= 4% of INSERT",
        ),
        *cost_figures(report),
        Figure(
            f"invoice p50 / p99 at 50% ({half.offered_rate:,.0f}/s)",
            half.p50_ms,
            "ms",
            second=half.p99_ms,
            floor=insert.p99_ms,
            ratio_of_second=True,
            target_ratio=3.0,
            ratio_is_ceiling=True,
            target_text="p99 <= 3x INSERT p99",
        ),
        Figure(
            f"invoice p50 / p99 at 100% ({full.offered_rate:,.0f}/s)",
            full.p50_ms,
            "ms",
            second=full.p99_ms,
        ),
        Figure(
            "settlement p50 (creation at 50%)",
            percentile(samples["settlement_half"], 0.5),
            "ms",
            floor=percentile(hop, 0.5),
            target_value=10.0,
            target_text="<= 10 ms",
        ),
        Figure(
            "settlement p99 (creation at 50%)",
            percentile(samples["settlement_half"], 0.99),
            "ms",
            floor=percentile(hop, 0.99),
            target_value=40.0,
            target_text="<= 40 ms",
        ),
        Figure(
            "settlement p50 / p99 (creation at 100%)",
            percentile(samples["settlement_full"], 0.5),
            "ms",
            second=percentile(samples["settlement_full"], 0.99),
        ),
        Figure(
            "tax calculation",
            loads["tax"].rate,
            "req/s",
            floor=bare.rate,
            target_ratio=0.12,
            target_text=">= 12% of bare JSON",
        ),
        Figure(
            "discount quote",
            loads["discount_quote"].rate,
            "req/s",
            floor=bare.rate,
            target_ratio=0.2,
            target_text=">= 20% of bare JSON",
        ),
        Figure(
            f"PDF render warm p50 ({report.pdf_pages} page)",
            percentile(samples["pdf_render"], 0.5),
            "ms",
            target_value=75.0,
            target_text="<= 75 ms",
        ),
        Figure("PDF render warm p99", percentile(samples["pdf_render"], 0.99), "ms"),
        Figure(
            "PDF cached download",
            loads["pdf_download"].rate,
            "req/s",
            floor=bare.rate,
        ),
    ]
    for name in report.rss_idle:
        rows.append(
            Figure(
                f"RSS {name} idle / under load",
                report.rss_idle[name] / MB,
                "MB",
                second=report.rss_load[name] / MB,
                floor=report.floor_rss / MB,
                second_target=110.0,
                target_text="load <= 110 MB",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "results.json")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    started = time.monotonic()

    async def go() -> Report:
        resources = Resources()
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            try:
                return await measure(profile, resources, Path(tmp))
            finally:
                await resources.close()

    # SIGTERM ends the run like Ctrl-C does, so the clean-up runs either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        report = asyncio.run(go())
    except (BenchError, seed_flows.FlowFailed) as exc:  # a setup step answered wrongly
        say(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; servers stopped, databases and vhost removed")
        return 130
    report.seconds = time.monotonic() - started
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    rows = figures(report, profile)
    sys.stdout.write("\n" + report.table(rows) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.as_dict(rows), indent=2) + "\n")
    args.out.with_suffix(".md").write_text(report.markdown(rows))
    say(f"wrote {args.out} and {args.out.with_suffix('.md')} ({report.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
