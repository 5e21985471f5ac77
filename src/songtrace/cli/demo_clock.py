"""The demo's stage clock: wall seconds, CPU seconds (this process and its finished children) and the load average per stage.

On a machine shared with other jobs the wall time alone says little: a stage that took 300 s of
wall time with 150 CPU seconds at load 6 would take ~90 s on an idle 2-core machine. So every
stage records all three, and whether it found its artifact already finished (a skipped stage costs
only the check). The records go into the demo's `summary.json` and `benchmarks/demo_pipeline.py`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from songtrace.cli.options import console


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have finished (e.g. rendering workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return 0.0


@dataclasses.dataclass
class StageTime:
    """One stage's cost: wall and CPU seconds, the 1-minute load average before and after, and whether it was already done."""

    wall_seconds: float
    cpu_seconds: float
    load_start: float
    load_end: float
    skipped: bool

    def to_dict(self) -> dict[str, Any]:
        """Rounded, for the summary."""
        return {"wall_seconds": round(self.wall_seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "load_start": round(self.load_start, 2), "load_end": round(self.load_end, 2), "skipped": self.skipped}


class StageClock:
    """Runs the demo's stages one after another, printing a line per stage and keeping each one's `StageTime`."""

    def __init__(self, quiet: bool = False) -> None:
        self.stages: dict[str, StageTime] = {}
        self.quiet = quiet

    def run(self, name: str, fn: Callable[[], Any], done: Callable[[], bool] | None = None) -> Any:
        """Run stage `name` (`fn()`), timing it; `done()` says beforehand whether its artifact is already finished (a skip)."""
        skipped = bool(done()) if done is not None else False
        if not self.quiet:
            console.print(f"[bold]>>[/] {name}" + (" (already done: checking)" if skipped else ""))
        load0, wall0, cpu0 = load_average(), time.perf_counter(), cpu_seconds()
        out = fn()
        stage = StageTime(time.perf_counter() - wall0, cpu_seconds() - cpu0, load0, load_average(), skipped)
        self.stages[name] = stage
        if not self.quiet:
            console.print(f"   {name} {'skipped' if skipped else 'done'} in {stage.wall_seconds:.1f} s "
                          f"(CPU {stage.cpu_seconds:.1f} s, load {stage.load_start:.1f} -> {stage.load_end:.1f})", highlight=False)
        return out

    def table(self) -> dict[str, dict[str, Any]]:
        """Every stage's record, in the order they ran."""
        return {name: s.to_dict() for name, s in self.stages.items()}

    def totals(self) -> dict[str, float]:
        """Wall and CPU seconds over all stages, and the mean and max load seen."""
        loads = [v for s in self.stages.values() for v in (s.load_start, s.load_end)]
        return {"wall_seconds": round(sum(s.wall_seconds for s in self.stages.values()), 1),
                "cpu_seconds": round(sum(s.cpu_seconds for s in self.stages.values()), 1),
                "load_mean": round(sum(loads) / len(loads), 2) if loads else 0.0, "load_max": round(max(loads, default=0.0), 2)}
