"""The figures of a run, each beside its floor and target: a table for the terminal, the same
as Markdown, and JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.costs import Cost
from bench.loadgen import Load


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


@dataclass(frozen=True)
class Figure:
    label: str
    value: float
    unit: str
    second: float | None = None  # shown as "value / second" (p50 / p99, idle / load)
    floor: float | None = None
    ratio_of_second: bool = False  # the ratio is second / floor instead of value / floor
    target_ratio: float | None = None
    ratio_is_ceiling: bool = False  # met when ratio <= target_ratio, else when >=
    target_value: float | None = None  # met when value <= target_value
    second_target: float | None = None  # met when second <= second_target
    target_text: str = ""

    @property
    def ratio(self) -> float | None:
        if self.floor is None or self.floor == 0:
            return None
        measured = self.second if self.ratio_of_second and self.second is not None else self.value
        return measured / self.floor

    @property
    def met(self) -> bool | None:
        ratio = self.ratio
        if self.target_ratio is not None and ratio is not None:
            if self.ratio_is_ceiling:
                return ratio <= self.target_ratio
            return ratio >= self.target_ratio
        if self.target_value is not None:
            return self.value <= self.target_value
        if self.second_target is not None and self.second is not None:
            return self.second <= self.second_target
        return None

    def cells(self) -> list[str]:
        value = _number(self.value)
        if self.second is not None:
            value += f" / {_number(self.second)}"
        ratio = self.ratio
        met = self.met
        # Rates compare as a share of the floor, times and sizes as a multiple of it.
        shown_ratio = ""
        if ratio is not None:
            shown_ratio = f"{ratio:.0%}" if self.unit.endswith("/s") else f"{ratio:.1f}x"
        return [
            self.label,
            f"{value} {self.unit}",
            "" if self.floor is None else f"{_number(self.floor)}",
            shown_ratio,
            self.target_text,
            "" if met is None else ("yes" if met else "NO"),
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.label,
            "value": round(self.value, 3),
            "second": None if self.second is None else round(self.second, 3),
            "unit": self.unit,
            "floor": None if self.floor is None else round(self.floor, 3),
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "target": self.target_text or None,
            "met": self.met,
        }


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


HEADER = ["figure", "value", "floor", "ratio", "target", "met?"]


@dataclass
class Report:
    profile: str
    machine: dict[str, Any]
    loads: dict[str, Load] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    rss_idle: dict[str, int] = field(default_factory=dict)
    rss_load: dict[str, int] = field(default_factory=dict)
    floor_rss: int = 0
    floor_cpu_per_insert: float = 0.0  # seconds of the floor server's CPU per INSERT answered
    # per figure ("invoice"), per service: what one answer cost the servers
    costs: dict[str, dict[str, Cost]] = field(default_factory=dict)
    pdf_pages: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    finished_at: str = ""

    def table(self, rows: list[Figure]) -> str:
        cells = [HEADER, *(row.cells() for row in rows)]
        widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
        rule = "-+-".join("-" * w for w in widths)

        def render(line: list[str]) -> str:
            return " | ".join(
                cell.ljust(w) if i in (0, 4) else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )

        lines = [render(HEADER), rule, *(render(line) for line in cells[1:])]
        lines.append("")
        lines.append(f"{self.profile} run, {self.seconds:.0f} s; {self.machine['placement']}")
        return "\n".join(lines)

    def markdown(self, rows: list[Figure]) -> str:
        out = [f"| {' | '.join(HEADER)} |", "|" + "---|" * len(HEADER)]
        out += [f"| {' | '.join(row.cells())} |" for row in rows]
        m = self.machine
        out += [
            "",
            f"Run: {self.profile}, {self.finished_at}, {self.seconds:.0f} s. "
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, "
            f"Python {m['python']}, PostgreSQL {m.get('postgresql', '?')}, {m['wrk']}. "
            f"Placement: {m['placement']}.",
            "",
        ]
        return "\n".join(out)

    def as_dict(self, rows: list[Figure]) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "finished_at": self.finished_at,
            "seconds": round(self.seconds, 1),
            "machine": self.machine,
            "figures": [row.as_dict() for row in rows],
            "loads": {name: load.as_dict() for name, load in self.loads.items()},
            "samples_ms": {
                name: {
                    "count": len(values),
                    "p50": round(percentile(values, 0.5), 3),
                    "p99": round(percentile(values, 0.99), 3),
                    "max": round(max(values, default=0.0), 3),
                }
                for name, values in self.samples.items()
            },
            "rss_bytes": {"idle": self.rss_idle, "under_load": self.rss_load},
            "floor_rss_bytes": self.floor_rss,
            "floor_cpu_ms_per_insert": round(self.floor_cpu_per_insert * 1000, 3),
            "costs_per_answer": {
                figure: {
                    name: {
                        "cpu_ms": round(cost.cpu_seconds * 1000, 3),
                        "statements": round(cost.statements, 2),
                        "transactions": round(cost.transactions, 2),
                    }
                    for name, cost in costs.items()
                }
                for figure, costs in self.costs.items()
            },
            "pdf_pages": self.pdf_pages,
            "notes": self.notes,
        }
