"""`songtrace compare`: unlearning against the non-counterfactual baselines (seed 002, section 3.3, Figs. 1-2).

Generates N tracks from diverse prompts (16 by default, as the paper), adds planted-ground-truth
queries (unseen versions of training pieces; prompts naming small artists), attributes every query
with every method through the common `AttributionMethod` interface, and writes into `out_dir`:

- `scores.parquet`: query_id, kind, method, train_id, artist, score, rank (1 = most attributed);
- `queries.parquet` and `queries/` (the generated and rendered audio);
- `correlations.json` / `correlations_<kind>.csv`: method x method Pearson and Spearman, mean over
  the generated queries of per-query correlations, and pooled (Fig. 2);
- `concentration.parquet`: top-1 / top-10 share, entropy, Gini per method (mean, std over queries);
- `planted.parquet` (one row per planted query and method: rank of the true source) and
  `planted_summary.parquet` (hit@1, hit@10, MRR per method and kind);
- `timing.json`: per method, the training-set preparation time and the time per query;
- `fig1_scores.png`, `fig2_correlations.png`; `summary.json`; `config.json`.

Each method's scores are kept in `.partial/` as soon as they exist, so an interrupted run resumes
at the next method.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from songtrace.artifacts import (
    StageConfig,
    artifact_hash,
    atomic_path,
    begin_stage,
    check_positive,
    finish_stage,
    hash_json,
    hash_tensors,
    read_json,
    write_json,
    write_parquet,
)
from songtrace.attribution.diagnostics import score_diagnostics
from songtrace.attribution.score import ScoreConfig
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.baselines.base import TrainingSet, build_method, method_names, prepare_method, score_many
from songtrace.compare.queries import (
    CompareQuery,
    can_render,
    diverse_captions,
    generated_query,
    rendered_version_queries,
    small_artists,
    world_version_queries,
)
from songtrace.compare.stats import (
    concentration_stats,
    concentration_table,
    correlation_matrix,
    hit_rates,
    source_rank,
)
from songtrace.embedders.registry import embedder_input, resolve_embedder, resolve_embedder_name
from songtrace.errors import SongtraceError
from songtrace.progress import progress

ALL_METHODS = ("unlearning", "embedding", "version", "activations", "representer", "gradient")

__all__ = ["ALL_METHODS", "CompareConfig", "concentration_stats", "correlation_matrix", "run_compare"]


@dataclasses.dataclass(frozen=True)
class CompareConfig(StageConfig):
    """One comparison run.

    queries: generated tracks from diverse prompts; methods: which attribution methods; reference:
    the method Fig. 1 sorts by; embedder: for `embedding` ("auto" = songclap when trained, else dsp);
    seconds: length of generated tracks (None: the duration of the track whose caption is the
    prompt); planted_versions / planted_artists: planted-ground-truth queries of each kind;
    small_artist_tracks: catalogue size up to which an artist counts as small; unlearn / score: the
    unlearning method's settings; options: per-method keyword options, e.g. {"gradient": {"dim": 512}}.
    """

    queries: int = 16
    methods: tuple[str, ...] = ALL_METHODS
    reference: str = "unlearning"
    seed: int = 0
    embedder: str = "auto"
    seconds: float | None = None
    sampler_steps: int = 50
    cfg_scale: float = 3.0
    planted_versions: int = 8
    planted_artists: int = 8
    small_artist_tracks: int = 5
    unlearn: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive("queries", self.queries)
        check_positive("sampler_steps", self.sampler_steps)
        check_positive("planted_versions", self.planted_versions, allow_zero=True)
        check_positive("planted_artists", self.planted_artists, allow_zero=True)
        check_positive("small_artist_tracks", self.small_artist_tracks)
        if self.seconds is not None:
            check_positive("seconds", self.seconds)
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise SongtraceError(f"methods must be a non-empty list without repeats, got {list(self.methods)}")
        valid = method_names()
        for m in (*self.methods, *self.options):
            if m not in valid:
                raise SongtraceError(f"unknown attribution method {m!r}; valid: {', '.join(valid)}")
        if self.reference not in self.methods:
            raise SongtraceError(f"reference method {self.reference!r} is not among the methods {list(self.methods)}")


@dataclasses.dataclass
class CompareInputs:
    """What the methods are built from (loaded once)."""

    model: Any
    train: TrainingSet
    fisher: Any = None
    embedder: Any = None
    cache_dir: Path | None = None


def build_methods(inputs: CompareInputs, config: CompareConfig) -> dict[str, Any]:
    """Every configured method, built from the loaded inputs and its own options."""
    resources = {"model": inputs.model, "fisher": inputs.fisher, "embedder": inputs.embedder, "seed": config.seed,
                 "unlearn_config": config.unlearn, "score_config": config.score, "cache_dir": inputs.cache_dir}
    return {name: build_method(name, resources, **config.options.get(name, {})) for name in config.methods}


# --------------------------------------------------------------------------- queries


def _max_seconds(latents: Any) -> float:
    """The longest track the model generates (from the cache's frame rate and length)."""
    ok = latents.seconds_total > 0
    rate = float((latents.n_frames[ok].double() / latents.seconds_total[ok].double()).median())
    return float(latents.latent_shape[1]) / rate


def build_queries(config: CompareConfig, world: Any, train: TrainingSet, model: Any, codec_dir: Path,
                  query_dir: Path) -> list[CompareQuery]:
    """The generated queries, then the planted-version and planted-artist queries; saves their audio to `query_dir`.

    `model` is the loaded model (or its directory); the codec is loaded once for all generations.
    """
    import soundfile as sf

    from songtrace.codec import load_codec
    from songtrace.model.generate import generate, save_generated

    codec = load_codec(codec_dir)

    m = world.manifest
    tr = m[(m["split"] == "train") & m["id"].isin(set(train.ids))].sort_values("id").reset_index(drop=True)
    cap = 0.999 * _max_seconds(train.latents)

    def gen(prompt: str, seconds: float, seed: int, qid: str) -> Any:
        track = generate(model, codec, prompt, seconds=min(seconds, cap), seed=seed, steps=config.sampler_steps,
                         cfg_scale=config.cfg_scale)
        save_generated(track, query_dir / f"{qid}.wav")
        return generated_query(track, qid, train.latents)

    out: list[CompareQuery] = []
    picks = diverse_captions(tr["caption"].astype(str).tolist(), config.queries, config.seed)
    for k, row_idx in enumerate(progress(picks, total=len(picks), desc="generating queries")):
        row = tr.iloc[row_idx]
        seconds = config.seconds or float(row["duration"])
        seed = config.seed * 1000 + k
        item = gen(str(row["caption"]), seconds, seed, f"gen{k:02d}")
        out.append(CompareQuery(item, "generated", prompt=str(row["caption"]), seed=seed, meta={"caption_of": row["id"]}))

    if config.planted_versions:
        versions = []
        if can_render(world):
            versions = rendered_version_queries(world, train.latents, codec_dir, config.planted_versions, config.seed)
        if not versions:  # an imported world, or no original whose plan re-derives: the world's own version pairs
            versions = world_version_queries(world, train.latents, config.planted_versions)
        for q in versions:
            if q.meta.get("source") == "rendered":
                sf.write(str(query_dir / f"{q.item.id}.wav"), q.item.wav, int(q.item.sr), subtype="PCM_16")
        out.extend(versions)

    rng = np.random.default_rng([config.seed, 11])
    artists = small_artists(tr, config.small_artist_tracks)
    for k, artist in enumerate(artists[: config.planted_artists]):
        rows = tr[tr["artist"] == artist]
        row = rows.iloc[int(rng.integers(len(rows)))]
        seed = config.seed * 1000 + 500 + k
        item = gen(str(row["caption"]), config.seconds or float(row["duration"]), seed, f"artist{k:02d}")
        out.append(CompareQuery(item, "planted_artist", prompt=str(row["caption"]), seed=seed,
                                true_sources=rows["id"].astype(str).tolist(), meta={"artist": artist, "caption_of": row["id"]}))
    return out


def queries_hash(queries: list[CompareQuery]) -> str:
    """Content hash of the queries' latents and audio (a resumed run must see the same queries)."""
    tensors = {}
    for q in queries:
        tensors[f"{q.item.id}/latent"] = q.item.latent
        if q.item.wav is not None:
            tensors[f"{q.item.id}/wav"] = np.asarray(q.item.wav, np.float32)
    return hash_tensors(tensors)


# --------------------------------------------------------------------------- scoring


def run_methods(methods: Mapping[str, Any], queries: list[CompareQuery], train: TrainingSet, partial_dir: Path,
                q_hash: str) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Scores `[Q, N]` and timings of every method; each method's result is saved in `partial_dir` as it finishes."""
    scores, timing = {}, {}
    items = [q.item for q in queries]
    for name, method in methods.items():
        npy, rec_path = partial_dir / f"{name}.npy", partial_dir / f"{name}.json"
        if npy.exists() and rec_path.exists() and read_json(rec_path).get("queries_hash") == q_hash:
            scores[name], timing[name] = np.load(npy), read_json(rec_path)["timing"]
            continue
        t0 = time.perf_counter()
        prepare_method(method, train)
        t1 = time.perf_counter()
        s = score_many(method, items, train)
        t2 = time.perf_counter()
        timing[name] = {"prepare_seconds": t1 - t0, "score_seconds": t2 - t1, "seconds_per_query": (t2 - t1) / max(1, len(items)),
                        "n_queries": len(items), "n_items": len(train)}
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, s)
        write_json(rec_path, {"queries_hash": q_hash, "timing": timing[name]})
        scores[name] = s
    return scores, timing


