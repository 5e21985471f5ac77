"""Attribution runs: unlearn each query, score the whole training set, rank, credit artists, write the artifact.

In memory (a notebook, the user's own model): `attribute_queries(model, fisher, latents, queries, config)`.
From artifact directories (the CLI): `attribute(queries, config, model_dir, latents_dir, fisher_dir, out_dir)`,
which writes `scores.parquet` (query_id, train_id, artist, title, score, rank, config_hash; one row
per training item and query, in data order), `credits.parquet` (per-artist credit shares), `config.json`
and `deltas/*.safetensors` (each query's unlearned delta θ' − θ0 with what it was made from; an
audit recomputes the scores from it: `recompute_scores`). Its unlearning settings default to the
model's tuned best configuration (`attribution.best_config`).

Under torchrun (`job` from `shard.distributed`) the queries are unlearned one per rank in turn and the
training set is scored in shards over the ranks; finished deltas and score shards are kept in
`shards/` until the run is written, so a rerun after a dead rank recomputes only what is missing.
Rank 0 writes the artifact; the scores equal the single-process ones bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from songtrace.artifacts import (
    CONFIG_FILE,
    StageConfig,
    artifact_hash,
    begin_stage,
    finish_stage,
    hash_json,
    hash_tensors,
    read_json,
    read_parquet,
    write_parquet,
)
from songtrace.attribution.best_config import LEGACY_BEST_CONFIG
from songtrace.attribution.best_config import default_unlearn_config as default_unlearn_config  # re-exported: attribute's defaults
from songtrace.attribution.best_config import resolve_unlearn_config as resolve_unlearn_config
from songtrace.attribution.delta import UnlearnedDelta, delta_metadata, load_delta, save_delta
from songtrace.attribution.diagnostics import score_diagnostics
from songtrace.attribution.fisher import Fisher, check_fits, check_inputs
from songtrace.attribution.groups import split_params, target_params
from songtrace.attribution.query import Query, QueryContext, resolve_query
from songtrace.attribution.score import ScoreConfig, base_losses, credit_shares, ranks, score_many
from songtrace.attribution.shard import SINGLE, Job, ShardStore, map_shards
from songtrace.attribution.unlearn import UnlearnConfig, delta_norm, unlearn
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.home import resolve_home
from songtrace.model.registry import load_task
from songtrace.model.task import ModelTask
from songtrace.progress import progress
from songtrace.world import find_world

SCORES_FILE = "scores.parquet"
CREDITS_FILE = "credits.parquet"
SHARDS_DIR = "shards"  # finished deltas and score shards while the run is unfinished


@dataclasses.dataclass(frozen=True)
class AttributeConfig(StageConfig):
    """One attribution run: the unlearning step (Eq. 6) and the scoring of τ (Eq. 2).

    How many rows to show is not part of it (it does not change the result): see `Attribution.top`.
    """

    unlearn: UnlearnConfig = dataclasses.field(default_factory=UnlearnConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)


BEST_CONFIG = LEGACY_BEST_CONFIG  # the single best-config file of older versions (still read); see attribution.best_config
DELTAS_DIR = "deltas"


@dataclasses.dataclass
class Attribution:
    """The result for one query: τ for every training item, its ranking and the artists' credit shares."""

    query_id: str
    scores: torch.Tensor  # [N] float64, data order
    table: pd.DataFrame  # one row per training item, sorted by rank
    credits: pd.DataFrame  # one row per artist, sorted by share
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    delta: dict[str, torch.Tensor] | None = None  # θ' − θ0 on the target parameters (None when read back from disk)

    def top(self, k: int = 20) -> pd.DataFrame:
        """The k most attributed training items."""
        return self.table.head(k)


