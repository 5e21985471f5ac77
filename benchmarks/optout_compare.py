"""Opt-out methods side by side against retraining (seed 000's question, with the field's methods), in one run.

Builds a small world and model in a scratch home (smaller than the demo's so that the whole run,
eight methods x three artists plus the retrainings, fits in about half an hour of one CPU thread).
The default size, `--size small` (the committed results): 80 tracks of at most 4 s, a 16-wide codec,
a DiT of width 48 and depth 2 trained 400 steps, and a songclap embedder trained on the world.
The sizes (`SIZES`): quick (60 tracks ≤ 3 s, DiT 32x2, 150 steps; a smoke run, not written),
small (80 tracks ≤ 4 s, DiT 48x2, 400 steps; default), full (150 tracks ≤ 6 s, DiT 64x3, 1000 steps).
Then, for a small, a medium and a large catalogue:

0. each method's learning rate and budget are picked on a fourth, tuning artist by a rule that needs
   no retraining: the largest forget-minus-retain loss change whose retain loss change stays under
   RETAIN_LIMIT (a small grid per method, `GRID`); a method all of whose settings fail is recorded
   under `tuning.failed` and left out;
1. every method of `songtrace.optout.METHODS` forgets the artist with those settings (cost in CPU
   seconds beside retraining's, which is the same recipe from scratch without the artist);
2. `optout-eval` scores all of them and the retrained model on the same plans, prompts and seeds
   (loss change, membership AUC, generation closeness, quality, attribution credit, relearning);
3. sequential opt-outs of the three artists, one after another, per method: does an earlier artist come back?

Writes benchmarks/results/optout_compare.json (table per artist, closest-to-retrain per metric,
cost ratios, failures) and benchmarks/results/optout_tradeoff.png (forget vs retain loss change).

    nice .venv/bin/python benchmarks/optout_compare.py [--home /tmp/songtrace-optout-bench] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("SONGTRACE_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from songtrace.attribution import UnlearnConfig
from songtrace.codec import CodecConfig, encode_world, train_codec
from songtrace.data.latents import LatentSet
from songtrace.embedders import load_embedder
from songtrace.embedders.songclap_train import config_for_world, train_songclap
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task
from songtrace.model.train import TrainConfig, train_model
from songtrace.optout import METHODS, ForgetSpec, optout
from songtrace.optout.evaluate import OptoutEvalConfig, evaluate_optout
from songtrace.optout.figures import figure_at, per_item_losses
from songtrace.optout.robustness import comeback, forgetting_matrix, sequential_optout
from songtrace.world import WorldConfig, build_world, load_world

RESULTS = Path(__file__).parent / "results"


@dataclasses.dataclass(frozen=True)
class Setting:
    """Sizes of one benchmark run."""

    tracks: int
    max_seconds: float
    codec_hidden: int
    codec_steps: int
    songclap_steps: int
    width: int
    depth: int
    train_steps: int
    eval: OptoutEvalConfig
    sequential_methods: tuple[str, ...]
    grid: dict[str, list[dict[str, Any]]] | None = None  # the tuning grid (None: GRID)


FULL = Setting(
    tracks=150, max_seconds=6.0, codec_hidden=32, codec_steps=600, songclap_steps=400, width=64, depth=3, train_steps=1000,
    eval=OptoutEvalConfig(loss_timesteps=32, max_items=64, prompts_per_kind=4, sampler_steps=20, credit_queries=4, fisher_timesteps=4,
                          score_timesteps=8, attribution=UnlearnConfig(n_timesteps=32), relearn_steps=20),
    sequential_methods=tuple(m for m in METHODS),
)
# The committed results: sized for ~30 min of wall time on a loaded, shared 2-core CPU (one thread).
SMALL = Setting(
    tracks=80, max_seconds=4.0, codec_hidden=16, codec_steps=150, songclap_steps=100, width=48, depth=2, train_steps=400,
    eval=OptoutEvalConfig(loss_timesteps=8, max_items=32, prompts_per_kind=2, sampler_steps=8, credit_queries=2, fisher_timesteps=1,
                          score_timesteps=2, attribution=UnlearnConfig(n_timesteps=4, timestep_chunk=4), relearn_steps=10),
    sequential_methods=tuple(m for m in METHODS if m != "retrain"),
    grid={
        "ga": [{"lr": lr, "steps": 20} for lr in (1e-5, 3e-5, 1e-4)],
        "rl": [{"lr": lr, "steps": 30} for lr in (3e-5, 1e-4)],
        "graddiff": [{"lr": lr, "steps": 30} for lr in (1e-5, 3e-5, 1e-4)],
        "ewc": [{"lr": lr, "steps": 30, "weight": 1e4} for lr in (1e-5, 3e-5, 1e-4)],
        "newton": [{"unlearn": {"lr": lr, "damping": 1.0}} for lr in (3e-6, 1e-5, 3e-5)],
        "salun": [{"lr": lr, "steps": 30} for lr in (3e-4, 1e-3)],
        "bounded": [{"lr": lr, "steps": 100} for lr in (1e-5, 3e-5, 1e-4)],
        "retrain": [{}],
    },
)
QUICK = Setting(
    tracks=60, max_seconds=3.0, codec_hidden=16, codec_steps=60, songclap_steps=20, width=32, depth=2, train_steps=150,
    eval=OptoutEvalConfig(loss_timesteps=4, max_items=16, prompts_per_kind=2, sampler_steps=4, credit_queries=2, fisher_timesteps=2,
                          score_timesteps=2, attribution=UnlearnConfig(n_timesteps=4, timestep_chunk=4), relearn_steps=3),
    sequential_methods=("ga", "bounded"),
)
SIZES = {"quick": QUICK, "small": SMALL, "full": FULL}

# The tuning grid (on the tuning artist only) and its rule: retain loss change <= RETAIN_LIMIT, then the largest forget - retain change.
RETAIN_LIMIT = 0.02
GRID: dict[str, list[dict[str, Any]]] = {
    "ga": [{"lr": lr, "steps": st} for lr in (1e-5, 3e-5, 1e-4) for st in (10, 30)],
    "rl": [{"lr": lr} for lr in (3e-5, 1e-4, 3e-4)],
    "graddiff": [{"lr": lr, "steps": st} for lr in (1e-5, 3e-5, 1e-4) for st in (30, 60)],
    "ewc": [{"lr": lr, "weight": w} for lr in (1e-5, 3e-5) for w in (1.0, 1e4)],
    "newton": [{"unlearn": {"lr": lr, "damping": d}} for lr in (3e-6, 1e-5, 3e-5) for d in (1e-3, 1.0)],
    "salun": [{"lr": lr} for lr in (1e-4, 3e-4, 1e-3)],
    "bounded": [{"lr": lr} for lr in (1e-5, 3e-5, 1e-4)],
    "retrain": [{}],
}

# The figures of the table: (name, path in a model's figures, how a method is judged against retraining)
TABLE = (
    ("forget_loss_change", "loss.delta_forget"),
    ("retain_loss_change", "loss.delta_retain"),
    ("heldout_loss_change", "loss.delta_heldout"),
    ("forget_minus_retain", "loss.forget_minus_retain"),
    ("membership_auc", "membership.auc"),
    ("p_artist_captions", "closeness.caption.artist_probability"),
    ("p_artist_naming", "closeness.naming.artist_probability"),
    ("p_artist_style", "closeness.style.artist_probability"),
    ("p_artist_retain_prompts", "closeness.retain.artist_probability"),
    ("similarity_captions", "closeness.caption.centroid_cosine"),
    ("fd_retain_vs_original", "quality.fd_vs_original"),
    ("alignment_retain", "quality.alignment"),
    ("credit_artist_share", "credit.artist_share"),
    ("relearn_regained", "relearn.regained"),
    ("relearn_recovered_fraction", "relearn.recovered_fraction"),
)


def cpu_seconds(fn: Any) -> tuple[Any, float]:
    """Run fn(); return its result and the process CPU seconds it took (the machine is shared: wall time measures the neighbours)."""
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def recipe(s: Setting, seed: int = 0) -> TrainConfig:
    """The original model's training recipe (retraining reruns it without the forget set)."""
    return TrainConfig(steps=s.train_steps, batch_size=16, lr=1e-3, warmup=50, checkpoint_every=250, valid_every=250, seed=seed)


