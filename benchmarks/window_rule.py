"""What the window tail rule changes: songclap's retrieval report and the pooled embeddings, tail covered vs fixed hop.

`songtrace.data.windows.window_starts` adds a window aligned to the end of a track when windows
every hop leave a tail; fixed-hop framing (the embedders' rule before) drops it. This script
embeds the demo world with the trained songclap (and dsp with the same windows) under both rules,
in one process, and writes benchmarks/results/window_rule.json: the retrieval report of
`songtrace embedder train` under each rule, and how far each track's pooled embedding moved.

Needs `<home>/worlds/demo` and `<home>/embedders/songclap` (made by `songtrace demo`).

    .venv/bin/python benchmarks/window_rule.py [--home DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import songtrace.embedders.base as embedders_base
import songtrace.embedders.dsp as dsp_module
import songtrace.embedders.songclap as songclap_module
from songtrace.data.windows import window_starts
from songtrace.embedders.dsp import DspEmbedder
from songtrace.embedders.songclap import SongClapEmbedder
from songtrace.embedders.songclap_train import songclap_report
from songtrace.world import load_world
from songtrace.world.tracks import world_tracks

RESULTS = Path(__file__).parent / "results"


def fixed_hop_starts(n: int, window: int, hop: int) -> list[int]:
    """The old rule: full windows every hop only (a tail shorter than a hop is not covered)."""
    return [0] if n <= window else list(range(0, n - window + 1, hop))


@contextmanager
def rule(starts: Callable[[int, int, int], list[int]]) -> Iterator[None]:
    """Every embedder windows with `starts` inside the block."""
    modules = (embedders_base, dsp_module, songclap_module)
    saved = [m.window_starts for m in modules]
    for m in modules:
        m.window_starts = starts
    try:
        yield
    finally:
        for m, s in zip(modules, saved, strict=True):
            m.window_starts = s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=os.environ.get("SONGTRACE_HOME", "songtrace-data"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    home = Path(args.home)
    world_dir = home / "worlds" / "demo"
    songclap = SongClapEmbedder.from_dir(home / "embedders" / "songclap", name="songclap")
    dsp = DspEmbedder(songclap.window_seconds, songclap.hop_seconds)
    world = load_world(world_dir)
    train, valid = world_tracks(world_dir, split="train"), world_tracks(world_dir, split="valid")
    valid.source = "valid"
    ids = list(world.manifest["id"])
    durations = world.manifest["duration"].to_numpy()
    window, hop = songclap.window_samples, songclap.hop_samples
    lengths = [len(songclap.prepare(world.audio(i), world.sample_rate)) for i in ids]  # at the embedder's rate
    with_tail = [n > window and (n - window) % hop != 0 for n in lengths]

    out: dict[str, object] = {"benchmark": "window_rule", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                              "home": str(home), "window_seconds": songclap.window_seconds, "hop_seconds": songclap.hop_seconds,
                              "tracks": len(ids), "tracks_with_a_tail": int(sum(with_tail)),
                              "tail_seconds_mean": float(np.mean([((n - window) % hop) / songclap.sample_rate
                                                                  for n, t in zip(lengths, with_tail, strict=True) if t] or [0.0])),
                              "duration_seconds": {"min": float(durations.min()), "median": float(np.median(durations)),
                                                   "max": float(durations.max())}}
    pooled: dict[str, dict[str, np.ndarray]] = {}
    for name, starts in (("fixed_hop", fixed_hop_starts), ("tail_covered", window_starts)):
        with rule(starts):
            report = songclap_report(songclap, train, valid, songclap.config.random_baseline_seeds)
            out[name] = {"songclap": report["songclap"], "dsp": report["dsp"]}
            pooled[name] = {e.name: np.stack([e.embed_audio([world.audio(i)], world.sample_rate)[0] for i in ids]) for e in (songclap, dsp)}
    moved = {}
    for e in ("songclap", "dsp"):
        a, b = pooled["fixed_hop"][e], pooled["tail_covered"][e]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        changed = np.abs(cos - 1.0) > 1e-6
        median = float(np.median(cos[changed])) if changed.any() else 1.0
        moved[e] = {"tracks_changed": int(changed.sum()), "changed_without_a_tail": int((changed & ~np.array(with_tail)).sum()),
                    "cosine_old_new_min": float(cos.min()), "cosine_old_new_median_of_changed": median}
    out["pooled_embeddings"] = moved
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "window_rule.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
