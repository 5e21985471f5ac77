"""Cost and stability of attribution by unlearning, measured as ratios in one run.

(a) per-query scoring with cached base losses L(z_i, θ0) vs recomputing them each query (target ≈ 2x);
(b) scoring time vs the bare cost of the same number of no-grad forward passes (target: overhead < 25 %);
(c) per-sample Fisher gradients with vmap vs a Python loop over samples (and their agreement);
(d) rank stability: Spearman between two scorings with different seeds, T in {8, 32, 128},
    with and without common random numbers (CRN: the same timesteps and noise for θ0 and θ').

Uses the demo artifacts under --home when present (models/demo, latents/demo), else builds a small
synthetic latent cache and trains a small DiT on it. Writes benchmarks/results/attribution_cost.json
(under the key "quick" or "full", keeping the other size's last result). Timings are CPU seconds of this process, best of interleaved
repeats, with torch on --threads threads (the machine is shared, so wall time would measure the neighbours).

    .venv/bin/python benchmarks/attribution_cost.py [--quick] [--home DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from scipy.stats import spearmanr
from songtrace.model.interface import predict_v

from songtrace.attribution import (
    FisherConfig,
    QueryContext,
    ScoreConfig,
    UnlearnConfig,
    base_losses,
    compute_fisher,
    load_latents,
    load_model,
    loss_pass,
    resolve_query,
    score_many,
    split_params,
    target_params,
    unlearn,
)
from songtrace.attribution.fisher import batch_square_sums
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import make_plan
from songtrace.diffusion.schedule import add_noise

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark run."""

    n_items: int
    channels: int
    length: int
    width: int
    depth: int
    train_steps: int
    score_timesteps: int
    query_timesteps: int
    fisher_items: int
    stability_ts: tuple[int, ...]
    repeats: int


QUICK = Setting(n_items=40, channels=8, length=32, width=64, depth=3, train_steps=150, score_timesteps=16,
                query_timesteps=64, fisher_items=8, stability_ts=(8, 32, 128), repeats=5)
FULL = Setting(n_items=80, channels=8, length=64, width=128, depth=4, train_steps=300, score_timesteps=32,
               query_timesteps=256, fisher_items=16, stability_ts=(8, 32, 128), repeats=5)
RELATIVE_CHANGE = 0.01  # unlearning step size for (d): mean |τ| = 1 % of the mean loss (the model stays usable)