def ranking_table(
    query_id: str, scores: torch.Tensor, data: LatentSet, titles: Mapping[str, str] | None = None, config_hash: str = ""
) -> pd.DataFrame:
    """One row per training item: query_id, train_id, artist, title, score, rank, config_hash; sorted by rank."""
    titles = titles or {}
    table = pd.DataFrame({
        "query_id": query_id,
        "train_id": data.ids,
        "artist": data.artists,
        "title": [titles.get(i, "") for i in data.ids],
        "score": scores.numpy(),
        "rank": ranks(scores).numpy(),
        "config_hash": config_hash,
    })
    return table.sort_values("rank", kind="stable").reset_index(drop=True)


def credits_table(query_id: str, scores: torch.Tensor, data: LatentSet) -> pd.DataFrame:
    """Per-artist credit shares (sum of positive τ per artist / total positive τ)."""
    rows = credit_shares(scores, data.artists)
    return pd.DataFrame([{"query_id": query_id, **r} for r in rows])


def attribute_queries(
    model: nn.Module | ModelTask,
    fisher: Fisher,
    latents: LatentSet,
    queries: Sequence[Query],
    config: AttributeConfig,
    base: torch.Tensor | None = None,
    titles: Mapping[str, str] | None = None,
    job: Job = SINGLE,
    shard_dir: Path | None = None,
) -> list[Attribution]:
    """Unlearn each query (Eq. 6) and score every training item for all of them in one data pass (Eq. 2).

    `base` (from `base_losses` with the same score config and mask) saves recomputing L(z_i, θ0).
    With `job` (torchrun) the queries and the training set are sharded over the ranks; `shard_dir`
    keeps the finished score shards (and, under torchrun, the deltas) on disk for a rerun. A single
    process keeps the deltas in memory only: nothing of δ reaches disk unless the caller saves it.
    """
    data = latents.subset(config.score.split)
    mask_loss = config.unlearn.mask_loss
    if base is None:
        base = base_losses(model, latents, config.score, mask_loss, job=job)
    delta_store = ShardStore(shard_dir / "deltas") if shard_dir and job.world > 1 else None
    deltas = unlearn_queries(model, fisher, queries, config.unlearn, job, delta_store)
    store = ShardStore(shard_dir / "scores") if shard_dir else None
    scores = score_many(model, deltas, latents, config.score, mask_loss, base=base, job=job, store=store)
    for q, d, s in zip(queries, deltas, scores, strict=True):
        if not bool(torch.isfinite(s).all()):
            raise SongtraceError(f"unlearning query {q.query_id!r} diverged (‖θ' − θ0‖ = {delta_norm(d):.3g}, non-finite losses under θ'); "
                                 f"lower the learning rate (lr {config.unlearn.lr:g}) or the steps ({config.unlearn.steps})")
    out = []
    for q, d, s in zip(queries, deltas, scores, strict=True):
        meta = {"kind": q.kind, "source": q.source, "delta_norm": delta_norm(d), **q.meta}
        table = ranking_table(q.query_id, s, data, titles, config.config_hash())
        out.append(Attribution(q.query_id, s, table, credits_table(q.query_id, s, data), meta, delta=d))
    return out


def unlearn_queries(
    model: nn.Module | ModelTask,
    fisher: Fisher,
    queries: Sequence[Query],
    config: UnlearnConfig,
    job: Job = SINGLE,
    store: ShardStore | None = None,
) -> list[dict[str, torch.Tensor]]:
    """δ of every query (`unlearn`); under torchrun the queries are spread over the ranks and every rank gets all deltas.

    A single process keeps the deltas in memory and ignores `store` (a δ is a full copy of the targeted
    weights, ~4.5 GB per query at 1 B weights; an interrupted run redoes the unlearning, its scoring
    shards resume). Under torchrun `store` exchanges the deltas and keeps finished ones for a rerun.
    """
    if job.world == 1:
        return [unlearn(model, fisher, q.batch, config) for q in progress(queries, total=len(queries), desc="unlearn", unit="query")]

    def one(rows: range) -> dict[str, torch.Tensor]:
        return {k: v[None] for k, v in unlearn(model, fisher, queries[rows.start].batch, config).items()}

    stacked = map_shards(len(queries), 1, one, job, store, row_dim=0, desc="unlearn", unit="query")
    return [{k: v[i] for k, v in stacked.items()} for i in range(len(queries))]


