"""The cost model (songtrace.attribution.cost): predicted vs measured on a demo-sized DiT here, and seed 002's setting.

1. Measure this machine's throughput (forward FLOP/s; backward and per-sample-gradient ratios) on a
   demo-sized DiT (width 128, depth 4, 8 channels, 128 frames) with `measure_throughput`.
2. Run the real stages on that model and on one with half the frames (64: tests the frame scaling,
   attention included): the Fisher (`compute_fisher`), one unlearning step (`unlearn`), scoring one
   query over the training set with and without cached base losses (`score_many`), and compare each
   with `predict`. Times are CPU seconds of this process with one torch thread (the machine is shared,
   so wall time would measure the neighbours; CPU time is what one core spends).
3. State the model for seed 002's setting (≈1.1 B weights, 64 channels, 2584 frames, 115 k tracks,
   T = 2048 for the unlearning step) under stated GPU assumptions, beside the paper's figures (one
   unlearning step ≈ 20 min on an H100; scoring ≈ 5 h on 8 H100s ≈ 40 GPU-hours per query), and what
   cached base losses, fewer common-random-number timesteps (rank stability from
   results/attribution_cost.json) and the fast index cut.

    .venv/bin/python benchmarks/cost_model.py [--quick]

Writes benchmarks/results/cost_model.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, base_losses, compute_fisher, score_many, unlearn
from songtrace.attribution.cost import GPUS, ModelShape, Throughput, Workload, measure_throughput, predict
from songtrace.data.latents import LatentSet
from songtrace.model.dit import DiT, DiTConfig

RESULTS = Path(__file__).parent / "results"
PAPER = {"unlearn_step_minutes_h100": 20.0, "scoring_hours_8xh100": 5.0, "scoring_gpu_hours": 40.0, "unlearn_timesteps": 2048,
         "tracks": 115_000, "frames": 2584, "channels": 64}


def synthetic_latents(n: int, channels: int, length: int, tokens: int = 16, seed: int = 0) -> LatentSet:
    """n items with random latents and caption tokens (costs do not depend on the values)."""
    g = torch.Generator().manual_seed(seed)
    n_frames = torch.randint(length // 2, length + 1, (n,), generator=g)
    return LatentSet(
        ids=[f"x{i:04d}" for i in range(n)], artists=[f"a{i % 4}" for i in range(n)], splits=["train"] * n,
        latents=torch.randn(n, channels, length, generator=g), n_frames=n_frames.long(),
        text=torch.randn(n, tokens, 384, generator=g), text_mask=torch.ones(n, tokens, dtype=torch.bool),
        seconds_start=torch.zeros(n), seconds_total=n_frames.float() * 0.1,
    )


def cpu_seconds(fn) -> tuple[float, object]:
    """CPU seconds of this process spent in fn(), and its result."""
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def measured_vs_predicted(model: DiT, data: LatentSet, throughput: Throughput, sizes: dict[str, int]) -> dict[str, object]:
    """Run the Fisher, one unlearning step and scoring (cached and not) on `model`, and predict each with `throughput`."""
    shape = ModelShape.of(model, cond_tokens=int(data.text.shape[1]) + 2)
    fisher_set = _head(data, sizes["fisher_items"])
    rows = sizes["rows"]  # rows per forward / backward / vmap call in every stage, as in the throughput measurement
    f_cfg = FisherConfig(n_timesteps=sizes["fisher_timesteps"], batch_size=rows // sizes["fisher_timesteps"], sample_chunk=rows)
    t_fisher, fisher = cpu_seconds(lambda: compute_fisher(model, fisher_set, f_cfg))
    u_cfg = UnlearnConfig(lr=1e-6, n_timesteps=sizes["unlearn_timesteps"], timestep_chunk=rows)
    query = data.batch([0])
    t_unlearn, delta = cpu_seconds(lambda: unlearn(model, fisher, query, u_cfg))
    s_cfg = ScoreConfig(n_timesteps=sizes["score_timesteps"], batch_size=rows // sizes["score_timesteps"],
                        timestep_chunk=sizes["score_timesteps"])
    t_base, base = cpu_seconds(lambda: base_losses(model, data, s_cfg, False))
    t_cached, _ = cpu_seconds(lambda: score_many(model, [delta], data, s_cfg, False, base=base))
    t_fresh, _ = cpu_seconds(lambda: score_many(model, [delta], data, s_cfg, False))
    n = len(data)
    work = Workload(tracks=n, fisher_timesteps=f_cfg.n_timesteps, unlearn_timesteps=u_cfg.n_timesteps, score_timesteps=s_cfg.n_timesteps,
                    cached_base=True, gpus=1)
    cached = predict(shape, throughput, work)
    fresh = predict(shape, throughput, dataclasses.replace(work, cached_base=False))
    fisher_pred = predict(shape, throughput, dataclasses.replace(work, tracks=len(fisher_set)))["fisher"]["wall_seconds"]
    table = {
        "fisher": (t_fisher, fisher_pred, f"{len(fisher_set)} items x T={f_cfg.n_timesteps}, per-sample gradients"),
        "unlearn_step": (t_unlearn, cached["unlearn_step"]["wall_seconds"], f"1 query x T={u_cfg.n_timesteps}, forward+backward"),
        "base_losses": (t_base, cached["base_losses_once"]["wall_seconds"], f"{n} items x T={s_cfg.n_timesteps}, one forward each"),
        "scoring_cached_base": (t_cached, cached["scoring"]["wall_seconds"], f"{n} items x T={s_cfg.n_timesteps}, θ' only"),
        "scoring_recomputed_base": (t_fresh, fresh["scoring"]["wall_seconds"], f"{n} items x T={s_cfg.n_timesteps}, θ0 and θ'"),
    }
    return {
        "shape": shape.to_dict(),
        "forward_flops_per_row": shape.forward_flops(),
        "runs": {k: {"measured_cpu_seconds": round(m, 3), "predicted_seconds": round(p, 3), "predicted_over_measured": round(p / m, 3),
                     "what": what} for k, (m, p, what) in table.items()},
    }


def _head(data: LatentSet, n: int) -> LatentSet:
    return LatentSet(ids=data.ids[:n], artists=data.artists[:n], splits=data.splits[:n], **{k: v[:n] for k, v in data.tensors().items()})


def seed002(throughputs: dict[str, Throughput], stability: dict[str, object]) -> dict[str, object]:
    """The model at seed 002's setting under each assumed GPU, beside the paper's figures."""
    sao = DiTConfig(latent_channels=64, latent_length=PAPER["frames"], width=1536, depth=24, heads=24, text_dim=768, cond_dim=768)
    with torch.device("meta"):
        model = DiT(sao)
    shape = ModelShape.of(model, cond_tokens=130)
    base = Workload(tracks=PAPER["tracks"], fisher_timesteps=16, unlearn_timesteps=PAPER["unlearn_timesteps"], score_timesteps=32,
                    cached_base=True, gpus=8)
    # the paper's own throughput, implied by its 20-minute unlearning step (T = 2048 forward+backward rows on one H100)
    step_flops = shape.forward_flops() * PAPER["unlearn_timesteps"] * 3.0
    implied = Throughput("H100 as the paper ran it (implied by its 20-min step)", step_flops / (PAPER["unlearn_step_minutes_h100"] * 60),
                         3.0, GPUS["h100-fp32"].square_seconds_per_weight,
                         source="calibrated: 2048 rows x 3 forward-equivalents in 20 minutes; per-sample square as h100-fp32")
    gpus = {**throughputs, "paper-implied": implied}
    out: dict[str, object] = {"shape": shape.to_dict(), "forward_flops_per_row": shape.forward_flops(),
                              "total_weights": model.num_params(), "paper": PAPER, "assumptions": {k: g.to_dict() for k, g in gpus.items()}}
    table = {}
    for name, gpu in gpus.items():
        rows = {}
        for t_score in (1, 4, 8, 32, 128):
            for cached in (False, True):
                p = predict(shape, gpu, dataclasses.replace(base, score_timesteps=t_score, cached_base=cached))
                rows[f"T={t_score} {'cached' if cached else 'recomputed'} base"] = {
                    "scoring_wall_hours_8_gpus": round(p["scoring"]["wall_seconds"] / 3600, 3),
                    "scoring_gpu_hours": round(p["scoring"]["gpu_hours"], 3),
                    "query_gpu_hours": round(p["query"]["gpu_hours"], 3),
                }
        p = predict(shape, gpu, base)
        table[name] = {
            "unlearn_step_minutes_1_gpu": round(p["unlearn_step"]["wall_seconds"] / 60, 2),
            "fisher_T16_wall_hours_8_gpus": round(p["fisher"]["wall_seconds"] / 3600, 2),
            "fisher_T16_gpu_hours": round(p["fisher"]["gpu_hours"], 1),
            "base_losses_T32_gpu_hours_once": round(p["base_losses_once"]["gpu_hours"], 2),
            "fast_index_build_T32_gpu_hours_once": round(p["fast_index"]["build"]["gpu_hours"], 1),
            "fast_index_query_gpu_hours": round(p["fast_index"]["query"]["gpu_hours"], 3),
            "scoring": rows,
        }
    out["predictions"] = table
    # what the paper's 40 GPU-hours mean at its own implied throughput: how many forward rows per track it paid for
    per_track_rows = PAPER["scoring_gpu_hours"] * 3600 * implied.forward_flops_per_s / (shape.forward_flops() * PAPER["tracks"])
    out["paper_scoring_implies_forward_rows_per_track"] = round(per_track_rows, 2)
    out["rank_stability_vs_T"] = stability
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test of the script)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    quick = {"items": 24, "fisher_items": 8, "fisher_timesteps": 2, "unlearn_timesteps": 16, "score_timesteps": 4, "rows": 16}
    full = {"items": 64, "fisher_items": 32, "fisher_timesteps": 4, "unlearn_timesteps": 128, "score_timesteps": 8, "rows": 64}
    sizes = quick if args.quick else full
    load_before = os.getloadavg()
    demo = {}
    throughput = None
    for frames in (128, 64):
        config = DiTConfig(latent_channels=8, latent_length=frames, width=128, depth=4, heads=4)
        model = DiT(config).eval()
        data = synthetic_latents(sizes["items"], 8, frames)
        if throughput is None:  # measured once, at 128 frames; the 64-frame runs test the frame scaling of the FLOP count
            items = sizes["rows"] // 8
            throughput = measure_throughput(model, data.batch(list(range(items))), rows_timesteps=8, repeats=3,
                                            name="this 2-core CPU, 1 thread")
        demo[f"frames_{frames}"] = measured_vs_predicted(model, data, throughput, sizes)
    stability_path = RESULTS / "attribution_cost.json"
    stability = {}
    if stability_path.exists():
        full = json.loads(stability_path.read_text()).get("full", {}).get("d_rank_stability", {})
        stability = {"source": "benchmarks/results/attribution_cost.json (full): Spearman between two seeds' scores, with CRN",
                     "spearman_by_T": {t: v["spearman_crn"] for t, v in full.get("by_T", {}).items()}}
    result = {
        "benchmark": "cost_model",
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "torch_threads": 1,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "timing": "CPU seconds of this process (time.process_time), one torch thread; predictions from the throughput measured once",
        "throughput": throughput.to_dict(),
        "demo_sized_dit": demo,
        "seed002": seed002({k: GPUS[k] for k in ("h100-bf16", "h100-fp32")}, stability),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("cost_model_quick.json" if args.quick else "cost_model.json")
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: v["runs"] for k, v in demo.items()}, indent=1))
    print(json.dumps(result["seed002"]["predictions"], indent=1)[:3000])


if __name__ == "__main__":
    main()
