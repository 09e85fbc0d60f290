"""The benchmark harness's own parts, without the platform: the figures' verdicts, the paced
client and the wrk script (each request a fresh Idempotency-Key), against a tiny local server."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# `bench` runs as `python -m bench.run` from the repository root; import it from there too.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.infra import BenchError
from bench.loadgen import Request, ensure_wrk, paced, wrk
from bench.report import Figure, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0


def test_figures_judge_their_targets() -> None:
    rate = Figure("x", 30.0, "inv/s", floor=100.0, target_ratio=0.25)
    assert rate.ratio == pytest.approx(0.30)
    assert rate.met is True
    assert rate.cells()[3] == "30%"
    assert Figure("x", 20.0, "inv/s", floor=100.0, target_ratio=0.25).met is False
    p99 = Figure(
        "p",
        5.0,
        "ms",
        second=50.0,
        floor=10.0,
        ratio_of_second=True,
        target_ratio=4.0,
        ratio_is_ceiling=True,
    )
    assert p99.ratio == pytest.approx(5.0)
    assert p99.met is False
    assert Figure("t", 19.9, "ms", target_value=20.0).met is True
    assert Figure("m", 90.0, "MB", second=151.0, second_target=150.0).met is False
    assert Figure("info", 1.0, "ms").met is None


class _Server:
    """HTTP/1.1 keep-alive, answers 200 to everything, remembers each Idempotency-Key."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "idempotency-key":
                        self.keys.append(value.strip())
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    state = _Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state


async def test_paced_client_offers_the_rate_with_fresh_keys(server: _Server) -> None:
    load = await paced(
        f"http://127.0.0.1:{server.port}",
        Request("POST", "/v1/things", body=b'{"a": 1}', idempotency_prefix="k"),
        rate=200,
        seconds=1.0,
        connections=8,
    )
    assert load.requests == 200
    assert load.errors == 0
    assert 150 <= load.rate <= 220
    assert len(set(server.keys)) == 200


@pytest.fixture
def wrk_path() -> str:
    """wrk, installed as the bench installs it (Debian's package, as root); where it cannot
    be, a skip, except under CI=true, where the harness's own test must run."""
    try:
        return ensure_wrk()
    except BenchError as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"wrk is required under CI=true: {missing}", pytrace=False)
        pytest.skip(str(missing))


async def test_wrk_script_sends_a_fresh_key_per_request(server: _Server, wrk_path: str) -> None:
    load = await asyncio.to_thread(
        wrk,
        wrk_path,
        f"http://127.0.0.1:{server.port}",
        Request("POST", "/v1/things", body=b"{}", idempotency_prefix="w"),
        seconds=1,
        connections=4,
    )
    assert load.requests > 0
    assert load.errors == 0
    assert len(server.keys) >= load.requests
    assert len(set(server.keys)) == len(server.keys)


def test_cost_meter_keeps_what_an_ended_child_spent(tmp_path: Path) -> None:
    """A process of a service's session that ends between two snapshots (a PDF worker, a
    migration) keeps its CPU and its SQL counts in the service's cost: the difference of two
    snapshots is never negative (it was, "-0" transactions in the printed table)."""
    import subprocess
    import time
    from types import SimpleNamespace

    from bench.costs import CostMeter

    counts = tmp_path / "counts"
    counts.mkdir()
    done = tmp_path / "child-done"
    # The session's leader starts a child that counts 5 statements and 1 transaction the way
    # the SQL probe does, burns CPU, waits to be seen, and ends; the leader reaps it and stays.
    child = (
        "import os, struct, sys, time\n"
        f"open(os.path.join({str(counts)!r}, f'{{os.getpid()}}.sqlcounts'), 'wb')"
        ".write(struct.pack('<QQ', 5, 1))\n"
        "x = 0\n"
        "for i in range(4_000_000): x += i\n"
        "sys.stdout.write('burnt\\n'); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
    )
    leader = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {child!r}])\n"
        f"open({str(done)!r}, 'w').close()\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", leader],
        start_new_session=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        platform = SimpleNamespace(servers={"svc": SimpleNamespace(pid=proc.pid)})
        meter = CostMeter(platform, counts)  # type: ignore[arg-type]
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "burnt\n"
        while_alive = meter.snapshot()["svc"]
        proc.stdin.write("\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while not done.exists():
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        after = meter.snapshot()["svc"]
    finally:
        proc.kill()
        proc.wait()
    assert while_alive.statements == 5 and while_alive.transactions == 1
    assert after.statements == 5 and after.transactions == 1
    assert while_alive.cpu_seconds > 0.05
    # The child's 0.3 s stays (in its parent's cutime); sums of ticks / CLK_TCK may differ
    # in the last float digit.
    assert after.cpu_seconds >= while_alive.cpu_seconds - 1e-9


def test_per_invoice_counts_print_noise_below_zero_as_zero() -> None:
    from bench.run import _count

    assert _count(5.64) == "5.6"
    assert _count(-0.004) == "0.0"  # the idle background's sampling noise, not "-0"
    assert _count(-0.3) == "-0.3"  # a real negative is a harness bug: shown as it is