# --------------------------------------------------------------------------- from artifact directories


def item_titles(latents_dir: str | Path, home: str | Path | None = None) -> dict[str, str]:
    """Titles of the items: a `title` column of the cache's items.parquet, else the manifest of the world it was encoded from.

    The world is looked up as `<home>/worlds/*` whose content hash equals the one the latent cache
    records, so titles never come from another world. Missing titles are empty strings.
    """
    latents_dir = Path(latents_dir)
    items = read_parquet(latents_dir / "items.parquet")
    if "title" in items:
        return dict(zip(items["id"].astype(str), items["title"].astype(str), strict=True))
    try:
        world_hash = read_json(latents_dir / CONFIG_FILE).get("inputs", {}).get("world")
    except SongtraceError:
        return {}
    world_dir = find_world(home, world_hash or "")
    if world_dir is None or not (world_dir / "manifest.parquet").exists():
        return {}
    table = read_parquet(world_dir / "manifest.parquet")
    if "title" in table and "id" in table:
        return dict(zip(table["id"].astype(str), table["title"].astype(str), strict=True))
    return {}


@dataclasses.dataclass
class AttributionRun:
    """A finished run directory and its results."""

    out_dir: Path
    results: list[Attribution]
    record: dict[str, Any]


@dataclasses.dataclass
class RunInputs:
    """What an attribution-style run reads: the model, latents and Fisher (checked to belong together), the resolved queries,
    and the content hashes its config.json records."""

    model: ModelTask
    latents: LatentSet
    fisher: Fisher
    queries: list[Query]
    inputs: dict[str, str]


def load_run_inputs(
    queries: Sequence[str],
    group: str,
    model_dir: str | Path,
    latents_dir: str | Path,
    fisher_dir: str | Path,
    codec_dir: str | Path | None = None,
    caption: str | None = None,
    seconds: float | None = None,
    model: ModelTask | None = None,
) -> RunInputs:
    """Load and check the inputs of a run over `queries` (`attribute`, `localise`): refuses a Fisher fitted on another model,
    other data or without the target layers of `group`, and two queries with one id. `model` is the
    model already loaded from `model_dir`, if the caller has it."""
    if not queries:
        raise SongtraceError("no query given; pass --query (train:ID, a .latent.safetensors, an audio file or prompt:TEXT@SEED)")
    model = load_task(model_dir) if model is None else model
    latents = LatentSet.load(latents_dir)
    fisher = Fisher.load(fisher_dir)
    model_hash, latents_hash = model.identity(), latents.content_hash()
    check_inputs(fisher, model_hash, latents_hash, source=f"the Fisher at {fisher_dir}")
    target, _ = split_params(model, target_params(model, group))
    check_fits(fisher, target, source=f"the Fisher at {fisher_dir}")
    ctx = QueryContext(latents, Path(model_dir), Path(codec_dir) if codec_dir else None, caption=caption, seconds=seconds, model=model)
    resolved = [resolve_query(q, ctx) for q in queries]
    if len({q.query_id for q in resolved}) != len(resolved):
        raise SongtraceError(f"two queries resolve to the same id: {[q.query_id for q in resolved]}")
    inputs = {
        "model": model_hash,
        "latents": latents_hash,
        "fisher": artifact_hash(fisher_dir),
        "queries": hash_json([[q.query_id, _query_hash(q)] for q in resolved]),
    }
    return RunInputs(model, latents, fisher, resolved, inputs)


def save_generations(queries: Sequence[Query], out_dir: Path) -> None:
    """Write each prompt query's generated track (WAV, latent, JSON) to `<out_dir>/queries/<query_file_stem>.wav`."""
    for q in queries:
        if q.generated is not None:
            from songtrace.model.generate import save_generated

            save_generated(q.generated, out_dir / "queries" / f"{query_file_stem(q.query_id)}.wav")


