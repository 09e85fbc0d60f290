"""Caller CPU of one service-to-service call: N sequential tax-sized JSON calls through the
project's invoker to a peer served by uvicorn in another process, the caller's CPU per call
from time.process_time (the peer's CPU is not counted: it runs in its own process).

python -m bench.peer_call [--calls 1000] [--rounds 10] [--invoker http|dapr] [--loop uvloop]
    [--against TREE]

--against TREE also loads TREE's invoker modules (services/common/.../adapters: the breaker,
http_semantics, the two invokers; e.g. a `git archive` of main unpacked in /tmp) and runs
both in one process, taking turns round by round on one peer: the machine is shared, and
round-by-round differences survive a neighbour's load far better than separate runs.
The Dapr invoker is measured against the same peer standing in for the sidecar (its
`/v1.0/invoke/<app>/method/<path>` route), which is what the invoker's client costs."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any

import orjson

from billing_launcher.processes import free_port

# A tax calculation's request and answer as the invoice service sends and gets them: two lines.
TAX_REQUEST: dict[str, Any] = {
    "currency": "EUR",
    "jurisdiction": {"country": "DE", "region": None},
    "customer": {"id": "c-1042", "type": "business", "vat_id": "DE123456789"},
    "price_mode": "net",
    "date": "2026-12-07",
    "reference": "inv-7f3a9c1e-2b4d-4e8f-9a6b-1c2d3e4f5a6b",
    "lines": [
        {
            "id": f"l{i}",
            "description": f"Consulting hours, block {i}",
            "unit_price": "120.00",
            "quantity": "3",
            "category": "services",
        }
        for i in range(2)
    ],
    "seller": {"country": "DE", "region": None, "vat_id": "DE987654321"},
}


def _tax_answer() -> bytes:
    line = {
        "net": "360.00",
        "tax": "68.40",
        "gross": "428.40",
        "exemption": None,
        "vat_category": "S",
        "vat_exemption_reason": None,
        "vat_exemption_reason_code": None,
        "taxes": [
            {
                "rule_id": "r-de-vat",
                "name": "VAT",
                "rate": "0.19",
                "amount": "68.40",
                "compound": False,
            }
        ],
    }
    return orjson.dumps(
        {
            "id": "calc-5b1f0a52-8f7e-4c3d-9a1b-2c3d4e5f6a7b",
            "treatment": "standard",
            "lines": [{"id": f"l{i}", **line} for i in range(2)],
            "breakdown": [
                {
                    "vat_category": "S",
                    "rate": "0.19",
                    "taxable_amount": "720.00",
                    "tax_amount": "136.80",
                    "exemption_reason": None,
                    "exemption_reason_code": None,
                }
            ],
        }
    )


async def peer_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The peer: reads the request, answers the tax-sized body (a bare ASGI app, so the
    peer's own cost stays small and out of the caller's process anyway)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = ANSWER
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


ANSWER = _tax_answer()


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(peer_app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")


ADAPTERS = ("circuit_breaker", "http_semantics", "http_invoker", "dapr_invoker")


def load_adapters(tree: str | None) -> dict[str, ModuleType]:
    """The invoker modules of this tree, or of TREE's services/common loaded beside them (each
    importing TREE's versions of the others; ports, tracing etc. are this tree's), so both
    can run in one process, round for round, on one peer."""
    modules = {
        name: importlib.import_module(f"billing_common.adapters.{name}") for name in ADAPTERS
    }
    if tree is None:
        return modules
    folder = os.path.join(tree, "services", "common", "billing_common", "adapters")
    loaded: dict[str, ModuleType] = {}
    try:
        for name in ADAPTERS:
            qualified = f"billing_common.adapters.{name}"
            spec = importlib.util.spec_from_file_location(
                qualified, os.path.join(folder, f"{name}.py")
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[qualified] = module  # what the next ones import
            spec.loader.exec_module(module)
            loaded[name] = module
    finally:
        for name, module in modules.items():
            sys.modules[f"billing_common.adapters.{name}"] = module
    return loaded


def make_invoker(modules: dict[str, ModuleType], kind: str, port: int) -> Any:
    if kind == "http":
        return modules["http_invoker"].HttpServiceInvoker({"tax": f"http://127.0.0.1:{port}"})
    # The sidecar's address from the environment, as the services' composition root has it.
    os.environ["DAPR_HTTP_PORT"] = str(port)
    return modules["dapr_invoker"].DaprServiceInvoker(token="t")


async def measure(invokers: dict[str, Any], calls: int, rounds: int) -> dict[str, list[float]]:
    """Rounds of `calls` sequential calls, the invokers taking turns round by round, so a
    neighbour's load on the shared machine falls on both alike."""
    headers = {"authorization": "Bearer " + "t" * 180}  # about a signed service token
    per_call: dict[str, list[float]] = {label: [] for label in invokers}
    try:
        for invoker in invokers.values():
            for _ in range(200):  # warm-up: pool connected, caches filled
                await invoker.invoke("tax", "POST", "/v1/tax/calculations", json=TAX_REQUEST)
        for round_number in range(rounds):
            turns = list(invokers.items())
            if round_number % 2:  # who goes first alternates too: the first of a round pays more
                turns.reverse()
            for label, invoker in turns:
                started = time.process_time()
                for _ in range(calls):
                    response = await invoker.invoke(
                        "tax", "POST", "/v1/tax/calculations", json=TAX_REQUEST, headers=headers
                    )
                per_call[label].append((time.process_time() - started) / calls * 1e6)
                assert response.status_code == 200 and response.body["id"].startswith("calc-")
    finally:
        for invoker in invokers.values():
            await invoker.close()
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--invoker", choices=["http", "dapr"], default="http")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the services run uvloop"
    )
    parser.add_argument("--against", help="a tree whose invoker modules to compare with")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    peer = subprocess.Popen([sys.executable, "-m", "bench.peer_call", "--serve", str(port)])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or peer.poll() is not None:
                    raise SystemExit("the peer did not start") from None
                time.sleep(0.05)
        invokers = {"this tree": make_invoker(load_adapters(None), args.invoker, port)}
        if args.against:
            invokers[args.against] = make_invoker(load_adapters(args.against), args.invoker, port)
        run: Callable[[Coroutine[Any, Any, dict[str, list[float]]]], dict[str, list[float]]]
        run = asyncio.run
        if args.loop == "uvloop":
            import uvloop

            run = uvloop.run
        per_call = run(measure(invokers, args.calls, args.rounds))
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    print(f"{args.invoker} invoker on {args.loop}, client CPU per call (us):")
    for label, values in per_call.items():
        print(
            f"  {label}: median {statistics.median(values):.0f}, min {min(values):.0f}, "
            "rounds " + " ".join(f"{value:.0f}" for value in values)
        )
    if args.against:
        ours, theirs = per_call.values()
        differences = [a - b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"  this tree - {args.against}, round by round: median "
            f"{statistics.median(differences):+.0f} us, "
            + " ".join(f"{value:+.0f}" for value in differences)
        )


if __name__ == "__main__":
    main()
