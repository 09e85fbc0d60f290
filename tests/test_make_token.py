"""`make token` as a user runs it, beside `make run` and `make up` in one checkout: whichever
of them wrote var/secrets.json first, the printed token is accepted by the running platform,
and still by the next `make run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.direct_platform import free_port

SERVICES = ("tax", "discount", "invoice", "payment")


def _env(ports: dict[str, int]) -> dict[str, str]:
    # The checkout's defaults (var/ under the working directory), as `make` runs them.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATA_DIR", "SECRETS_FILE", "JWT_SIGNING_KEY", "PEER_URLS")
        and not key.endswith(("_DATA_DIR", "_SECRETS_FILE"))
    }
    env.update({f"{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env["LOAD_SAMPLE_DATA"] = "false"
    return env


@contextmanager
def make_run(cwd: Path, env: dict[str, str]) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, "-m", "billing_launcher", "run", "--services", "tax"],
        cwd=cwd,
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
        yield
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def make_token(cwd: Path, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-m", "billing_common.devtoken", "--tenant", "demo", "--scopes", "all"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def make_up_writes_its_secrets(cwd: Path, env: dict[str, str]) -> None:
    """The first thing `make up` does, before it needs PostgreSQL or RabbitMQ."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from billing_launcher.direct import ensure_secrets; ensure_secrets()",
        ],
        cwd=cwd,
        env=env,
        check=True,
    )


def answers(port: int, token: str) -> int:
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/tax/rules",
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
    )
    return response.status_code


def test_make_token_is_accepted_by_make_run_whichever_wrote_the_secrets(tmp_path: Path) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = _env(ports)
    with make_run(tmp_path, env):
        # `make up` tried while `make run` serves (its ports are taken, but it writes its
        # secrets file first): `make token` now reads that file.
        make_up_writes_its_secrets(tmp_path, env)
        assert answers(ports["tax"], make_token(tmp_path, env)) == 200
    assert (tmp_path / "var" / "secrets.json").exists()
    # A later `make run` in the same checkout accepts a token printed before it started.
    earlier = make_token(tmp_path, env)
    with make_run(tmp_path, env):
        assert answers(ports["tax"], earlier) == 200
        assert answers(ports["tax"], make_token(tmp_path, env)) == 200