def write_score_tables(out_dir: Path, results: Sequence[Attribution], train_ids: Sequence[str]) -> pd.DataFrame:
    """Write scores.parquet (each query's rows in training-data order) and credits.parquet; the scores table."""
    order = {item: i for i, item in enumerate(train_ids)}
    scores = pd.concat([r.table.sort_values("train_id", key=lambda c: c.map(order), kind="stable") for r in results], ignore_index=True)
    write_parquet(out_dir / SCORES_FILE, scores)
    write_parquet(out_dir / CREDITS_FILE, pd.concat([r.credits for r in results], ignore_index=True))
    return scores


def attribute(
    queries: Sequence[str],
    config: AttributeConfig,
    model_dir: str | Path,
    latents_dir: str | Path,
    fisher_dir: str | Path,
    out_dir: str | Path,
    home: str | Path | None = None,
    codec_dir: str | Path | None = None,
    caption: str | None = None,
    seconds: float | None = None,
    overwrite: bool = False,
    use_cache: bool = True,
    save_deltas: bool = True,
    model: ModelTask | None = None,
    job: Job = SINGLE,
) -> AttributionRun:
    """Attribute queries to the training set from artifact dirs; writes scores/credits Parquet and config.json into `out_dir`.

    Refuses a Fisher fitted on another model or other data. Base losses L(z_i, θ0) are cached under
    `<home>/cache/base_losses/`. With `save_deltas`, each query's unlearned delta θ' − θ0 goes to
    `deltas/` (listed in config.json; `load_run_delta`, `recompute_scores`). A rerun with the same
    config and inputs reads the finished results. `model` is the model already loaded from `model_dir`, if any.
    Under torchrun pass `job`: every rank scores its shards, rank 0 writes the run (see the module doc).
    """
    out_dir = Path(out_dir)
    run = load_run_inputs(queries, config.unlearn.group, model_dir, latents_dir, fisher_dir, codec_dir, caption, seconds, model=model)
    model, latents, fisher, resolved, inputs = run.model, run.latents, run.fisher, run.queries, run.inputs
    model_hash, latents_hash = inputs["model"], inputs["latents"]
    if job.main_first(lambda: begin_stage(out_dir, config, inputs, overwrite=overwrite)):
        return load_attribution(out_dir)
    if job.main:
        save_generations(resolved, out_dir)
    cache_dir = resolve_home(home) / "cache" / "base_losses" if use_cache else None
    base = base_losses(model, latents, config.score, config.unlearn.mask_loss, cache_dir=cache_dir, model_hash=model_hash, job=job)
    titles = item_titles(latents_dir, home)
    results = attribute_queries(model, fisher, latents, resolved, config, base=base, titles=titles, job=job, shard_dir=out_dir / SHARDS_DIR)
    if not job.main:
        job.barrier()  # rank 0 writes the run
        return load_attribution(out_dir)
    deltas = []
    if save_deltas:
        for q, r in zip(resolved, results, strict=True):
            assert r.delta is not None
            meta = delta_metadata(r.query_id, _query_hash(q), config.unlearn.to_dict(), config.config_hash(), model_hash, inputs["fisher"],
                                  latents_hash, fisher.n_items, r.delta)
            name = f"{DELTAS_DIR}/{query_file_stem(r.query_id)}.safetensors"
            deltas.append({"query_id": r.query_id, "file": name, "content_hash": save_delta(out_dir / name, r.delta, meta)})
    scores = write_score_tables(out_dir, results, latents.subset(config.score.split).ids)
    ShardStore(out_dir / SHARDS_DIR).clear()  # merged and written: the completion marker lists only the run's own files
    record = finish_stage(
        out_dir,
        config,
        inputs,
        content_hash=hash_json({"scores": hash_tensors({"s": scores["score"].to_numpy()}), "ids": scores["train_id"].tolist()}),
        extra={
            "queries": [{"query_id": r.query_id, **r.meta} for r in results],
            "n_items": len(latents.subset(config.score.split)),
            "n_fisher_items": fisher.n_items,
            "fisher_dir": str(fisher_dir),
            "model_dir": str(model_dir),
            "latents_dir": str(latents_dir),
            "seeds": {"unlearn": config.unlearn.seed, "score": config.score.seed, "fisher": fisher.config.seed},
            "mask_unlearn": config.unlearn.mask_unlearn,
            "mask_loss": config.unlearn.mask_loss,
            "deltas": deltas,
            "diagnostics": score_diagnostics(torch.stack([r.scores for r in results]).numpy(), latents.subset(config.score.split).ids),
            "ranks": job.world,
        },
    )
    job.barrier()
    return AttributionRun(out_dir, results, record)


