"""The one process launcher (billing_launcher.processes) behind `make up`, the fault tests and
the benchmarks: started on the port it is given, ready when its path answers, found again
through its pid file by another command (`make down`), stopped, and its log shown when it
dies during start-up."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from billing_launcher.processes import NotReady, ProcessGroup, ServiceProcess, free_port


def http_server(name: str, tmp_path: Path, *, pid_file: Path | None = None) -> ServiceProcess:
    port = free_port()
    return ServiceProcess(
        name,
        port,
        dict(os.environ),
        tmp_path / f"{name}.log",
        argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        pid_file=pid_file,
    )


async def test_a_group_starts_waits_and_a_later_command_stops_it_by_pid_file(
    tmp_path: Path,
) -> None:
    pid_files = {name: tmp_path / "run" / f"{name}.pid" for name in ("a", "b")}
    group = ProcessGroup({n: http_server(n, tmp_path, pid_file=p) for n, p in pid_files.items()})
    group.start()
    try:
        await group.wait_ready(path="/", timeout=30)
        pids = {name: group[name].pid for name in group.members}
        assert all(pids.values())
        assert {n: int(p.read_text()) for n, p in pid_files.items()} == pids
        # `make down` is another process: it knows only the pid files.
        later = ProcessGroup(
            {
                n: ServiceProcess(n, 0, {}, tmp_path / "x.log", pid_file=p)
                for n, p in pid_files.items()
            }
        )
        assert set(later.running) == {"a", "b"}
        later.stop()
        assert later.running == {} and not any(p.exists() for p in pid_files.values())
        assert all(group[name].process.wait(timeout=5) is not None for name in group.members)  # type: ignore[union-attr]
    finally:
        group.stop()


async def test_a_process_that_dies_during_start_up_is_not_ready_with_its_log(
    tmp_path: Path,
) -> None:
    dying = ServiceProcess(
        "dying",
        free_port(),
        dict(os.environ),
        tmp_path / "dying.log",
        argv=[sys.executable, "-c", "import sys; print('no database'); sys.exit(3)"],
    )
    dying.start()
    with pytest.raises(NotReady, match="no database"):
        await dying.wait_ready(timeout=30)
    dying.stop()
    assert not dying.running
