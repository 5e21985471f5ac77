"""Scoring every attribution method against the ground truth: LDS, leave-one-out and artist-level Spearman with bootstrap CIs.

`evaluate_methods(gt, config, world_dir, codec_dir, out_dir)`:

1. fits θ0's diagonal Fisher and runs a small self-influence search on θ0 (seed 002's protocol)
   unless `config.unlearn` fixes the unlearning configuration; its best cell is `unlearning`;
2. scores every query with every method variant (`variants.VARIANTS`), each cached in
   `methods/<label>.npy` with its timing, so adding a method scores only that method;
3. writes `table.parquet` / `table.md` / `results.json` (LDS on all, held-out and generated
   queries, leave-one-out and artist-level correlations, each with a 95 % bootstrap interval; the
   paired LDS difference of unlearning and every similarity baseline; ground-truth-free
   diagnostics; fast-vs-exact agreement) and `lds.png`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from songtrace.artifacts import StageConfig, atomic_path, check_positive, hash_json, read_json, write_json, write_parquet
from songtrace.attribution.diagnostics import score_diagnostics, top_k_sets
from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.baselines.base import TrainingSet, build_method, prepare_method, score_many
from songtrace.errors import SongtraceError
from songtrace.groundtruth.queries import queries_hash
from songtrace.groundtruth.run import GroundTruth
from songtrace.groundtruth.variants import DEFAULT_VARIANTS, SIMILARITY_BASELINES, variant
from songtrace.metrics.lds import (
    artist_spearman_per_query,
    bootstrap_lds,
    bootstrap_query_means,
    lds_per_query,
    loo_correlation,
    percentile_interval,
    spearman_rows,
)
from songtrace.selfinfluence.run import SelfInfluenceConfig


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(StageConfig):
    """Which methods, how they score, and the bootstrap.

    unlearn: the unlearning configuration (None: the best cell of a self-influence search on θ0 with
    `selfinfluence`); score: how τ's losses are estimated; embedder: for the CLAP-like baseline;
    n_boot / seed: bootstrap resamples; top_k: the top list for diagnostics and fast-vs-exact overlap.
    """

    methods: tuple[str, ...] = DEFAULT_VARIANTS
    unlearn: UnlearnConfig | None = None
    selfinfluence: SelfInfluenceConfig = dataclasses.field(
        default_factory=lambda: SelfInfluenceConfig(targets=8, fd=False, embedder="dsp", version_targets=0))
    score: ScoreConfig = dataclasses.field(default_factory=lambda: ScoreConfig(n_timesteps=32))
    fisher_timesteps: int = 16
    embedder: str = "dsp"
    n_boot: int = 1000
    seed: int = 0
    top_k: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("n_boot", self.n_boot)
        check_positive("top_k", self.top_k)
        check_positive("fisher_timesteps", self.fisher_timesteps)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise SongtraceError(f"methods must be a non-empty list without repeats, got {list(self.methods)}")
        for m in self.methods:
            variant(m, UnlearnConfig())  # refuses an unknown label


# --------------------------------------------------------------------------- inputs


def best_unlearn_config(base_model_dir: Path, gt_dir: Path, config: EvaluateConfig, world_dir: Path, codec_dir: Path, fisher_dir: Path,
                        latents_dir: Path) -> tuple[UnlearnConfig, dict[str, Any]]:
    """The unlearning configuration to score: the config's, else the self-influence search's best cell on θ0."""
    if config.unlearn is not None:
        return config.unlearn, {"source": "config"}
    from songtrace.selfinfluence.inputs import selfinfluence_from_dirs

    result = selfinfluence_from_dirs(config.selfinfluence, model=str(base_model_dir), latents=str(latents_dir), world=str(world_dir),
                                     fisher=str(fisher_dir), codec=str(codec_dir), out_dir=gt_dir / "selfinfluence", save_best=False)
    return UnlearnConfig.from_dict(result.best["unlearn"]), {"source": str(result.out_dir), "metrics": result.best.get("metrics")}


def score_variant(label: str, resources: dict[str, Any], best: UnlearnConfig, train: TrainingSet, queries: list[Any], out_dir: Path
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """One variant's scores `[Q, N]` and timing, from `methods/<label>.npy` when cached for the same method, options and queries."""
    name, options = variant(label, best)
    key = hash_json({"method": name, "options": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in options.items()},
                     "queries": queries_hash(queries), "score": resources["score_config"].to_dict(),
                     "model": resources["model_hash"], "embedder": str(resources.get("embedder_name"))})
    stem = label.replace(" ", "_").replace("×", "x").replace("÷", "div").replace("=", "")
    npy, rec = out_dir / "methods" / f"{stem}.npy", out_dir / "methods" / f"{stem}.json"
    if npy.exists() and rec.exists() and read_json(rec).get("key") == key:
        return np.load(npy), read_json(rec)["timing"]
    method = build_method(name, {k: v for k, v in resources.items() if k not in ("model_hash", "embedder_name")}, **options)
    t0 = time.perf_counter()
    prepare_method(method, train)
    t1 = time.perf_counter()
    items = [q.item for q in queries]
    scores = score_many(method, items, train)
    t2 = time.perf_counter()
    timing = {"prepare_seconds": round(t1 - t0, 3), "seconds_per_query": (t2 - t1) / max(1, len(items))}
    npy.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, scores)
    write_json(rec, {"key": key, "method": name, "label": label, "timing": timing})
    return scores, timing


