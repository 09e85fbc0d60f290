"""What the servers spend per answer: CPU time from /proc and SQL statements and
transactions from the probe (bench/sql_probe), per service, between two snapshots."""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from bench.platform import Platform

PROBE_DIR = Path(__file__).with_name("sql_probe")
_TICK = os.sysconf("SC_CLK_TCK")
_COUNTS = struct.Struct("<QQ")


def enable_sql_probe(counts_dir: Path) -> None:
    """Processes started after this (they copy os.environ) count their SQL into `counts_dir`."""
    counts_dir.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_SQL_COUNTS"] = str(counts_dir)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{PROBE_DIR}{os.pathsep}{path}" if path else str(PROBE_DIR)


def _sessions() -> dict[int, tuple[int, float]]:
    """pid -> (session id, CPU seconds) of every process we can read: its own user+system
    time and that of its children it has waited for. A child that ended (a PDF worker, a
    migration) is then still counted, in its parent's figure: summed over a session's live
    processes, the CPU never goes back between two snapshots."""
    found: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Fields after the command name, which may itself hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            ticks = sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
            found[int(entry.name)] = (int(fields[3]), ticks / _TICK)
    return found


@dataclass(frozen=True)
class Cost:
    cpu_seconds: float = 0.0
    statements: float = 0
    transactions: float = 0

    def __sub__(self, other: Cost) -> Cost:
        return Cost(
            self.cpu_seconds - other.cpu_seconds,
            self.statements - other.statements,
            self.transactions - other.transactions,
        )

    def scaled(self, factor: float) -> Cost:
        return Cost(self.cpu_seconds * factor, self.statements * factor, self.transactions * factor)

    def per(self, count: float) -> Cost:
        count = max(count, 1.0)
        return Cost(self.cpu_seconds / count, self.statements / count, self.transactions / count)


class CostMeter:
    """Each service's server process and its children (the launcher starts every server in
    a session of its own, so the session id names the service)."""

    def __init__(self, platform: Platform, counts_dir: Path) -> None:
        self._sessions = {server.pid: name for name, server in platform.servers.items()}
        self._counts_dir = counts_dir
        # Every process ever seen in a service's session: its SQL counts file outlives it,
        # and its last counts stay the service's (dropping them once it ended made the
        # difference to an earlier snapshot, which had them, negative).
        self._owner: dict[int, str] = {}

    def snapshot(self) -> dict[str, Cost]:
        cpu = dict.fromkeys(self._sessions.values(), 0.0)
        owner = self._owner
        for pid, (session, seconds) in _sessions().items():
            if (name := self._sessions.get(session)) is not None:
                cpu[name] += seconds
                owner[pid] = name
        statements = dict.fromkeys(cpu, 0.0)
        transactions = dict.fromkeys(cpu, 0.0)
        for path in self._counts_dir.glob("*.sqlcounts"):
            name = owner.get(int(path.stem))
            if name is None:
                continue  # not a process of the services under test (or never seen alive)
            with contextlib.suppress(OSError, struct.error):
                done, begun = _COUNTS.unpack(path.read_bytes()[: _COUNTS.size])
                statements[name] += done
                transactions[name] += begun
        return {name: Cost(cpu[name], statements[name], transactions[name]) for name in cpu}


def difference(after: dict[str, Cost], before: dict[str, Cost]) -> dict[str, Cost]:
    return {name: after[name] - before.get(name, Cost()) for name in after}


def total(costs: dict[str, Cost]) -> Cost:
    return Cost(
        sum(cost.cpu_seconds for cost in costs.values()),
        sum(cost.statements for cost in costs.values()),
        sum(cost.transactions for cost in costs.values()),
    )


def session_cpu_seconds(session: int) -> float:
    """CPU seconds of one server process and its children (its session), ended ones too."""
    return sum(seconds for sid, seconds in _sessions().values() if sid == session)
