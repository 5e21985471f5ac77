"""Timestep chunking bounds memory: peak memory of the query gradient and of scoring as frames and T grow, chunk fixed.

The unlearning step's query gradient (`query_gradient`, forward + backward) and the scoring forward
(`item_losses`) run `timestep_chunk` timesteps of one item per call, so their peak memory should
grow with the frames (activations ∝ chunk × frames) but not with T, the number of timesteps: the
T-average is accumulated chunk by chunk. Measured on this CPU on a small DiT with Stable Audio's
64 latent channels (width 64, depth 2, fused attention), up to seed 002's 2584 frames (2 minutes).

Each setting runs in a fresh process; its peak is the rise of the process's maximum resident set
size (ru_maxrss) over the same process just before the call (model, data and plan already built),
so allocator caching of earlier calls cannot hide it. (On a GPU, benchmarks/gpu_path.py reports
torch.cuda.max_memory_allocated for the full-size model.)

    .venv/bin/python benchmarks/memory_chunking.py [--quick]

Writes benchmarks/results/memory_chunking.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DIT = {"latent_channels": 64, "width": 64, "depth": 2, "heads": 2, "cond_dim": 64, "timestep_features": 64, "timing_features": 16,
       "attention": "sdpa"}


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def worker(stage: str, frames: int, timesteps: int, chunk: int) -> dict[str, float]:
    """One setting in this (fresh) process: the peak-memory rise of one query gradient or one scoring call."""
    import torch

    torch.set_num_threads(1)
    from songtrace.attribution import UnlearnConfig, split_params, target_params
    from songtrace.attribution.score import item_losses
    from songtrace.attribution.unlearn import query_gradient, query_plan
    from songtrace.data.latents import LatentSet
    from songtrace.diffusion.loss import make_plan
    from songtrace.model.dit import DiT, DiTConfig
    from songtrace.model.task import as_task

    model = DiT(DiTConfig(latent_length=frames, **DIT), seed=0).eval()
    task = as_task(model)
    g = torch.Generator().manual_seed(0)
    data = LatentSet(ids=["q"], artists=["a"], splits=["train"], latents=torch.randn(1, 64, frames, generator=g),
                     n_frames=torch.tensor([frames]), text=torch.randn(1, 16, 384, generator=g),
                     text_mask=torch.ones(1, 16, dtype=torch.bool), seconds_start=torch.zeros(1),
                     seconds_total=torch.tensor([frames * 2048 / 44100]))
    batch = data.batch([0])
    target, frozen = split_params(task, target_params(task, "all"))
    if stage == "query_gradient":
        plan = query_plan(batch, UnlearnConfig(n_timesteps=timesteps))
        before = _maxrss_mib()
        start = time.process_time()
        query_gradient(task, target, frozen, batch, plan, True, chunk=chunk)
    else:
        plan = make_plan(batch.ids, timesteps, task.latent_shape, 0)
        before = _maxrss_mib()
        start = time.process_time()
        with torch.no_grad():
            item_losses(task, None, batch, plan, True, chunk)
    cpu = time.process_time() - start
    return {"baseline_mib": round(before, 1), "peak_rise_mib": round(_maxrss_mib() - before, 1), "cpu_seconds": round(cpu, 2),
            "weights": model.num_params()}


def run(stage: str, frames: int, timesteps: int, chunk: int) -> dict[str, object]:
    """One setting in a fresh subprocess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SONGTRACE_QUIET": "1"}
    out = subprocess.run([sys.executable, __file__, "--worker", stage, str(frames), str(timesteps), str(chunk)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{stage} {frames} frames T={timesteps} chunk={chunk} failed:\n{out.stderr[-3000:]}")
    row = {"stage": stage, "frames": frames, "timesteps": timesteps, "timestep_chunk": chunk, **json.loads(out.stdout.splitlines()[-1])}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        stage, frames, timesteps, chunk = args.worker
        print(json.dumps(worker(stage, int(frames), int(timesteps), int(chunk))))
        return
    frames_grid = (323, 1292) if args.quick else (323, 646, 1292, 2584)
    top = frames_grid[-1]
    t_small, t_large = (4, 16) if args.quick else (8, 32)
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for stage in ("query_gradient", "scoring"):
        for frames in frames_grid:  # frames grow, T and the chunk fixed
            rows.append(run(stage, frames, t_small, 2))
        rows.append(run(stage, top, t_large, 2))  # T x4 at the chunk of 2: the peak should not move
        rows.append(run(stage, top, t_small, t_small))  # the whole T in one call: the peak grows with the chunk
    summary = {}
    for stage in ("query_gradient", "scoring"):
        mine = [r for r in rows if r["stage"] == stage]
        fixed = {int(r["frames"]): r["peak_rise_mib"] for r in mine if r["timesteps"] == t_small and r["timestep_chunk"] == 2}
        at_top = {f"T={r['timesteps']} chunk={r['timestep_chunk']}": r["peak_rise_mib"] for r in mine if r["frames"] == top}
        summary[stage] = {f"peak_rise_mib_by_frames_T{t_small}_chunk2": fixed, f"peak_rise_mib_at_{top}_frames": at_top}
    result = {
        "benchmark": "memory_chunking", "quick": args.quick, "dit": DIT,
        "measure": "rise of ru_maxrss (MiB) during one call, fresh process per setting, one torch thread",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "summary": summary, "rows": rows, "wall_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("memory_chunking_quick.json" if args.quick else "memory_chunking.json")
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