def synthetic_set(s: Setting, seed: int = 0) -> LatentSet:
    """Latents of 8 artists (own sinusoid pattern + noise), variable lengths zero-padded, artist caption tokens."""
    g = torch.Generator().manual_seed(seed)
    n_art, tokens = 8, 12
    frames = torch.arange(s.length, dtype=torch.float32)
    n_frames = torch.randint(s.length // 4, s.length + 1, (s.n_items,), generator=g)
    latents = torch.zeros(s.n_items, s.channels, s.length)
    art_tokens = torch.randn(n_art, tokens, 384, generator=g)
    text = torch.zeros(s.n_items, tokens, 384)
    for i in range(s.n_items):
        a = i % n_art
        pattern = torch.sin(frames[None] * (0.1 + 0.07 * a) + torch.arange(s.channels)[:, None] * (a + 1))
        latents[i, :, : n_frames[i]] = (pattern + 0.3 * torch.randn(s.channels, s.length, generator=g))[:, : n_frames[i]]
        text[i] = art_tokens[a] + 0.1 * torch.randn(tokens, 384, generator=g)
    return LatentSet(
        ids=[f"b{i:04d}" for i in range(s.n_items)],
        artists=[f"artist{i % n_art}" for i in range(s.n_items)],
        splits=["valid" if i % 10 == 9 else "train" for i in range(s.n_items)],
        latents=latents,
        n_frames=n_frames,
        text=text,
        text_mask=torch.ones(s.n_items, tokens, dtype=torch.bool),
        seconds_start=torch.zeros(s.n_items),
        seconds_total=n_frames.float() * 0.1,
    )


def build_inputs(s: Setting, home: Path | None, work: Path) -> tuple[torch.nn.Module, LatentSet, str]:
    """The demo model and latents if present under `home`, else a synthetic set and a DiT trained on it."""
    if home is not None and (home / "models" / "demo" / "config.json").exists() and (home / "latents" / "demo").exists():
        return load_model(home / "models" / "demo"), load_latents(home / "latents" / "demo"), f"demo artifacts under {home}"
    from songtrace.model.train import TrainConfig, train_model

    data = synthetic_set(s)
    data.save(work / "latents")
    dit = {"width": s.width, "depth": s.depth, "heads": 4, "cond_dim": 64, "timestep_features": 64, "timing_features": 16}
    train = TrainConfig(steps=s.train_steps, batch_size=16, lr=2e-3, warmup=20, checkpoint_every=10_000, valid_every=10_000, log_every=50)
    train_model(train, dit, work / "latents", work / "model")
    return load_model(work / "model"), data, f"synthetic: {s.n_items} items, DiT width {s.width} depth {s.depth}, {s.train_steps} steps"


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Best CPU time of `fn` over `repeats` runs (after one warm-up run) and its last result."""
    return timed_together([fn], repeats)[0]


def timed_together(fns: list[Callable[[], object]], repeats: int) -> list[tuple[float, object]]:
    """Best CPU time of each function (this process's CPU seconds: robust to other users of a shared machine),
    the functions run interleaved so that changes of load and clock hit all alike."""
    outs = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.process_time()
            outs[i] = fn()
            times[i].append(time.process_time() - start)
    return [(min(t), o) for t, o in zip(times, outs, strict=True)]


def bare_forwards(model: torch.nn.Module, data: LatentSet, cfg: ScoreConfig) -> Callable[[], None]:
    """The same forward passes scoring makes (shapes and count), inputs prepared beforehand: the floor cost."""
    shape = data.latent_shape
    prepared = []
    for lo in range(0, len(data), cfg.batch_size):
        batch = data.batch(range(lo, min(len(data), lo + cfg.batch_size)))
        plan = make_plan(batch.ids, cfg.n_timesteps, shape, cfg.seed)
        b = len(batch)
        for t0 in range(0, cfg.n_timesteps, cfg.timestep_chunk):
            sub = plan.select_timesteps(slice(t0, min(cfg.n_timesteps, t0 + cfg.timestep_chunk)))
            n_t = sub.t.shape[1]
            x_t = add_noise(batch.latents[:, None].expand(b, n_t, *shape), sub.noise, sub.t).reshape(b * n_t, *shape)

            def rep(x: torch.Tensor, n: int = n_t) -> torch.Tensor:
                return x.repeat_interleave(n, dim=0)

            cond = (rep(batch.text), rep(batch.text_mask), rep(batch.seconds_start), rep(batch.seconds_total))
            prepared.append((x_t, sub.t.reshape(-1), *cond))

    def run() -> None:
        with torch.no_grad():
            for args in prepared:
                predict_v(model, None, *args)

    return run


def calibrate(model: torch.nn.Module, delta: dict, latents: LatentSet, cfg: ScoreConfig, mask: bool, base: torch.Tensor) -> float:
    """The factor c for which θ0 + c·δ changes the mean loss by about RELATIVE_CHANGE (a few fixed-point rounds)."""
    theta = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if n in delta])
    c = 1e-3 * float(theta.norm()) / float(torch.cat([v.flatten() for v in delta.values()]).norm())
    for _ in range(4):
        tau = score_many(model, [{k: v * c for k, v in delta.items()}], latents, cfg, mask, base=base)[0]
        c *= RELATIVE_CHANGE * float(base.mean()) / max(float(tau.abs().mean()), 1e-30)
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller model and data (a few minutes on 2 cores)")
    parser.add_argument("--home", type=Path, default=Path("songtrace-data"), help="use its models/demo, latents/demo if present")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("SONGTRACE_QUIET", "1")
    s = QUICK if args.quick else FULL
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, latents, source = build_inputs(s, args.home, Path(tmp))
    data = latents.subset("train")
    n_params = sum(p.numel() for p in model.parameters())
    result: dict[str, object] = {
        "benchmark": "attribution_cost",
        "timing": "best CPU seconds (time.process_time) of interleaved repeats",
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "platform": platform.platform(), "torch": torch.__version__},
        "quick": args.quick,
        "inputs": {"source": source, "train_items": len(data), "latent_shape": list(data.latent_shape), "model_params": n_params},
    }

    # (c) per-sample Fisher gradients: vmap vs a Python loop (same batch, same plan)
    fcfg = FisherConfig(n_timesteps=4, batch_size=s.fisher_items, sample_chunk=64)
    target, frozen = split_params(model, target_params(model, "all"))
    fbatch = data.batch(range(s.fisher_items))
    t_vmap, sums_vmap = timed(lambda: batch_square_sums(model, target, frozen, fbatch, fcfg, data.latent_shape), 1)
    loop_cfg = dataclasses.replace(fcfg, method="loop")
    t_loop, sums_loop = timed(lambda: batch_square_sums(model, target, frozen, fbatch, loop_cfg, data.latent_shape), 1)
    rel = max(float((sums_vmap[k] - sums_loop[k]).abs().max() / sums_loop[k].abs().max().clamp_min(1e-30)) for k in sums_vmap)
    samples = s.fisher_items * fcfg.n_timesteps
    result["c_fisher_vmap_vs_loop"] = {
        "samples": samples, "vmap_seconds": round(t_vmap, 4), "loop_seconds": round(t_loop, 4),
        "speedup": round(t_loop / t_vmap, 2), "max_relative_difference": rel,
        "vmap_ms_per_sample": round(1000 * t_vmap / samples, 3),
    }

    # the Fisher and two query deltas (unlearn two training items, the paper's mixed mask)
    fisher = compute_fisher(model, latents, FisherConfig(n_timesteps=4, batch_size=8))
    ucfg = UnlearnConfig(lr=1e-2, n_timesteps=s.query_timesteps, timestep_chunk=64)
    ctx = QueryContext(latents=latents)
    queries = [resolve_query(f"train:{data.ids[i]}", ctx) for i in (0, 5)]
    t_unlearn, delta = timed(lambda: unlearn(model, fisher, queries[0].batch, ucfg), 1)
    deltas = [delta, unlearn(model, fisher, queries[1].batch, ucfg)]
    result["unlearn_seconds_per_query"] = {"T": s.query_timesteps, "seconds": round(t_unlearn, 3)}

    # (a) cached base losses vs recomputing them each query; (b) overhead over bare forwards
    scfg = ScoreConfig(n_timesteps=s.score_timesteps, batch_size=16, timestep_chunk=s.score_timesteps)
    mask = ucfg.mask_loss
    base = base_losses(model, latents, scfg, mask)
    (t_cached, _), (t_recompute, _), (t_many, _), (t_bare, _) = timed_together(
        [
            lambda: score_many(model, [delta], latents, scfg, mask, base=base),
            lambda: score_many(model, [delta], latents, scfg, mask),
            lambda: score_many(model, deltas * 2, latents, scfg, mask, base=base),
            bare_forwards(model, data, scfg),
        ],
        s.repeats,
    )
    result["a_cached_vs_recomputed_base"] = {
        "T": s.score_timesteps, "items": len(data),
        "cached_seconds_per_query": round(t_cached, 4), "recomputed_seconds_per_query": round(t_recompute, 4),
        "ratio_recomputed_over_cached": round(t_recompute / t_cached, 3),
        "four_queries_one_pass_seconds_per_query": round(t_many / 4, 4),
    }
    result["b_scoring_vs_bare_forwards"] = {
        "scoring_seconds": round(t_cached, 4), "bare_forward_seconds": round(t_bare, 4),
        "overhead_percent": round(100 * (t_cached / t_bare - 1), 1),
    }

    # (d) rank stability across seeds, with and without common random numbers. Eq. 6 with steps = 1 is
    # linear in η, so the deltas are rescaled to a step that changes the mean loss by RELATIVE_CHANGE.
    scale = [calibrate(model, d, latents, scfg, mask, base) for d in deltas]
    deltas = [{k: v * c for k, v in d.items()} for d, c in zip(deltas, scale, strict=True)]
    stability = {}
    for n_t in s.stability_ts:
        cfg_t = ScoreConfig(n_timesteps=n_t, batch_size=16, timestep_chunk=min(n_t, 64))
        runs = {}
        for seed in (1, 2, 3, 4):
            b, losses = loss_pass(model, deltas, data, dataclasses.replace(cfg_t, seed=seed), mask, with_base=True, desc="stability")
            runs[seed] = (b, losses)
        crn = [float(spearmanr(runs[1][1][k] - runs[1][0], runs[3][1][k] - runs[3][0]).statistic) for k in range(len(deltas))]
        no_crn = [float(spearmanr(runs[1][1][k] - runs[2][0], runs[3][1][k] - runs[4][0]).statistic) for k in range(len(deltas))]
        stability[str(n_t)] = {"spearman_crn": round(sum(crn) / len(crn), 4), "spearman_no_crn": round(sum(no_crn) / len(no_crn), 4)}
    result["d_rank_stability"] = {"queries": len(deltas), "items": len(data), "by_T": stability,
                                  "lr": [ucfg.lr * c for c in scale], "mean_abs_tau_over_mean_loss": RELATIVE_CHANGE}
    result["wall_seconds"] = round(time.perf_counter() - started, 1)

    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "attribution_cost.json"
    runs = json.loads(out.read_text()) if out.exists() else {}
    runs = runs if isinstance(runs, dict) and set(runs) <= {"quick", "full"} else {}
    runs["quick" if args.quick else "full"] = result
    out.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
