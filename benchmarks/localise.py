"""Time-localised attribution on spliced queries: does each window go to the track it was cut from?

A query is the first half of training track A followed by the second half of track B; `localise_queries`
cuts it into two windows and attributes each. Measured over every ordered pair (A, B) of tracks of
different artists, on the tiny DiT (`TINY_DIT`, ~20 k weights) trained `--steps` steps on
`distinct_latent_set()` (12 tracks of 32 frames, one sinusoid each; tests/fixtures_model.py):

- top1_both: A ranks 1st in window 1 and B 1st in window 2; top3_both: both within the top 3;
- pairwise: A outranks B in window 1 and B outranks A in window 2;
- whole_top2: the whole spliced query (no windows) ranks {A, B} as its top 2 (what windows add).

Two settings: `shared_caption` (every track and the query share one caption, so only the content can
tell sources apart; the test's setting) and `own_captions` (each track its own random caption, the
query A's caption: the caption then pulls the second window towards A). Writes
benchmarks/results/localise.json with the figures, the configuration, the seconds per query and the load.

    .venv/bin/python benchmarks/localise.py [--steps 100] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures_model import TINY_DIT, TINY_TRAIN, distinct_latent_set
from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, compute_fisher
from songtrace.attribution.localise import LocaliseConfig, localise_queries
from songtrace.attribution.query import make_query
from songtrace.attribution.score import base_losses
from songtrace.data.latents import LatentSet
from songtrace.model.registry import load_task
from songtrace.model.train import train_model

RESULTS = Path(__file__).parent / "results"
CONFIG = LocaliseConfig(window_seconds=1.6, unlearn=UnlearnConfig(lr=1e-6, n_timesteps=64),
                        score=ScoreConfig(n_timesteps=16, batch_size=12))


def measure(shared_caption: bool, steps: int, root: Path) -> dict:
    """Figures over every cross-artist ordered pair for one latent set."""
    name = "shared" if shared_caption else "own"
    distinct_latent_set(shared_caption=shared_caption).save(root / name / "latents")
    t0 = time.perf_counter()
    train_model(dataclasses.replace(TINY_TRAIN, steps=steps, checkpoint_every=steps, valid_every=steps), TINY_DIT, root / name / "latents",
                root / name / "model")
    train_seconds = time.perf_counter() - t0
    latents = LatentSet.load(root / name / "latents")
    train = latents.subset("train")
    task = load_task(root / name / "model")
    fisher = compute_fisher(task, latents, FisherConfig(n_timesteps=8, batch_size=4, sample_chunk=32))
    base = base_losses(task, latents, CONFIG.score, CONFIG.unlearn.mask_loss)
    pairs = [(a, b) for a, b in itertools.permutations(range(len(train)), 2) if train.artists[a] != train.artists[b]]
    half = latents.latent_shape[1] // 2
    queries = [make_query(f"splice-{a}-{b}", "latent", torch.cat([train.latents[a][:, :half], train.latents[b][:, half:]], dim=1),
                          latents.latent_shape[1], train.text[a], train.text_mask[a], 0.0, float(train.seconds_total[a]))
               for a, b in pairs]
    t0 = time.perf_counter()
    results = localise_queries(task, fisher, latents, queries, CONFIG, base=base)
    seconds = time.perf_counter() - t0
    counts = {"top1_both": 0, "top3_both": 0, "pairwise": 0, "whole_top2": 0}
    first_ranks, second_ranks = [], []
    for (a, b), r in zip(pairs, results, strict=True):
        w1, w2 = r.scores
        rank_a, rank_b = int((w1 > w1[a]).sum()) + 1, int((w2 > w2[b]).sum()) + 1
        first_ranks.append(rank_a)
        second_ranks.append(rank_b)
        counts["top1_both"] += rank_a == 1 and rank_b == 1
        counts["top3_both"] += rank_a <= 3 and rank_b <= 3
        counts["pairwise"] += bool(w1[a] > w1[b]) and bool(w2[b] > w2[a])
        counts["whole_top2"] += set(torch.topk(r.whole.scores, 2).indices.tolist()) == {a, b}
    return {
        "pairs": len(pairs),
        **counts,
        "mean_rank_first_window": sum(first_ranks) / len(pairs),
        "mean_rank_second_window": sum(second_ranks) / len(pairs),
        "n_items": len(train),
        "train_steps": steps,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_query": round(seconds / len(pairs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100, help="training steps of the tiny DiT")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "benchmark": "localise",
            "config": CONFIG.to_dict(),
            "model": {"dit": TINY_DIT, "train": dataclasses.asdict(TINY_TRAIN) | {"steps": args.steps}},
            "settings": {
                "shared_caption": measure(True, args.steps, Path(tmp)),
                "own_captions": measure(False, args.steps, Path(tmp)),
            },
            "machine": {"platform": platform.platform(), "threads": args.threads, "load_average": os.getloadavg()},
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "localise.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["settings"], indent=2))


if __name__ == "__main__":
    main()