def ranks_of(scores: np.ndarray) -> np.ndarray:
    """Per row, the rank of each item (1 = largest; ties keep data order)."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(1, scores.shape[-1] + 1)[None, :].repeat(scores.shape[0], 0), axis=-1)
    return out


def scores_frame(scores: Mapping[str, np.ndarray], queries: list[CompareQuery], train: TrainingSet, config_hash: str) -> pd.DataFrame:
    """Long table: one row per (method, query, training item)."""
    parts = []
    n = len(train)
    for name, s in scores.items():
        r = ranks_of(s)
        for qi, q in enumerate(queries):
            parts.append(pd.DataFrame({"query_id": q.item.id, "kind": q.kind, "method": name, "train_id": train.ids,
                                       "artist": train.latents.artists, "score": s[qi], "rank": r[qi].astype(np.int64)}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    frame["config_hash"] = config_hash
    assert len(frame) == len(scores) * len(queries) * n
    return frame


def planted_frames(scores: Mapping[str, np.ndarray], queries: list[CompareQuery], train: TrainingSet) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per planted query and method, the rank of the best true source; and hit@1 / hit@10 / MRR per method and kind."""
    rows = []
    for name, s in scores.items():
        for qi, q in enumerate(queries):
            if not q.true_sources:
                continue
            rank = source_rank(s[qi], train.ids, q.true_sources, q.exclude)
            rows.append({"query_id": q.item.id, "kind": q.kind, "method": name, "rank": rank, "hit@1": 0 < rank <= 1,
                         "hit@10": 0 < rank <= 10, "true_sources": ",".join(q.true_sources), "n_sources": len(q.true_sources)})
    detail = pd.DataFrame(rows, columns=["query_id", "kind", "method", "rank", "hit@1", "hit@10", "true_sources", "n_sources"])
    summary = []
    for (kind, name), g in detail.groupby(["kind", "method"], sort=True):
        summary.append({"kind": kind, "method": name, **hit_rates(g["rank"].tolist())})
    return detail, pd.DataFrame(summary)


