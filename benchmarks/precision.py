"""bf16 autocast vs fp32: does attribution keep its ranking? Spearman of τ per stage run in bf16, on a trained demo-sized DiT.

Measured on this CPU (torch's CPU bf16 autocast; a GPU's bf16 matmuls round the same way, but their
kernels differ, so re-measure there with benchmarks/gpu_path.py). A DiT (width 128, depth 4,
8 channels, 64 frames) is trained on a synthetic latent set of 8 "artists"; then for a few training
queries τ(ẑ, z_i) is computed with every stage in fp32 (the reference) and with one stage at a time
in bf16 — the Fisher, the unlearning step (the query gradient), the scoring passes — and all of them
together. The step size is set so that mean |τ| is 1 % of the mean loss (as in attribution_cost.py).
For scale, the same Spearman between two fp32 scorings with different noise seeds (the estimator's
own noise at that T) is reported beside it. The issue's bar: Spearman >= 0.99 with fp32.

    .venv/bin/python benchmarks/precision.py [--quick]

Writes benchmarks/results/precision.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, base_losses, compute_fisher, score_many, unlearn
from songtrace.data.latents import LatentSet
from songtrace.model.registry import load_model
from songtrace.model.train import TrainConfig, train_model

RESULTS = Path(__file__).parent / "results"
RELATIVE_CHANGE = 0.01


def artist_latents(n: int, channels: int, length: int, artists: int = 8, tokens: int = 12, seed: int = 0) -> LatentSet:
    """Each artist a sinusoid pattern of its own plus noise, variable lengths zero-padded, artist-specific caption tokens."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    n_frames = torch.randint(length // 3, length + 1, (n,), generator=g)
    art_tokens = torch.randn(artists, tokens, 384, generator=g)
    latents = torch.zeros(n, channels, length)
    text = torch.zeros(n, tokens, 384)
    for i in range(n):
        a = i % artists
        wave = torch.sin(t[None] * (0.12 + 0.05 * a) + torch.arange(channels)[:, None] * (a + 1) * 0.7)
        latents[i, :, : n_frames[i]] = (wave + 0.3 * torch.randn(channels, length, generator=g))[:, : n_frames[i]]
        text[i] = art_tokens[a] + 0.1 * torch.randn(tokens, 384, generator=g)
    return LatentSet(ids=[f"p{i:04d}" for i in range(n)], artists=[f"artist{i % artists}" for i in range(n)],
                     splits=["valid" if i % 10 == 9 else "train" for i in range(n)], latents=latents, n_frames=n_frames.long(),
                     text=text, text_mask=torch.ones(n, tokens, dtype=torch.bool), seconds_start=torch.zeros(n),
                     seconds_total=n_frames.float() * 0.1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(spearmanr(a.numpy(), b.numpy()).statistic)


def top_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Share of the top-k items by a that are in the top-k by b."""
    return len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())) / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("SONGTRACE_QUIET", "1")
    started = time.perf_counter()
    n, steps, t_score, t_unlearn, n_queries = (40, 80, 8, 32, 2) if args.quick else (80, 300, 32, 128, 3)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        data = artist_latents(n, 8, 64)
        data.save(Path(tmp) / "latents")
        dit = {"width": 128, "depth": 4, "heads": 4, "cond_dim": 64, "timestep_features": 64, "timing_features": 16}
        train = TrainConfig(steps=steps, batch_size=16, lr=2e-3, warmup=20, checkpoint_every=10_000, valid_every=10_000, log_every=50)
        metrics = train_model(train, dit, Path(tmp) / "latents", Path(tmp) / "model")
        model = load_model(Path(tmp) / "model")
    train_items = data.subset("train")
    fisher_cfg = FisherConfig(n_timesteps=8, batch_size=8, sample_chunk=64)
    fishers = {p: compute_fisher(model, data, dataclasses.replace(fisher_cfg, precision=p)) for p in ("fp32", "bf16")}
    unlearn_cfg = UnlearnConfig(lr=1.0, n_timesteps=t_unlearn, timestep_chunk=t_unlearn, mask="mixed")
    score_cfg = ScoreConfig(n_timesteps=t_score, batch_size=16, timestep_chunk=t_score)
    mask_loss = unlearn_cfg.mask_loss
    base = {p: base_losses(model, data, dataclasses.replace(score_cfg, precision=p), mask_loss) for p in ("fp32", "bf16")}

    def delta_for(query, fisher_precision: str, unlearn_precision: str) -> dict[str, torch.Tensor]:
        return unlearn(model, fishers[fisher_precision], query, dataclasses.replace(unlearn_cfg, precision=unlearn_precision))

    def tau(delta, score_precision: str, seed: int = 0) -> torch.Tensor:
        cfg = dataclasses.replace(score_cfg, precision=score_precision, seed=seed)
        b = base[score_precision] if seed == 0 else base_losses(model, data, cfg, mask_loss)
        return score_many(model, [delta], data, cfg, mask_loss, base=b)[0]

    theta = {n: p.detach() for n, p in model.named_parameters()}

    def calibrate(delta: dict[str, torch.Tensor]) -> float:
        """The factor c (η of a one-step update, δ ∝ η) for which θ0 + c·δ changes the mean loss by RELATIVE_CHANGE."""
        norm_theta = float(torch.cat([theta[k].flatten() for k in delta]).norm())
        c = 1e-3 * norm_theta / float(torch.cat([v.flatten() for v in delta.values()]).norm())
        for _ in range(4):
            t = tau({k: v * c for k, v in delta.items()}, "fp32")
            c *= RELATIVE_CHANGE * float(base["fp32"].mean()) / max(float(t.abs().mean()), 1e-30)
        return c

    combos = {"fisher_bf16": ("bf16", "fp32", "fp32"), "unlearn_bf16": ("fp32", "bf16", "fp32"),
              "scoring_bf16": ("fp32", "fp32", "bf16"), "fisher_and_unlearn_bf16": ("bf16", "bf16", "fp32"),
              "all_bf16": ("bf16", "bf16", "bf16")}
    per_query = []
    rows = [int(r) for r in np.linspace(0, len(train_items) - 1, n_queries).round()]
    for row in rows:
        query = train_items.batch([row])
        ref_delta = delta_for(query, "fp32", "fp32")
        scale = calibrate(ref_delta)
        ref = tau({k: v * scale for k, v in ref_delta.items()}, "fp32")
        other_seed = tau({k: v * scale for k, v in ref_delta.items()}, "fp32", seed=1)
        out = {"query": train_items.ids[row], "lr": scale, "target_rank_fp32": int((ref > ref[row]).sum()) + 1,
               "seed_to_seed_fp32": {"spearman": round(spearman(ref, other_seed), 4), "top10_overlap": top_overlap(ref, other_seed)}}
        for name, (fp, up, sp) in combos.items():
            d = delta_for(query, fp, up)
            t = tau({k: v * scale for k, v in d.items()}, sp)
            out[name] = {"spearman": round(spearman(ref, t), 4), "top10_overlap": top_overlap(ref, t),
                         "target_rank": int((t > t[row]).sum()) + 1}
        per_query.append(out)
        print(json.dumps(out), flush=True)
    summary = {name: {"mean_spearman": round(float(np.mean([q[name]["spearman"] for q in per_query])), 4),
                      "min_spearman": round(float(np.min([q[name]["spearman"] for q in per_query])), 4),
                      "meets_0.99": bool(np.min([q[name]["spearman"] for q in per_query]) >= 0.99)}
               for name in [*combos, "seed_to_seed_fp32"]}
    fisher_rel = {k: float((fishers["bf16"].diag[k] - f).norm() / f.norm()) for k, f in fishers["fp32"].diag.items()}
    result = {
        "benchmark": "precision", "quick": args.quick,
        "measured_on": "CPU (torch CPU bf16 autocast, AVX2 without native bf16); NOT a GPU measurement",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "torch_threads": 1,
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "model": {"params": metrics["params"], "train_steps": steps, "valid_loss": metrics["valid_loss"], "items": n,
                  "train_items": len(train_items), "latent_shape": [8, 64]},
        "settings": {"fisher_timesteps": fisher_cfg.n_timesteps, "unlearn_timesteps": t_unlearn, "score_timesteps": t_score,
                     "mask": unlearn_cfg.mask, "mean_abs_tau_over_mean_loss": RELATIVE_CHANGE},
        "fisher_bf16_relative_error": {"median": round(float(np.median(list(fisher_rel.values()))), 5),
                                       "max": round(float(np.max(list(fisher_rel.values()))), 5)},
        "base_loss_bf16_relative_error": round(float(((base["bf16"] - base["fp32"]).abs() / base["fp32"]).mean()), 6),
        "summary": summary, "per_query": per_query, "wall_seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("precision_quick.json" if args.quick else "precision.json")
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