def architecture(s: Setting) -> dict[str, Any]:
    return {"width": s.width, "depth": s.depth, "heads": 4}


def noise_floor(home: Path, s: Setting, artists: dict[str, str]) -> dict[str, Any]:
    """The same recipe on ALL the data with another seed, scored like an opt-out: how much of the retrained model's change
    from the original is run-to-run variation of training, not forgetting (the floor under every gap to retraining)."""
    latents = home / "latents" / "bench"
    _, seconds = cpu_seconds(lambda: train_model(recipe(s, seed=1), architecture(s), latents, home / "models" / "reseeded"))
    data = LatentSet.load(latents)
    train = data.subset("train")
    original, reseeded = load_task(home / "models" / "original"), load_task(home / "models" / "reseeded")
    out: dict[str, Any] = {"train_cpu_seconds": round(seconds, 1), "per_artist": {}}
    rng = np.random.default_rng(s.eval.seed)
    for artist in artists.values():
        forget = [i for i, a in zip(train.ids, train.artists, strict=True) if a == artist]
        rest = [i for i in train.ids if i not in set(forget)]
        retain = sorted(rng.choice(len(rest), min(s.eval.max_items, len(rest)), replace=False).tolist())
        row = {item: k for k, item in enumerate(train.ids)}
        sets = {"forget": train.take([row[i] for i in forget]), "retain": train.take([row[rest[k]] for k in retain])}
        delta = {k: float((per_item_losses(reseeded, v, s.eval.loss_timesteps, s.eval.seed, True)
                           - per_item_losses(original, v, s.eval.loss_timesteps, s.eval.seed, True)).mean()) for k, v in sets.items()}
        out["per_artist"][artist] = {"forget_loss_change": delta["forget"], "retain_loss_change": delta["retain"],
                                     "forget_minus_retain": delta["forget"] - delta["retain"]}
    return out