def _query_hash(query: Query) -> str:
    """Content hash of a query's latent and caption tokens."""
    return hash_tensors({"latent": query.batch.latents, "text": query.batch.text})


def query_file_stem(query_id: str) -> str:
    """A file name for a query id (prompts hold spaces and punctuation)."""
    keep = "".join(c if c.isalnum() or c in "-_" else "_" for c in query_id)
    return f"{keep[:60]}-{hash_json(query_id)[:8]}"


def load_attribution(out_dir: str | Path) -> AttributionRun:
    """Read a finished attribution run back (scores, credits, config.json)."""
    out_dir = Path(out_dir)
    record = read_json(out_dir / CONFIG_FILE)
    if not record.get("complete"):
        raise SongtraceError(f"{out_dir}: the attribution run did not finish; run it again")
    scores = read_parquet(out_dir / SCORES_FILE)
    credits = read_parquet(out_dir / CREDITS_FILE)
    meta = {q["query_id"]: q for q in record.get("queries", [])}
    results = []
    for qid in dict.fromkeys(scores["query_id"]):
        in_data_order = scores[scores["query_id"] == qid]
        s = torch.tensor(in_data_order["score"].to_numpy())
        table = in_data_order.sort_values("rank", kind="stable").reset_index(drop=True)
        results.append(Attribution(qid, s, table, credits[credits["query_id"] == qid].reset_index(drop=True), meta.get(qid, {})))
    return AttributionRun(out_dir, results, record)


# --------------------------------------------------------------------------- auditing a run from its saved deltas


def load_run_delta(out_dir: str | Path, query_id: str) -> UnlearnedDelta:
    """The unlearned delta θ' − θ0 of one query of a finished run (as listed in its config.json)."""
    out_dir = Path(out_dir)
    record = load_attribution(out_dir).record
    listed = {d["query_id"]: d for d in record.get("deltas", [])}
    if query_id not in listed:
        have = ", ".join(listed) or "none (a run made without saving deltas)"
        raise SongtraceError(f"{out_dir}: no saved delta for query {query_id!r}; deltas saved: {have}")
    loaded = load_delta(out_dir / listed[query_id]["file"])
    if loaded.meta["delta_hash"] != listed[query_id]["content_hash"] or loaded.query_id != query_id:
        raise SongtraceError(f"{out_dir / listed[query_id]['file']}: not the delta config.json lists for {query_id!r}")
    return loaded


def recompute_scores(
    out_dir: str | Path,
    query_id: str,
    model: nn.Module | ModelTask | None = None,
    latents: LatentSet | None = None,
) -> torch.Tensor:
    """τ of one query recomputed from the run's saved delta: `[N]` float64 in data order (what scores.parquet holds).

    The model and latent cache default to the directories the run recorded; both are checked against the
    identities the delta names. Base losses are recomputed, not read from a cache.
    """
    out_dir = Path(out_dir)
    record = load_attribution(out_dir).record
    saved = load_run_delta(out_dir, query_id)
    task = load_task(record["model_dir"]) if model is None else model
    saved.check_model(task)
    data = LatentSet.load(record["latents_dir"]) if latents is None else latents
    if data.content_hash() != saved.meta["latents"]:
        raise SongtraceError(f"{out_dir}: the latent cache is not the one the run scored (content hashes differ)")
    config = AttributeConfig.from_dict(record["config"])
    return score_many(task, [saved.delta], data, config.score, config.unlearn.mask_loss)[0]