def _matrix_json(frame: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    return {r: {c: (None if not np.isfinite(v) else float(v)) for c, v in row.items()} for r, row in frame.iterrows()}


def write_results(out_dir: Path, config: CompareConfig, scores: Mapping[str, np.ndarray], queries: list[CompareQuery],
                  train: TrainingSet, timing: Mapping[str, Any]) -> dict[str, Any]:
    """Every table, figure and the summary of a finished comparison; returns the summary."""
    from songtrace.compare.plots import plot_correlations, plot_score_curves

    frame = scores_frame(scores, queries, train, config.config_hash())
    write_parquet(out_dir / "scores.parquet", frame)
    write_parquet(out_dir / "queries.parquet", pd.DataFrame([q.record() for q in queries]))
    gen_rows = [i for i, q in enumerate(queries) if q.kind == "generated"]
    gen = {m: s[gen_rows] for m, s in scores.items()}
    corr = {}
    for kind in ("pearson", "spearman"):
        corr[kind] = correlation_matrix(gen, kind)
        corr[f"{kind}_pooled"] = correlation_matrix(gen, kind, pooled=True)
        corr[kind].to_csv(out_dir / f"correlations_{kind}.csv")
    write_json(out_dir / "correlations.json", {k: _matrix_json(v) for k, v in corr.items()})
    conc = concentration_table(gen)
    write_parquet(out_dir / "concentration.parquet", conc)
    detail, summary = planted_frames(scores, queries, train)
    write_parquet(out_dir / "planted.parquet", detail)
    write_parquet(out_dir / "planted_summary.parquet", summary)
    write_json(out_dir / "timing.json", dict(timing))
    plot_score_curves(gen, config.reference, out_dir / "fig1_scores.png")
    plot_correlations(corr["pearson"], corr["spearman"], out_dir / "fig2_correlations.png")
    ref = config.reference
    soft = conc[conc.normalisation == "softmax"]
    result = {
        "n_items": len(train),
        "queries": {k: sum(q.kind == k for q in queries) for k in ("generated", "planted_version", "planted_artist")},
        "pearson_with_reference": {m: corr["pearson"].loc[ref, m] for m in scores if m != ref},
        "spearman_with_reference": {m: corr["spearman"].loc[ref, m] for m in scores if m != ref},
        "concentration_softmax": {m: {r.statistic: r.mean for r in soft[soft.method == m].itertuples()} for m in scores},
        "planted": summary.to_dict(orient="records"),
        "seconds_per_query": {m: t["seconds_per_query"] for m, t in timing.items()},
        "prepare_seconds": {m: t["prepare_seconds"] for m, t in timing.items()},
        "diagnostics": {m: score_diagnostics(s, train.ids) for m, s in gen.items()} if gen_rows else {},
    }
    result = _finite(result)
    write_json(out_dir / "summary.json", result)
    return result


def _finite(obj: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, recursively (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------- the stage


def run_compare(config: CompareConfig, model_dir: str | Path, codec_dir: str | Path, latents_dir: str | Path,
                world_dir: str | Path, out_dir: str | Path, fisher_dir: str | Path | None = None, home: str | Path | None = None,
                overwrite: bool = False, model: Any = None) -> dict[str, Any]:
    """Run (or resume, or skip) a comparison; returns the summary (also in `out_dir/summary.json`).

    `model` is the model already loaded from `model_dir` (a task), if the caller has it.
    """
    from songtrace.attribution.fisher import Fisher, check_inputs
    from songtrace.data.latents import LatentSet
    from songtrace.home import resolve_home
    from songtrace.model.registry import load_task
    from songtrace.world import load_world

    out_dir = Path(out_dir)
    model_dir, codec_dir, latents_dir, world_dir = Path(model_dir), Path(codec_dir), Path(latents_dir), Path(world_dir)
    home_path = resolve_home(home)
    embedder_name = resolve_embedder_name(config.embedder, home_path)
    model = load_task(model_dir) if model is None else model
    inputs = {"model": model.identity(), "codec": artifact_hash(codec_dir), "latents": artifact_hash(latents_dir),
              "world": artifact_hash(world_dir)}
    if "embedding" in config.methods:
        inputs["embedder"] = embedder_input(embedder_name, home_path)
    if "unlearning" in config.methods:
        if fisher_dir is None:
            raise SongtraceError("the unlearning method needs a Fisher (--fisher); run `songtrace fisher` first")
        inputs["fisher"] = artifact_hash(fisher_dir)
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        return read_json(out_dir / "summary.json")

    latents = LatentSet.load(latents_dir)
    world = load_world(world_dir)
    missing = sorted(set(latents.ids) - set(world.ids))
    if missing:
        raise SongtraceError(f"{latents_dir}: items {missing[:3]} are not in the world {world_dir}; "
                             "pass the world the cache was encoded from")
    train = TrainingSet.from_world(latents.subset(config.score.split), world)
    fisher = None
    if "unlearning" in config.methods:
        fisher = Fisher.load(fisher_dir)
        check_inputs(fisher, model.identity(), latents.content_hash(), source=f"the Fisher at {fisher_dir}")
    embedder = None
    if "embedding" in config.methods:
        embedder = resolve_embedder(embedder_name, home_path)
    query_dir = out_dir / "queries"
    query_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    queries = build_queries(config, world, train, model, codec_dir, query_dir)
    queries_seconds = time.perf_counter() - t0
    q_hash = queries_hash(queries)
    ins = CompareInputs(model=model, train=train, fisher=fisher, embedder=embedder, cache_dir=home_path / "cache" / "base_losses")
    methods = build_methods(ins, config)
    partial = out_dir / ".partial"
    partial.mkdir(exist_ok=True)
    scores, timing = run_methods(methods, queries, train, partial, q_hash)
    summary = write_results(out_dir, config, scores, queries, train, timing)
    summary["embedder"] = getattr(embedder, "name", embedder_name) if embedder is not None else None
    summary["queries_seconds"] = round(queries_seconds, 2)  # generating and rendering the queries
    write_json(out_dir / "summary.json", _finite(summary))
    content = hash_json({"scores": hash_tensors({m: s for m, s in scores.items()}), "queries": q_hash})
    finish_stage(out_dir, config, inputs, content_hash=content,
                 extra={"queries_hash": q_hash, "embedder": summary["embedder"], "n_items": len(train),
                        "model_dir": str(model_dir), "latents_dir": str(latents_dir), "world_dir": str(world_dir),
                        "fisher_dir": str(fisher_dir) if fisher_dir else None})
    return summary