def build(home: Path, s: Setting) -> dict[str, Any]:
    """World, codec, latents, songclap, DiT in the scratch home (each stage skips when already there)."""
    timings = {}
    world_dir, codec_dir, latents_dir = home / "worlds" / "bench", home / "codecs" / "bench", home / "latents" / "bench"
    world_cfg = WorldConfig(tracks=s.tracks, max_seconds=s.max_seconds, min_seconds=1.5, valid_fraction=0.2)
    _, timings["world"] = cpu_seconds(lambda: build_world(world_cfg, world_dir))
    _, timings["codec"] = cpu_seconds(lambda: train_codec(CodecConfig(hidden=s.codec_hidden, steps=s.codec_steps, segment_seconds=2.0),
                                                          world_dir, codec_dir))
    _, timings["encode"] = cpu_seconds(lambda: encode_world(world_dir, codec_dir, latents_dir))
    clap = config_for_world(home / "worlds" / "bench", steps=s.songclap_steps)
    _, timings["songclap"] = cpu_seconds(lambda: train_songclap(clap, home / "worlds" / "bench", home / "embedders" / "songclap"))
    metrics, timings["train"] = cpu_seconds(lambda: train_model(recipe(s), architecture(s), home / "latents" / "bench",
                                                                home / "models" / "original"))
    return {"timings": timings, "model": {k: metrics[k] for k in ("params", "valid_loss_init", "valid_loss", "valid_loss_null_text")}}


def pick_artists(latents: LatentSet) -> dict[str, str]:
    """A small, a medium and a large catalogue (train tracks), preferring artists with a held-out track (for the attack)."""
    train = latents.subset("train")
    valid = latents.subset("valid") if "valid" in latents.splits else None
    counts = {a: train.artists.count(a) for a in sorted(set(train.artists))}
    held = {a: (valid.artists.count(a) if valid else 0) for a in counts}
    ranked = sorted(counts, key=lambda a: (counts[a], a))
    with_held = [a for a in ranked if held[a] > 0]
    pool = with_held if len(with_held) >= 4 else ranked
    small, large = pool[0], pool[-1]
    middle = min((a for a in pool if a not in (small, large)), key=lambda a: (abs(counts[a] - (counts[small] + counts[large]) / 2), a))
    return {"small": small, "medium": middle, "large": large}


def _slug(artist: str) -> str:
    return artist.lower().replace(" ", "-").replace("&", "and").replace(".", "")


