"""Sharding: 2 torchrun processes vs 1 on this 2-core machine, one torch thread each (target: at least 1.7x).

Two stages of a demo-sized DiT (width 128, depth 4, 8 channels, 128 frames), each launched with
`torchrun --standalone --nproc-per-node K` for K = 1 and 2, interleaved over repeats so that the
load of the shared machine hits both alike:

- scoring: one query over N training items (base losses and θ' in one pass, `score_many` sharded);
- Fisher: the `fit_fisher` stage (per-sample gradients, per-rank sums all-reduced).

Each rank times its stage between two barriers (wall) and its own CPU seconds; the job's stage
time is the slowest rank's. Reported per K: wall seconds (best and median of the repeats), items
per second, CPU seconds per item (the sum over ranks: what the work costs, whatever the load), the
launch-to-exit wall time (process start, imports and the process group included) and the load
average around each run. The speedup is 1-process wall / 2-process wall; the CPU-based speedup
(1-process CPU / the slower rank's CPU) says how evenly the work splits, independent of the load.

    .venv/bin/python benchmarks/shard_scaling.py [--quick] [--repeats 3]

Writes benchmarks/results/shard_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DIT = {"latent_channels": 8, "latent_length": 128, "width": 128, "depth": 4, "heads": 4}


def make_latents(n: int, out: Path) -> None:
    """A synthetic latent cache of n full-length items (costs do not depend on the values)."""
    import torch

    from songtrace.data.latents import LatentSet

    g = torch.Generator().manual_seed(0)
    length = DIT["latent_length"]
    n_frames = torch.randint(length // 2, length + 1, (n,), generator=g)
    LatentSet(ids=[f"s{i:04d}" for i in range(n)], artists=[f"a{i % 8}" for i in range(n)], splits=["train"] * n,
              latents=torch.randn(n, DIT["latent_channels"], length, generator=g), n_frames=n_frames.long(),
              text=torch.randn(n, 16, 384, generator=g), text_mask=torch.ones(n, 16, dtype=torch.bool),
              seconds_start=torch.zeros(n), seconds_total=n_frames.float() * 0.1).save(out)


def worker(args: argparse.Namespace) -> None:
    """One rank: build the model, run the stage between barriers, gather the timings on rank 0."""
    import torch

    torch.set_num_threads(1)
    from songtrace.attribution import FisherConfig, ScoreConfig, fit_fisher, score_many, split_params, target_params
    from songtrace.attribution.shard import distributed
    from songtrace.data.latents import LatentSet
    from songtrace.model.dit import DiT, DiTConfig

    model = DiT(DiTConfig(**DIT), seed=0).eval()
    data = LatentSet.load(args.data)
    with distributed("cpu") as job:
        job.barrier()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if args.stage == "scoring":
            target, _ = split_params(model, target_params(model, "all"))
            g = torch.Generator().manual_seed(1)
            delta = {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in target.items()}
            score_many(model, [delta], data, ScoreConfig(n_timesteps=args.timesteps, batch_size=8, timestep_chunk=args.timesteps), False,
                       job=job)
        else:
            fit_fisher(None, args.data, FisherConfig(n_timesteps=args.timesteps, batch_size=4, sample_chunk=16), Path(args.work) / "fisher",
                       model=model, job=job, overwrite=True)
        job.barrier()
        timing = {"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}
        timings = job.all_gather(timing)
    if job.main:
        Path(args.out).write_text(json.dumps({"ranks": timings, "items": len(data)}))


def launch(stage: str, nproc: int, data: Path, work: Path, timesteps: int) -> dict[str, object]:
    """Run the stage under torchrun with `nproc` ranks; the ranks' timings, the launch wall time and the load around it."""
    out = work / f"{stage}-{nproc}.json"
    shutil.rmtree(work / f"w{nproc}", ignore_errors=True)  # a fresh Fisher stage every run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SONGTRACE_QUIET": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    command = ["nice", sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__, "--worker",
               "--stage", stage, "--data", str(data), "--work", str(work / f"w{nproc}"), "--out", str(out), "--timesteps", str(timesteps)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    launch_wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{stage} with {nproc} processes failed:\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    ranks = result["ranks"]
    return {"wall": max(r["wall"] for r in ranks), "cpu_total": sum(r["cpu"] for r in ranks),
            "cpu_slowest_rank": max(r["cpu"] for r in ranks),
            "launch_wall": launch_wall, "items": result["items"], "load_before": load, "load_after": os.getloadavg()[0]}


def summarize(runs: list[dict[str, object]]) -> dict[str, object]:
    walls = [float(r["wall"]) for r in runs]
    items = int(runs[0]["items"])
    cpu = [float(r["cpu_total"]) for r in runs]
    return {
        "wall_seconds_best": round(min(walls), 3), "wall_seconds_median": round(statistics.median(walls), 3),
        "items_per_second_best": round(items / min(walls), 3),
        "cpu_seconds_per_item_median": round(statistics.median(cpu) / items, 5),
        "cpu_seconds_slowest_rank_median": round(statistics.median(float(r["cpu_slowest_rank"]) for r in runs), 3),
        "launch_wall_seconds_median": round(statistics.median(float(r["launch_wall"]) for r in runs), 2),
        "runs": [{k: round(float(v), 3) if isinstance(v, float) else v for k, v in r.items()} for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=["scoring", "fisher"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--timesteps", type=int, default=8, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    sizes = {"scoring": (64, 4), "fisher": (16, 2)} if args.quick else {"scoring": (192, 8), "fisher": (64, 4)}
    started = time.perf_counter()
    result: dict[str, object] = {"benchmark": "shard_scaling", "quick": args.quick, "dit": DIT, "repeats": args.repeats,
                                 "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch_threads_per_process": 1,
                                             "note": "shared with other agents' jobs; see the load average of each run"}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for stage, (n, timesteps) in sizes.items():
            make_latents(n, work / f"latents-{stage}")
            runs: dict[int, list[dict[str, object]]] = {1: [], 2: []}
            for _ in range(args.repeats):
                for nproc in (1, 2):  # interleaved, so a change of load hits both alike
                    runs[nproc].append(launch(stage, nproc, work / f"latents-{stage}", work, timesteps))
                    print(stage, nproc, runs[nproc][-1], flush=True)
            one, two = summarize(runs[1]), summarize(runs[2])
            result[stage] = {
                "items": n, "timesteps": timesteps, "one_process": one, "two_processes": two,
                "speedup_wall_best": round(one["wall_seconds_best"] / two["wall_seconds_best"], 3),
                "speedup_wall_median": round(one["wall_seconds_median"] / two["wall_seconds_median"], 3),
                "speedup_cpu": round(float(one["cpu_seconds_slowest_rank_median"]) / float(two["cpu_seconds_slowest_rank_median"]), 3),
                "cpu_overhead_two_vs_one": round(float(two["cpu_seconds_per_item_median"]) / float(one["cpu_seconds_per_item_median"]), 3),
            }
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("shard_scaling_quick.json" if args.quick else "shard_scaling.json")
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({s: {k: v for k, v in result[s].items() if "speedup" in k or "overhead" in k} for s in sizes}, indent=1))


if __name__ == "__main__":
    main()
