"""`make run` as a user runs it: one `python -m billing_launcher run` process starting the four
services at once, each migrating its own SQLite file, then serving Swagger and the samples."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx

from tests.direct_platform import free_port

SERVICES = ("tax", "discount", "invoice", "payment")


def test_make_run_serves_swagger_and_correct_sample_results(tmp_path: Path) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "SECRETS_FILE": str(tmp_path / "none.json"),
        **{f"{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "PEER_URLS": "",
    }
    env.pop("PEER_URLS")
    process = subprocess.Popen(
        [sys.executable, "-m", "billing_launcher", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while "Stop with Ctrl-C" not in "".join(output):
            line = process.stdout.readline().decode(errors="replace")
            if not line and process.poll() is not None:
                raise AssertionError("launcher exited:\n" + "".join(output)[-3000:])
            output.append(line)
            assert time.monotonic() < deadline, "".join(output)[-3000:]
        banner = "".join(output)
        for port in ports.values():
            assert f"http://localhost:{port}/docs" in banner

        # What `make token` prints, in the same environment.
        token = subprocess.run(
            [sys.executable, "-m", "billing_common.devtoken"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        auth = {"authorization": f"Bearer {token}"}
        with httpx.Client(timeout=10) as http:
            for port in ports.values():
                docs = http.get(f"http://127.0.0.1:{port}/docs")
                assert docs.status_code == 200 and "swagger-ui" in docs.text.lower()
                assert http.get(f"http://127.0.0.1:{port}/openapi.json").json()["paths"]
            calc = http.post(
                f"http://127.0.0.1:{ports['tax']}/v1/tax/calculations",
                json={
                    "currency": "CAD",
                    "jurisdiction": {"country": "CA", "region": "QC"},
                    "lines": [{"unit_price": "100.00", "quantity": "1", "category": "standard"}],
                },
                headers=auth,
            )
            assert calc.status_code == 201, calc.text
            taxes = sorted(Decimal(t["amount"]) for t in calc.json()["lines"][0]["taxes"])
            assert taxes == [Decimal("5.00"), Decimal("9.98")]  # GST 5 % + QST 9.975 % half up
            quote = http.post(
                f"http://127.0.0.1:{ports['discount']}/v1/discounts/quotes",
                json={
                    "customer": {"id": "c1", "type": "regular"},
                    "currency": "EUR",
                    "amount": "200.00",
                    "coupon_codes": ["WELCOME10"],
                },
                headers=auth,
            )
            assert quote.status_code == 200, quote.text
            assert Decimal(quote.json()["total_discount"]) == Decimal("20.00")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the launcher did not stop on Ctrl-C") from None
    assert process.returncode == 0, "".join(output)[-3000:]
