"""Load generators.

- `wrk` (C, from Debian) at a fixed concurrency: the most a server sustains (closed loop:
  each connection sends its next request when the answer to the last one arrived).
- `paced`: an open-loop client at a constant rate, for latency at 50 % and 100 % of that.
  wrk 4 cannot pace (wrk2 can, but is not in Debian), so this is our own: requests are
  scheduled at start + i/rate and their latency is measured from the scheduled instant, not
  from when a connection was free, so a server that falls behind is charged for the queue it
  builds (no coordinated omission, the method of wrk2 and HdrHistogram). It speaks HTTP/1.1
  keep-alive over raw asyncio streams on uvloop: a few tens of microseconds of client CPU per
  request, far below the rates it paces.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.infra import BenchError

LUA_SCRIPT = Path(__file__).with_name("request.lua")


@dataclass(frozen=True)
class Load:
    """What one run measured. Latencies in milliseconds."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    offered_rate: float | None = None  # paced runs: the rate asked for
    # paced runs: what the errors were (HTTP status, or "transport"), so a failing run says why
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, float | int | dict[str, int] | None]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "errors": self.errors,
            "rate": round(self.rate, 1),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "max_ms": round(self.max_ms, 2),
            "offered_rate": self.offered_rate,
            "error_kinds": dict(self.error_kinds),
        }


def ensure_wrk() -> str:
    """wrk's path; installed from Debian's packages when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BenchError(
            "wrk is not installed: `sudo apt-get install -y wrk` (Debian/Ubuntu), then rerun"
        )
    print("[bench] installing wrk from Debian's packages (apt-get install -y wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BenchError(f"apt-get install wrk failed: {result.stderr.strip()[-500:]}")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is still not on PATH after installing it")
    return found


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes | None = None
    token: str | None = None
    # Set: each request gets "<prefix>-<n>" as its Idempotency-Key, so each one creates.
    idempotency_prefix: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = field(default=())


def wrk(
    wrk_path: str,
    base_url: str,
    request: Request,
    *,
    seconds: float,
    connections: int,
    threads: int = 1,
) -> Load:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        env = {
            **os.environ,
            "BENCH_METHOD": request.method,
            "BENCH_PATH": request.path,
            "BENCH_TOKEN": request.token or "",
            "BENCH_IDEMPOTENCY_PREFIX": request.idempotency_prefix or "",
        }
        if request.body is not None:
            body_file = Path(tmp) / "body.json"
            body_file.write_bytes(request.body)
            env["BENCH_BODY_FILE"] = str(body_file)
        argv = [
            wrk_path,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA_SCRIPT),
            base_url,
        ]
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stdout}\n{result.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data["errors"].values())
    latency = data["latency_us"]
    return Load(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=int(errors),
        p50_ms=latency["p50"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
    )


# -- the paced (open-loop) client -----------------------------------------------------------


def _request_bytes(request: Request, host: str, number: int) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}"]
    if request.token:
        lines.append(f"Authorization: Bearer {request.token}")
    if request.idempotency_prefix:
        lines.append(f"Idempotency-Key: {request.idempotency_prefix}-{number}")
    lines += [f"{k}: {v}" for k, v in request.extra_headers]
    body = request.body or b""
    if request.body is not None:
        lines.append("Content-Type: application/json")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length: int | None = None
    chunked = False
    for raw in header_block.split(b"\r\n"):
        name, _, value = raw.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def paced(
    base_url: str,
    request: Request,
    *,
    rate: float,
    seconds: float,
    connections: int,
) -> Load:
    """Offer `rate` requests/s for `seconds`; latency from each request's scheduled time."""
    host_port = base_url.removeprefix("http://").rstrip("/")
    host, _, port = host_port.partition(":")
    total = max(1, int(rate * seconds))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0  # transport failures and answers >= 400
    failed = 0  # transport failures only: these have no latency
    kinds: Counter[str] = Counter()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        nonlocal errors, failed
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            while (item := await queue.get()) is not None:
                number, scheduled = item
                # A kept-alive connection may have been closed by the server's idle timeout
                # (uvicorn: 5 s) while this client waited at a low rate; like any HTTP client,
                # resend once on a fresh connection. Safe: every request carries its own
                # Idempotency-Key, so a resend can never create twice.
                status = 0
                for attempt in (1, 2):
                    reused = writer is not None
                    try:
                        if writer is None or reader is None:
                            reader, writer = await asyncio.open_connection(host, int(port))
                        writer.write(_request_bytes(request, host_port, number))
                        status = await _read_response(reader)
                        break
                    except (OSError, asyncio.IncompleteReadError, ValueError):
                        if writer is not None:
                            writer.close()
                        reader = writer = None
                        if attempt == 1 and reused:
                            continue
                        status = 0
                        break
                if status == 0:
                    errors += 1
                    failed += 1
                    kinds["transport"] += 1
                    continue
                latencies.append(loop.time() - scheduled)
                if status >= 400:
                    errors += 1
                    kinds[str(status)] += 1
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    started = loop.time()
    for number in range(total):
        scheduled = started + number / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((number, scheduled))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = loop.time() - started
    ordered = sorted(latencies)
    return Load(
        requests=len(latencies) + failed,
        seconds=elapsed,
        errors=errors,
        p50_ms=_percentile(ordered, 0.50) * 1000,
        p99_ms=_percentile(ordered, 0.99) * 1000,
        max_ms=(ordered[-1] if ordered else 0.0) * 1000,
        offered_rate=round(rate, 1),
        error_kinds=dict(kinds),
    )