# --------------------------------------------------------------------------- metrics


def _ci(samples: np.ndarray) -> list[float]:
    return list(percentile_interval(samples))


def method_metrics(scores: dict[str, np.ndarray], gt: GroundTruth, config: EvaluateConfig) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The table (one row per method) and the paired comparisons."""
    kinds = np.array([q.kind for q in gt.queries])
    rows = {name: {"method": name} for name in scores}
    boots: dict[str, dict[str, np.ndarray]] = {}
    for kind in ("all", *sorted(set(kinds))):
        sel = np.ones(len(kinds), bool) if kind == "all" else kinds == kind
        sub = {m: s[sel] for m, s in scores.items()}
        boots[kind] = bootstrap_lds(sub, gt.masks, gt.subset_loss[:, sel], config.n_boot, config.seed)
        for m, s in sub.items():
            rows[m][f"lds_{kind}"] = float(lds_per_query(s, gt.masks, gt.subset_loss[:, sel]).mean())
            rows[m][f"lds_{kind}_ci"] = _ci(boots[kind][m])
    row_of = {i: r for r, i in enumerate(gt.train_ids)}
    if gt.loo_items:
        effect = gt.loo_effect()
        cols = [row_of[i] for i in gt.loo_items]
        rng = np.random.default_rng([config.seed, 41])
        idx = rng.integers(0, effect.shape[1], size=(config.n_boot, effect.shape[1]))
        for m, s in scores.items():
            at = s[:, cols].T
            rows[m]["loo_spearman"] = loo_correlation(at, effect)["pooled"]
            samples = np.array([spearman_rows(at[:, b].reshape(1, -1), effect[:, b].reshape(1, -1))[0] for b in idx])
            rows[m]["loo_spearman_ci"] = _ci(samples)
    if gt.loao_artists:
        effect = gt.loao_effect()
        per = {m: artist_spearman_per_query(s, gt.train_artists, gt.loao_artists, effect) for m, s in scores.items()}
        means = bootstrap_query_means(per, config.n_boot, config.seed)
        for m in scores:
            rows[m]["artist_spearman"] = float(per[m].mean())
            rows[m]["artist_spearman_ci"] = _ci(means[m])
    for m, s in scores.items():
        d = score_diagnostics(s, gt.train_ids, config.top_k)
        rows[m].update({"hub_share": d["hub_share"], "effective_rank": d["effective_rank"], "same_tracks_flag": d["same_tracks_flag"]})
    table = pd.DataFrame(list(rows.values()))
    paired: dict[str, Any] = {}
    if "unlearning" in scores:
        for base in SIMILARITY_BASELINES:
            if base in scores:
                paired[f"unlearning - {base}"] = {kind: {"mean": float((b["unlearning"] - b[base]).mean()),
                                                         "ci": _ci(b["unlearning"] - b[base])} for kind, b in boots.items()}
    return table, paired


def fast_agreement(scores: dict[str, np.ndarray], reference: str, k: int) -> dict[str, Any]:
    """Per fast variant: mean Spearman and top-k overlap with the exact method over the queries."""
    if reference not in scores:
        return {}
    ref = scores[reference]
    out = {}
    for name, s in scores.items():
        if not name.startswith("fast"):
            continue
        overlap = [len(a & b) / k for a, b in zip(top_k_sets(ref, k), top_k_sets(s, k), strict=True)]
        out[name] = {"spearman": float(spearman_rows(ref, s).mean()), f"top{k}_overlap": float(np.mean(overlap))}
    return out


def table_markdown(table: pd.DataFrame) -> str:
    """The LDS table as Markdown (point estimate [95 % CI])."""
    def cell(r: Any, col: str) -> str:
        if col not in r or r[col] is None or (isinstance(r[col], float) and np.isnan(r[col])):
            return "–"
        lo, hi = r[f"{col}_ci"]
        return f"{r[col]:.3f} [{lo:.3f}, {hi:.3f}]"

    cols = [c for c in ("lds_all", "lds_held_out", "lds_generated", "loo_spearman", "artist_spearman") if c in table]
    lines = ["| method | " + " | ".join(cols) + " | hub share | eff. rank |", "|" + "---|" * (len(cols) + 3)]
    for _, r in table.iterrows():
        flag = " ⚑" if r["same_tracks_flag"] else ""
        cells = " | ".join(cell(r, c) for c in cols)
        lines.append(f"| {r['method']}{flag} | {cells} | {r['hub_share']:.2f} | {r['effective_rank']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_lds(table: pd.DataFrame, path: Path) -> None:
    """Horizontal bars of LDS (all queries) with 95 % intervals, best first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = table.sort_values("lds_all")
    fig = Figure(figsize=(7, 0.32 * len(t) + 1.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo = t["lds_all"] - t["lds_all_ci"].map(lambda c: c[0])
    hi = t["lds_all_ci"].map(lambda c: c[1]) - t["lds_all"]
    colors = ["tab:blue" if m.startswith(("unlearning", "attribute", "mucs", "fast")) else "tab:gray" for m in t["method"]]
    ax.barh(t["method"], t["lds_all"], xerr=[lo, hi], color=colors, capsize=2)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("LDS (Spearman, mean over queries; 95 % bootstrap CI)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")


# --------------------------------------------------------------------------- the stage


def score_methods(base_model_dir: Path, gt_dir: Path, queries: list[Any], train_ids: list[str], config: EvaluateConfig,
                  latents_dir: Path, world_dir: Path, codec_dir: Path, out_dir: Path
                  ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], UnlearnConfig, dict[str, Any]]:
    """Every configured method's scores `[Q, N]` and timing (cached per method), and the unlearning configuration used.

    Needs only θ0 and the queries, not the retrained models: it can run while they train.
    """
    from songtrace.attribution.fisher import Fisher, FisherConfig, fit_fisher
    from songtrace.baselines.embedding import resolve_embedder
    from songtrace.data.latents import LatentSet
    from songtrace.model.registry import load_task
    from songtrace.world import load_world

    model = load_task(base_model_dir)
    train_latents = LatentSet.load(latents_dir).subset("train")
    if train_latents.ids != list(train_ids):
        raise SongtraceError(f"{latents_dir}: its train split is not the ground truth's training set")
    fisher_dir = gt_dir / "fisher"
    fit_fisher(base_model_dir, latents_dir, FisherConfig(group="all", n_timesteps=config.fisher_timesteps), fisher_dir)
    best, best_source = best_unlearn_config(base_model_dir, gt_dir, config, world_dir, codec_dir, fisher_dir, latents_dir)
    train = TrainingSet.from_world(train_latents, load_world(world_dir))
    resources = {"model": model, "fisher": Fisher.load(fisher_dir), "seed": config.seed, "score_config": config.score,
                 "cache_dir": gt_dir / "cache" / "base_losses", "model_hash": model.identity(), "embedder_name": config.embedder}
    if "embedding" in config.methods:
        resources["embedder"] = resolve_embedder(config.embedder)
    scores, timing = {}, {}
    for label in config.methods:
        scores[label], timing[label] = score_variant(label, resources, best, train, queries, out_dir)
    return scores, timing, best, best_source


def evaluate_methods(gt: GroundTruth, config: EvaluateConfig, latents_dir: str | Path, world_dir: str | Path, codec_dir: str | Path,
                     out_dir: str | Path | None = None) -> dict[str, Any]:
    """Score every configured method against the ground truth; writes the table, results and plot; returns the results."""
    out_dir = Path(out_dir) if out_dir is not None else gt.out_dir / "evaluation"
    scores, timing, best, best_source = score_methods(gt.base_model_dir, gt.out_dir, gt.queries, gt.train_ids, config, Path(latents_dir),
                                                      Path(world_dir), Path(codec_dir), out_dir)
    table, paired = method_metrics(scores, gt, config)
    table["seconds_per_query"] = [timing[m]["seconds_per_query"] for m in table["method"]]
    table["prepare_seconds"] = [timing[m]["prepare_seconds"] for m in table["method"]]
    agreement = fast_agreement(scores, "unlearning", config.top_k)
    exact = timing.get("unlearning", {}).get("seconds_per_query")
    for name, a in agreement.items():
        a["speedup_per_query"] = exact / timing[name]["seconds_per_query"] if exact else None
    write_parquet(out_dir / "table.parquet", table.assign(**{c: table[c].map(list) for c in table if c.endswith("_ci")}))
    (out_dir / "table.md").write_text(table_markdown(table))
    plot_lds(table, out_dir / "lds.png")
    results = {"best_unlearn": best.to_dict(), "best_source": best_source, "table": table.to_dict(orient="records"),
               "paired_lds_difference": paired, "fast_vs_exact": agreement, "ground_truth": gt.summary,
               "n_queries": len(gt.queries), "n_train": len(gt.train_ids), "n_subsets": int(gt.masks.shape[0]),
               "config": config.to_dict()}
    write_json(out_dir / "results.json", results)
    return results
