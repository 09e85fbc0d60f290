"""Caller CPU of one service-to-service call: N sequential tax-sized JSON calls through the
project's invoker to a peer served by uvicorn in another process, the caller's CPU per call
from time.process_time (the peer's CPU is not counted: it runs in its own process).

python -m bench.peer_call [--calls 3000] [--rounds 5] [--invoker http|dapr] [--loop uvloop]
    [--src TREE]

--src TREE imports billing_common from TREE/services/common instead of this tree, so main and
a branch can be measured alternately with one copy of this script (e.g. a `git archive` of
main unpacked in /tmp). The machine is shared: compare alternating runs, not single ones.
The Dapr invoker is measured against the same peer standing in for the sidecar (its
`/v1.0/invoke/<app>/method/<path>` route), which is what the invoker's client costs."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import orjson

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def measure(invoker_kind: str, port: int, calls: int, rounds: int) -> list[float]:
    headers = {"authorization": "Bearer " + "t" * 180}  # about a signed service token
    invoker: Any
    if invoker_kind == "http":
        from billing_common.adapters.http_invoker import HttpServiceInvoker

        invoker = HttpServiceInvoker({"tax": f"http://127.0.0.1:{port}"})
    else:
        from billing_common.adapters.dapr_invoker import DaprServiceInvoker

        # The sidecar's address from the environment, as the services' composition root has it.
        os.environ["DAPR_HTTP_PORT"] = str(port)
        invoker = DaprServiceInvoker(token="t")
    per_call: list[float] = []
    try:
        for _ in range(200):  # warm-up: pool connected, caches filled
            await invoker.invoke("tax", "POST", "/v1/tax/calculations", json=TAX_REQUEST)
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(calls):
                response = await invoker.invoke(
                    "tax", "POST", "/v1/tax/calculations", json=TAX_REQUEST, headers=headers
                )
            per_call.append((time.process_time() - started) / calls * 1e6)
            assert response.status_code == 200 and response.body["id"].startswith("calc-")
    finally:
        await invoker.close()
    return per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--invoker", choices=["http", "dapr"], default="http")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="uvloop", help="the services run uvloop"
    )
    parser.add_argument("--src", help="tree whose services/common to import billing_common from")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.src:
        sys.path.insert(0, os.path.join(args.src, "services", "common"))
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
        run = asyncio.run
        if args.loop == "uvloop":
            import uvloop

            run = uvloop.run
        per_call = run(measure(args.invoker, port, args.calls, args.rounds))
    finally:
        peer.terminate()
        peer.wait(timeout=10)
    import billing_common

    print(
        f"{args.invoker} invoker on {args.loop} from {os.path.dirname(billing_common.__file__)}: "
        f"client CPU per call median {statistics.median(per_call):.0f} us, "
        f"min {min(per_call):.0f}, rounds "
        + " ".join(f"{value:.0f}" for value in per_call)
    )


if __name__ == "__main__":
    main()