def tune(home: Path, artist: str, s: Setting) -> dict[str, Any]:
    """Every grid setting of every method on the tuning artist; the pick per method by the retrain-free rule."""
    original, latents = home / "models" / "original", home / "latents" / "bench"
    data = LatentSet.load(latents)
    train = data.subset("train")
    forget_ids = [i for i, a in zip(train.ids, train.artists, strict=True) if a == artist]
    sets = {"forget": train.take([train.ids.index(i) for i in forget_ids]), "retain": train.without(forget_ids)}

    def losses(model_dir: Path) -> dict[str, float]:
        task = load_task(model_dir)
        return {k: float(per_item_losses(task, v, 16, s.eval.seed + 1, True).mean()) for k, v in sets.items()}

    base = losses(original)
    out: dict[str, Any] = {"artist": artist, "retain_limit": RETAIN_LIMIT, "runs": {}, "picked": {}, "failed": {}}
    for name, grid in (s.grid or GRID).items():
        if name == "retrain":
            out["picked"][name] = {}
            continue
        runs = []
        for k, settings in enumerate(grid):
            target = home / "tune" / f"{_slug(artist)}-{name}-{k}"
            try:
                optout(original, latents, ForgetSpec(artist=artist), name, target, settings=settings, overwrite=True)
                after = losses(target)
                runs.append({"settings": settings, "delta_forget": after["forget"] - base["forget"],
                             "delta_retain": after["retain"] - base["retain"]})
            except SongtraceError as e:  # a setting that breaks the model (NaN weights) is a result, not a crash
                runs.append({"settings": settings, "error": str(e)})
        out["runs"][name] = runs
        finished = [r for r in runs if "error" not in r]
        if not finished:  # every setting broke: the method failed the tuning and is left out of the rest of the benchmark
            out["failed"][name] = f"every tuning setting failed ({len(runs)}); first: {runs[0]['error'] if runs else 'no settings'}"
            continue
        ok = [r for r in finished if r["delta_retain"] <= RETAIN_LIMIT]
        pick = max(ok, key=lambda r: r["delta_forget"] - r["delta_retain"]) if ok else min(finished, key=lambda r: r["delta_retain"])
        out["picked"][name] = pick["settings"]
    return out


def tuning_artist(latents: LatentSet, evaluated: dict[str, str]) -> str:
    """The artist the settings are tuned on: not evaluated, with a held-out track, its catalogue nearest the medium one."""
    train = latents.subset("train")
    valid = latents.subset("valid").artists if "valid" in latents.splits else []
    counts = {a: train.artists.count(a) for a in sorted(set(train.artists)) if a not in evaluated.values()}
    medium = train.artists.count(evaluated["medium"])
    candidates = [a for a in counts if a in valid] or list(counts)
    return min(candidates, key=lambda a: (abs(counts[a] - medium), a))


