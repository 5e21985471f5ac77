"""Time the whole demo pipeline stage by stage and record its quality figures.

Writes benchmarks/results/demo_pipeline.json: wall time per stage and its share of the total,
DiT validation loss (untrained vs trained), codec reconstruction error, and the conditioning
check (fraction of artists whose generations sit closer to their own training tracks).

    .venv/bin/python benchmarks/demo_pipeline.py [--home DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from songtrace.cli.demo import DemoConfig, run_demo

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", default=None, help="data directory (default: a fresh ./bench-home)")
    parser.add_argument("--quick", action="store_true", help="tiny demo (smoke run)")
    args = parser.parse_args()
    home = Path(args.home or "bench-home")
    config = DemoConfig.quick() if args.quick else DemoConfig()
    start = time.perf_counter()
    summary = run_demo(config, home)
    wall = time.perf_counter() - start
    stages = summary["stage_seconds"]
    total = sum(stages.values())
    result = {
        "benchmark": "demo_pipeline",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "quick": args.quick,
        "wall_seconds": round(wall, 1),
        "stage_seconds": stages,
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("demo_pipeline_quick.json" if args.quick else "demo_pipeline.json")
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps({"wall_seconds": result["wall_seconds"], "stage_share": result["stage_share"]}, indent=2))


if __name__ == "__main__":
    main()
