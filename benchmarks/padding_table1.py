"""Seed 002's Table 1 in the paper's padding regime: a model length at least four times its short tracks.

The demo world's tracks are at most 12 s with short ones from 1.5 s, so zero padding is a small
share of most items and the paper's finding (short tracks fail without the unlearning mask M_U;
"both" masks make short tracks hubs; "mixed" is best) could not show. Here a world of tracks of
0.5-8 s is padded to 8 s: half the tracks are short (0.5-2.7 s) and targets count as short when
their real frames are at most a quarter of the model length (as in the paper: under 30 s of 120 s).

Builds (or reuses, each stage skips when done) world -> latents (with the given codec) -> micro DiT
(the ground-truth recipe) -> Fisher -> the self-influence grid, then writes
benchmarks/results/padding_table1.json (+ table.md) with R(z_tar) of short and long targets per mask.

    nice .venv/bin/python benchmarks/padding_table1.py --home DIR --codec DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    from songtrace.attribution.fisher import FisherConfig, fit_fisher
    from songtrace.codec import CodecConfig, encode_world, train_codec
    from songtrace.groundtruth.config import MICRO_DIT, MICRO_TRAIN
    from songtrace.model.train import train_model
    from songtrace.selfinfluence.inputs import selfinfluence_from_dirs
    from songtrace.selfinfluence.run import SelfInfluenceConfig
    from songtrace.world import WorldConfig, build_world

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--codec", type=Path, default=None, help="a trained codec to reuse (default: train one under --home)")
    ap.add_argument("--tracks", type=int, default=240)
    ap.add_argument("--targets", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    home = args.home
    t0 = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(name, fn):
        s = time.perf_counter()
        out = fn()
        stages[name] = round(time.perf_counter() - s, 1)
        return out

    world = home / "worlds" / "pad"
    wcfg = WorldConfig(tracks=args.tracks, seed=1, max_seconds=8.0, min_seconds=0.5, short_fraction=0.5, full_fraction=0.3,
                       valid_fraction=0.05)
    stage("world", lambda: build_world(wcfg, world))
    codec = args.codec or home / "codecs" / "pad"
    if args.codec is None:
        stage("codec", lambda: train_codec(CodecConfig(steps=600, hidden=32, segment_seconds=2.0), world, codec))
    latents = home / "latents" / "pad"
    stage("encode", lambda: encode_world(world, codec, latents))
    model = home / "models" / "pad"
    stage("train", lambda: train_model(MICRO_TRAIN, MICRO_DIT, latents, model))
    fisher = home / "fisher" / "pad"
    stage("fisher", lambda: fit_fisher(model, latents, FisherConfig(group="all", n_timesteps=8), fisher))
    config = SelfInfluenceConfig(targets=args.targets, short_fraction=0.25, fd=False, embedder="dsp", version_targets=0)
    out = home / "runs" / "selfinfluence-pad"
    result = stage("selfinfluence", lambda: selfinfluence_from_dirs(config, home=home, model=str(model), latents=str(latents),
                                                                    world=str(world), fisher=str(fisher), codec=str(codec), out_dir=out,
                                                                    save_best=False))
    grid = result.grid
    final = grid[grid["stage"] == "B"]
    cols = ["group", "mask", "mean_rank", "median_rank", "frac_rank1", "mean_rank_short", "mean_rank_long", "frac_rank1_short",
            "frac_rank1_long", "embed_topk", "embed_botk", "hub_frac", "lr", "steps"]
    rows = final[[c for c in cols if c in final]].to_dict(orient="records")
    from songtrace.data.latents import LatentSet

    items = LatentSet.load(latents).subset("train")
    length = items.latent_shape[1]
    short = (items.n_frames <= length / 4).float().mean().item()
    record = {
        "benchmark": "padding_table1",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "world": wcfg.to_dict(), "model_frames": length, "share_of_items_at_most_quarter_length": round(short, 3),
        "n_items": len(items), "targets": result.record.get("target_ids"), "best": result.best, "table": rows,
        "stage_seconds": stages, "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "padding_table1.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    shutil.copy(out / "table.md", RESULTS / "padding_table1.md")
    print(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