def run_artist(home: Path, artist: str, s: Setting, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every method on one artist, then one evaluation of all of them against the retrained model."""
    original, latents = home / "models" / "original", home / "latents" / "bench"
    dirs, cost = {}, {}
    for name in (m for m in METHODS if m in settings):  # a method that failed its tuning has no settings
        out = home / "models" / f"{_slug(artist)}-{name}"
        # a finished checkpoint of the same config is reused (a resumed benchmark): its record keeps the CPU seconds it took
        result = optout(original, latents, ForgetSpec(artist=artist), name, out, settings=settings[name], overwrite=True)
        cost[name], dirs[name] = float(result.record["cpu_seconds"]), out
    unlearned = {m: d for m, d in dirs.items() if m != "retrain"}
    ev, eval_seconds = cpu_seconds(lambda: evaluate_optout(unlearned, original, latents, home / "codecs" / "bench",
                                                           load_embedder(home / "embedders" / "songclap"), s.eval,
                                                           retrained_dir=dirs["retrain"], world_dir=home / "worlds" / "bench",
                                                           out_dir=home / "eval" / _slug(artist), overwrite=True))
    rows = {}
    for m in ["original", *unlearned, "retrained"]:
        figs = ev["figures"][m]
        row = {name: figure_at(figs, path) for name, path in TABLE}
        row["cpu_seconds"] = round(cost.get("retrain" if m == "retrained" else m, 0.0), 2) if m != "original" else None
        row["cost_vs_retrain"] = round(cost[m] / cost["retrain"], 4) if m in unlearned else (1.0 if m == "retrained" else None)
        if m in unlearned:
            row["gap"] = {name: ev["gaps"][m].get(path) for name, path in TABLE}
            row["stop_reason"] = json.loads((dirs[m] / "config.json").read_text())["method_log"].get("stop_reason")
        rows[m] = row
    return {"artist": artist, "n_forget": ev["forget"]["n"], "sets": ev["sets"], "rows": rows, "eval_cpu_seconds": round(eval_seconds, 1),
            "classifier_train_accuracy": ev["classifier_train_accuracy"], "prompts": ev["prompts"]}


def run_sequential(home: Path, artists: list[str], s: Setting, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The three artists forgotten one after another, per method; the forgetting matrix and how much each earlier one came back."""
    original, latents = home / "models" / "original", home / "latents" / "bench"
    data = LatentSet.load(latents)
    out: dict[str, Any] = {"artists": artists}
    for name in (m for m in s.sequential_methods if m in settings):
        steps = sequential_optout(original, latents, [ForgetSpec(artist=a) for a in artists], name, home / "sequential" / name,
                                  settings=settings[name], overwrite=True)
        sets = [st.record["forget_ids"] for st in steps]
        retain = [i for i in data.subset("train").ids if i not in set(steps[-1].record["forgotten_ids"])]
        matrix = forgetting_matrix(load_task(original), [load_task(st.out_dir) for st in steps], data, sets, retain,
                                   s.eval.loss_timesteps, s.eval.seed)
        out[name] = {"matrix": matrix, "comeback": comeback(matrix), "cpu_seconds": round(sum(st.record["cpu_seconds"] for st in steps), 1),
                     "stop_reasons": [st.record["method_log"].get("stop_reason") for st in steps]}
    return out


# Figures where less (or more) is simply better, whatever retraining gives: damage to the rest of the model.
BEST = {"retain_loss_change": "min", "heldout_loss_change": "min", "fd_retain_vs_original": "min", "alignment_retain": "max"}


ZERO_FOR_ORIGINAL = ("forget_loss_change", "retain_loss_change", "heldout_loss_change", "forget_minus_retain", "relearn_recovered_fraction")


def _do_nothing(rows: dict[str, Any], name: str) -> float | None:
    """The original model's gap to the retrained one on a figure (its loss changes are 0 by definition)."""
    o, r = rows["original"].get(name), rows["retrained"].get(name)
    if o is None and name in ZERO_FOR_ORIGINAL:
        o = 0.0
    return None if o is None or r is None else o - r


def closest_to_retrain(per_artist: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: the method with the smallest mean |gap to retrain| over the artists, every method's mean |gap|,
    and for the damage figures (BEST) also the method with the best mean value."""
    methods = [m for m in per_artist[0]["rows"] if m not in ("original", "retrained")]
    out = {}
    for name, _ in TABLE:
        gaps = {m: [abs(a["rows"][m]["gap"][name]) for a in per_artist if a["rows"][m]["gap"].get(name) is not None] for m in methods}
        mean = {m: float(np.mean(v)) for m, v in gaps.items() if v}
        if not mean:
            continue
        out[name] = {"closest": min(mean, key=mean.get), "mean_abs_gap": {m: round(v, 5) for m, v in sorted(mean.items())}}
        nothing = [_do_nothing(a["rows"], name) for a in per_artist]
        if all(v is not None for v in nothing):  # the original model's own gap: a method above it did worse than no opt-out at all
            out[name]["no_optout_abs_gap"] = round(float(np.mean([abs(v) for v in nothing])), 5)
            out[name]["beat_no_optout"] = sorted(m for m, v in mean.items() if v < out[name]["no_optout_abs_gap"])
        if name in BEST:
            values = {m: float(np.mean([a["rows"][m][name] for a in per_artist])) for m in methods
                      if all(a["rows"][m][name] is not None for a in per_artist)}
            pick = min if BEST[name] == "min" else max
            out[name]["best"] = pick(values, key=values.get) if values else None
    return out


def failures(per_artist: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Where each method fails, in words, by rules fixed before looking (relative to what retraining achieves)."""
    out: dict[str, list[str]] = {}
    for a in per_artist:
        r = a["rows"]["retrained"]
        for m, row in a["rows"].items():
            if m in ("original", "retrained"):
                continue
            notes = out.setdefault(m, [])
            f, rf = row["forget_loss_change"], r["forget_loss_change"]
            if f is not None and rf and f < 0.5 * rf:
                notes.append(f"{a['artist']}: forget loss rose {f:+.3f}, under half of retraining's {rf:+.3f} (under-forgets)")
            if f is not None and rf and f > 3 * rf:
                notes.append(f"{a['artist']}: forget loss rose {f:+.3f}, over 3x retraining's {rf:+.3f} (over-forgets: the set now "
                             "looks unlike anything, which itself reveals it)")
            rr = row["retain_loss_change"]
            if rr is not None and rr > max(0.02, 2 * abs(r["retain_loss_change"] or 0)):
                notes.append(f"{a['artist']}: retain loss rose {rr:+.3f} (retraining {r['retain_loss_change']:+.3f}): damages the rest")
            auc, rauc = row["membership_auc"], r["membership_auc"]
            if auc is not None and rauc is not None and abs(auc - rauc) > 0.2:
                notes.append(f"{a['artist']}: membership AUC {auc:.2f} vs retraining's {rauc:.2f}")
            p, rp = row["p_artist_captions"], r["p_artist_captions"]
            if p is not None and rp is not None and p > rp + 0.15:
                notes.append(f"{a['artist']}: generations from its captions still classified as the artist (P {p:.2f} vs {rp:.2f})")
    return out


def tradeoff_plot(per_artist: list[dict[str, Any]], path: Path) -> None:
    """Forget loss change (y) against retain loss change (x), one point per method and artist; retraining is the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    markers = ["o", "s", "^", "D"]
    methods = [m for m in per_artist[0]["rows"] if m != "original"]
    colours = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    for k, a in enumerate(per_artist):
        for m in methods:
            row = a["rows"][m]
            x, y = row["retain_loss_change"], row["forget_loss_change"]
            if x is None or y is None:
                continue
            ax.scatter(x, y, color=colours[m], marker="*" if m == "retrained" else markers[k % len(markers)],
                       s=180 if m == "retrained" else 60, edgecolor="black", linewidth=0.5,
                       label=m if k == 0 else None)
        ax.annotate(a["artist"], (a["rows"]["retrained"]["retain_loss_change"], a["rows"]["retrained"]["forget_loss_change"]),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    lim = max(abs(v) for a in per_artist for m in methods for v in (a["rows"][m]["retain_loss_change"], a["rows"][m]["forget_loss_change"])
              if v is not None)
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.5, ls="--", label="forget change = retain change (no specificity)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("retain loss change vs original (lower = less damage)")
    ax.set_ylabel("forget loss change vs original (retrained = target)")
    ax.set_title("Opt-out trade-off: markers o/s/^ = small/medium/large catalogue, * = retrained")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# The markdown table's columns: (header, row key, format)
MD_COLUMNS = (
    ("forget Δloss", "forget_loss_change", "{:+.4f}"),
    ("retain Δloss", "retain_loss_change", "{:+.4f}"),
    ("held-out Δloss", "heldout_loss_change", "{:+.4f}"),
    ("forget − retain", "forget_minus_retain", "{:+.4f}"),
    ("MIA AUC", "membership_auc", "{:.2f}"),
    ("P(artist) captions", "p_artist_captions", "{:.2f}"),
    ("P(artist) naming", "p_artist_naming", "{:.2f}"),
    ("P(artist) style", "p_artist_style", "{:.2f}"),
    ("sim. captions", "similarity_captions", "{:.3f}"),
    ("FD retain vs orig.", "fd_retain_vs_original", "{:.3g}"),
    ("align. retain", "alignment_retain", "{:.3f}"),
    ("credit share", "credit_artist_share", "{:.3f}"),
    ("relearn regained", "relearn_regained", "{:+.4f}"),
    ("relearn recovered", "relearn_recovered_fraction", "{:+.2f}"),
    ("CPU s", "cpu_seconds", "{:.1f}"),
    ("cost / retrain", "cost_vs_retrain", "{:.3f}"),
)


def _cell(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _passes_summary(result: dict[str, Any]) -> str:
    """Wall and CPU time of every pass of the benchmark (a rerun reuses what an earlier pass finished)."""
    last: dict[str, dict[str, Any]] = {}
    for p in result.get("passes") or []:
        last[p["pass_started"]] = p
    if not last:
        return f"total {result['total_wall_seconds'] / 60:.1f} min wall, {result['total_cpu_seconds'] / 60:.1f} min CPU"
    return "passes: " + "; ".join(f"{started} ran to '{p['phase']}' in {p['wall_s'] / 60:.1f} min wall, {p['cpu_s'] / 60:.1f} min CPU"
                                  for started, p in last.items())


def markdown(result: dict[str, Any]) -> str:
    """The benchmark's results as markdown: per-artist tables, closest method per metric, costs, failures, sequential opt-outs."""
    s, m = result["setting"], result["setup"]["model"]
    lines = ["# Opt-out methods against retraining (benchmarks/optout_compare.py)", "",
             f"World: {result['world']['tracks']} tracks of at most {s['max_seconds']} s; DiT width {s['width']}, depth {s['depth']} "
             f"({m['params']} weights) trained {s['train_steps']} steps (valid loss {m['valid_loss_init']:.3f} -> {m['valid_loss']:.3f}); "
             f"codec hidden {s['codec_hidden']}; songclap {s['songclap_steps']} steps. Smaller than the demo's model, for a shared CPU.",
             f"Settings per method picked on the tuning artist {result['tuning']['artist']!r} (retain loss change <= "
             f"{result['tuning']['retain_limit']}, then the largest forget - retain change): "
             + "; ".join(f"`{k}` {json.dumps(v, sort_keys=True)}" for k, v in result["tuning"]["picked"].items() if v) + "."
             + "".join(f" `{k}` left out: {v}." for k, v in result["tuning"].get("failed", {}).items()),
             f"Machine: {result['machine']['note']}; load average during the run: {result['machine'].get('load_summary', '?')}; "
             f"{_passes_summary(result)}.", ""]
    for a in result["per_artist"]:
        lines += [f"## {a['size']} catalogue: {a['artist']} ({a['n_forget']} training tracks forgotten; "
                  f"{a['sets']['nonmembers']} non-members: {a['sets']['nonmember_reference']})", "",
                  "| model | " + " | ".join(h for h, _, _ in MD_COLUMNS) + " |", "|---" * (len(MD_COLUMNS) + 1) + "|"]
        order = ["original", "retrained", *(m for m in METHODS if m in a["rows"])]
        for name in order:
            row = a["rows"][name]
            lines.append(f"| {name} | " + " | ".join(_cell(row.get(k), f) for _, k, f in MD_COLUMNS) + " |")
        lines += ["", "Gap to retrained (method − retrained):", "",
                  "| method | " + " | ".join(h for h, k, _ in MD_COLUMNS if k in dict(TABLE)) + " |",
                  "|---" * (1 + sum(k in dict(TABLE) for _, k, _ in MD_COLUMNS)) + "|"]
        for name in order:
            row = a["rows"][name]
            if "gap" in row:
                lines.append(f"| {name} | " + " | ".join(_cell(row["gap"].get(k), "{:+.3g}") for _, k, _ in MD_COLUMNS if k in dict(TABLE))
                             + " |")
        lines.append("")
    lines += ["## Closest to retraining, per metric (smallest mean |gap| over the three artists)", "",
              "| metric | closest | best value (damage metrics) | no opt-out's abs gap | mean abs gap per method |",
              "|---|---|---|---|---|"]
    for metric, c in result["closest_to_retrain"].items():
        gaps = ", ".join(f"{k} {v:.3g}" for k, v in sorted(c["mean_abs_gap"].items(), key=lambda kv: kv[1]))
        lines.append(f"| {metric} | **{c['closest']}** | {c.get('best') or ''} | {_cell(c.get('no_optout_abs_gap'), '{:.3g}')} | {gaps} |")
    lines += ["", "## Cost: CPU seconds of each method / retraining's (same artist)", "",
              "| method | " + " | ".join(a["artist"] for a in result["per_artist"]) + " |", "|---" * (1 + len(result["per_artist"])) + "|"]
    for name, ratios in result["cost_vs_retrain"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(ratios.get(a["artist"]), "{:.3f}") for a in result["per_artist"]) + " |")
    lines.append("| retrain (CPU s) | " + " | ".join(_cell(a["rows"]["retrained"]["cpu_seconds"], "{:.0f}") for a in result["per_artist"])
                 + " |")
    lines += ["", "## Where each method fails (rules fixed in `failures()`)", ""]
    for name, notes in result["failures"].items():
        lines.append(f"- **{name}**: " + ("; ".join(notes) if notes else "no rule tripped"))
    seq = result["sequential"]
    lines += ["", f"## Sequential opt-outs: {' -> '.join(seq['artists'])}", "",
              "Forgetting matrix M[k][j] = (forget loss change of set j) − (retain loss change) after step k; comeback of set j = "
              "1 − M[last][j] / M[j][j] (0 = stayed forgotten, 1 = fully back, < 0 = forgotten further).", "",
              "| method | after step 1 | after step 2 | after step 3 | comeback | CPU s |", "|---|---|---|---|---|---|"]
    for name in seq:
        if name == "artists":
            continue
        r = seq[name]
        rows = [" / ".join(f"{v:+.3f}" for v in row) for row in r["matrix"]]
        cb = " / ".join(_cell(v, "{:+.2f}") for v in r["comeback"])
        lines.append(f"| {name} | " + " | ".join(rows) + f" | {cb} | {r['cpu_seconds']:.1f} |")
    floor = result.get("noise_floor")
    if floor:
        lines += ["", "## Noise floor: the same recipe on all the data with another seed (nothing forgotten)", "",
                  "What a retrained model's loss changes contain that is run-to-run variation of training, not forgetting; "
                  "gaps to retraining smaller than this are not meaningful.", "",
                  "| artist | forget Δloss | retain Δloss | forget − retain |", "|---|---|---|---|"]
        for artist, r in floor["per_artist"].items():
            cells = (r["forget_loss_change"], r["retain_loss_change"], r["forget_minus_retain"])
            lines.append(f"| {artist} | " + " | ".join(f"{v:+.4f}" for v in cells) + " |")
    if result.get("passes"):
        lines += ["", "## Passes (a rerun reuses finished checkpoints and evaluations; costs are those recorded when they ran)", "",
                  "| pass started | phase | wall s | CPU s | load avg (1/5/15 min) |", "|---|---|---|---|---|"]
        for p in result["passes"]:
            lines.append(f"| {p['pass_started']} | {p['phase']} | {p['wall_s']} | {p['cpu_s']} | {' / '.join(map(str, p['load_avg']))} |")
    lines.append("")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], out: Path) -> None:
    """The JSON, the markdown and the trade-off plot."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "optout_compare.json").write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    (out / "optout_compare.md").write_text(markdown(result))
    tradeoff_plot(result["per_artist"], out / "optout_tradeoff.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=Path("/tmp/songtrace-optout-bench"))
    parser.add_argument("--size", choices=sorted(SIZES), default="small", help="quick: a smoke run (minutes), not written to results/")
    parser.add_argument("--quick", action="store_true", help="= --size quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render", type=Path, help="only rewrite the markdown and plot from this results JSON")
    args = parser.parse_args()
    if args.render:
        result = json.loads(args.render.read_text())
        result |= {"closest_to_retrain": closest_to_retrain(result["per_artist"]), "failures": failures(result["per_artist"])}
        write_outputs(result, args.render.parent)
        return
    torch.set_num_threads(args.threads)
    size = "quick" if args.quick else args.size
    s = SIZES[size]
    home = args.home / size
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    phases: list[dict[str, Any]] = []
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    home.mkdir(parents=True, exist_ok=True)

    def phase(name: str) -> None:
        phases.append({"phase": name, "wall_s": round(time.perf_counter() - start_wall, 1),
                       "cpu_s": round(time.process_time() - start_cpu, 1), "load_avg": [round(x, 2) for x in os.getloadavg()]})
        print(json.dumps(phases[-1]), flush=True)
        with (home / "phases.jsonl").open("a") as f:
            f.write(json.dumps({"pass_started": started_at, **phases[-1]}) + "\n")

    phase("start")
    setup = build(home, s)
    phase("built")
    latents = LatentSet.load(home / "latents" / "bench")
    artists = pick_artists(latents)
    tuning = tune(home, tuning_artist(latents, artists), s)
    settings = tuning["picked"]
    phase("tuned")
    per_artist = []
    for size_name, artist in artists.items():
        per_artist.append({"size": size_name, **run_artist(home, artist, s, settings)})
        phase(f"artist {artist}")
    sequential = run_sequential(home, list(artists.values()), s, settings)
    phase("sequential")
    floor = noise_floor(home, s, artists)
    phase("noise floor")
    cost = {m: {a["artist"]: a["rows"][m]["cost_vs_retrain"] for a in per_artist} for m in per_artist[0]["rows"]
            if m not in ("original", "retrained")}
    world = load_world(home / "worlds" / "bench").summary()
    passes = [json.loads(line) for line in (home / "phases.jsonl").read_text().splitlines()]
    loads = [p["load_avg"][0] for p in passes]
    result = {
        "size": size,
        "setting": {**{k: v for k, v in dataclasses.asdict(s).items() if k != "eval"}, "eval": s.eval.to_dict()},
        "world": {"tracks": world["tracks"], "splits": world["splits"],
                  "catalogues": {a["artist"]: a["tracks"] for a in world["artists"]}},
        "setup": setup,
        "artists": artists,
        "tuning": tuning,
        "settings": {m: METHODS[m].config.from_dict(v).to_dict() for m, v in settings.items()},
        "per_artist": per_artist,
        "closest_to_retrain": closest_to_retrain(per_artist),
        "cost_vs_retrain": cost,
        "failures": failures(per_artist),
        "sequential": sequential,
        "noise_floor": floor,
        "phases": phases,
        "passes": passes,
        "total_cpu_seconds": round(time.process_time() - start_cpu, 1),
        "total_wall_seconds": round(time.perf_counter() - start_wall, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "load_avg_end": os.getloadavg(),
                    "load_summary": f"1-min load {min(loads):.1f}-{max(loads):.1f} at the phase boundaries of every pass",
                    "note": "2-core CPU shared with other jobs; costs are this process's CPU seconds"},
    }
    write_outputs(result, RESULTS if size != "quick" else home)
    print(json.dumps({"closest_to_retrain": {k: v["closest"] for k, v in result["closest_to_retrain"].items()},
                      "cost_vs_retrain": cost, "total_cpu_seconds": result["total_cpu_seconds"]}, indent=2))


if __name__ == "__main__":
    main()
