"""Time the whole demo story stage by stage and record its figures.

Writes benchmarks/results/demo_pipeline.json (or demo_pipeline_quick.json with --quick): per stage
the wall seconds, the CPU seconds (this process and its finished children) and the 1-minute load
average before and after (so a run on a shared machine can be read), each stage's share of the
wall time, the machine, and the demo's summary (model losses, codec error, conditioning check,
self-influence best configuration, attributions, baselines, opt-out figures, the report's path).

    .venv/bin/python benchmarks/demo_pipeline.py [--home DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from songtrace.cli.demo import DemoConfig, run_demo
from songtrace.cli.demo_clock import cpu_seconds, load_average

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", default=None, help="data directory (default: a fresh ./bench-home)")
    parser.add_argument("--quick", action="store_true", help="tiny demo (smoke run)")
    args = parser.parse_args()
    home = Path(args.home or "bench-home")
    config = DemoConfig.quick() if args.quick else DemoConfig()
    load0, cpu0, start = os.getloadavg(), cpu_seconds(), time.perf_counter()
    summary = run_demo(config, home)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    stages = summary["stages"]
    total = sum(s["wall_seconds"] for s in stages.values())
    result = {
        "benchmark": "demo_pipeline",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch_threads": torch.get_num_threads(), "SONGTRACE_THREADS": os.environ.get("SONGTRACE_THREADS")},
        "quick": args.quick,
        "wall_seconds": round(wall, 1),
        "cpu_seconds": round(cpu, 1),
        "load_average_start": [round(x, 2) for x in load0],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "load_now": load_average(),
        "stage_order": summary["stage_order"],
        "stages": stages,
        "stage_share": {k: round(v["wall_seconds"] / total, 3) for k, v in stages.items()},
        "summary": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("demo_pipeline_quick.json" if args.quick else "demo_pipeline.json")
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps({"wall_seconds": result["wall_seconds"], "cpu_seconds": result["cpu_seconds"],
                      "stages": {k: (v["wall_seconds"], v["cpu_seconds"]) for k, v in stages.items()}}, indent=2))
    print("\n".join(summary["human_summary"]))


if __name__ == "__main__":
    main()
