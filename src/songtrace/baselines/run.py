"""Attributing queries with one baseline method from artifact directories (what `songtrace baseline` runs).

Queries are given as for `songtrace attribute` (train:ID, a generated `.latent.safetensors`, an audio
file, prompt:TEXT@SEED); audio-based methods get the query's audio from the world (training
items), the WAV saved beside a generated latent, the audio file itself, or else by decoding the
latent with the codec. Writes `scores.parquet` (query_id, method, train_id, artist, score, rank,
config_hash) and `config.json`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from songtrace.artifacts import StageConfig, artifact_hash, begin_stage, finish_stage, hash_json, hash_tensors, read_parquet, write_parquet
from songtrace.baselines.base import QueryItem, TrainingSet, build_method, method_names, score_many
from songtrace.data.audio import to_mono
from songtrace.data.latent_file import LATENT_SUFFIX
from songtrace.errors import SongtraceError

SCORES_FILE = "scores.parquet"


@dataclasses.dataclass(frozen=True)
class BaselineConfig(StageConfig):
    """One baseline run: the method, its options, the split scored, the embedder (for `embedding`) and the seed."""

    method: str = "version"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    split: str = "train"
    embedder: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        valid = method_names()
        if self.method not in valid:
            raise SongtraceError(f"unknown attribution method {self.method!r}; valid: {', '.join(valid)}")
        if self.method == "unlearning":
            raise SongtraceError("use `songtrace attribute` for unlearning; `songtrace baseline` runs the other methods")


def query_audio(spec: str, query: Any, world: Any, codec_dir: Path | None) -> tuple[np.ndarray | None, int | None]:
    """The audio of a resolved query: world audio, the WAV beside a latent, the audio file, or the decoded latent."""
    import soundfile as sf

    if query.kind == "train":
        return world.audio(query.source), int(world.sample_rate)
    generated = getattr(query, "generated", None)
    if generated is not None:  # a prompt query: the generated track's own audio
        return np.asarray(generated.wav, np.float32), int(generated.sample_rate)
    candidates = []
    if query.kind == "latent":
        candidates.append(Path(spec[: -len(LATENT_SUFFIX)] + ".wav") if spec.endswith(LATENT_SUFFIX) else None)
    if query.kind == "audio":
        candidates.append(Path(spec))
    for path in candidates:
        if path is not None and path.exists():
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            return to_mono(data, str(path)), int(sr)
    if codec_dir is None or not Path(codec_dir).exists():
        return None, None
    from songtrace.codec import decode_to_wav, load_codec

    codec = load_codec(codec_dir)
    n = int(query.batch.n_frames[0])
    return decode_to_wav(codec, query.batch.latents[0], n_frames=n), int(codec.sample_rate)


def query_item(spec: str, query: Any, world: Any, codec_dir: Path | None) -> QueryItem:
    """A resolved attribution `Query` as a `QueryItem` with its audio."""
    wav, sr = query_audio(spec, query, world, codec_dir)
    return QueryItem.from_batch(query.batch, wav=wav, sr=sr)  # the batch's id is the query's id


def run_baseline(queries: list[str], config: BaselineConfig, model_dir: Path, latents_dir: Path, world_dir: Path, out_dir: Path,
                 codec_dir: Path | None = None, home: Path | None = None, overwrite: bool = False) -> pd.DataFrame:
    """Score every query with the configured method; writes and returns the scores table (sorted by query, rank)."""
    from songtrace.attribution.query import QueryContext, resolve_query
    from songtrace.data.latents import LatentSet
    from songtrace.embedders.registry import embedder_input, resolve_embedder, resolve_embedder_name
    from songtrace.model.registry import load_task
    from songtrace.world import load_world

    if not queries:
        raise SongtraceError("no query given; pass --query (train:ID, a .latent.safetensors, an audio file or prompt:TEXT@SEED)")
    out_dir = Path(out_dir)
    model = load_task(model_dir)
    latents = LatentSet.load(latents_dir)
    world = load_world(world_dir)
    ctx = QueryContext(latents=latents, model_dir=Path(model_dir), codec_dir=codec_dir if codec_dir and Path(codec_dir).exists() else None)
    resolved = [(spec, resolve_query(spec, ctx)) for spec in queries]
    items = [query_item(spec, q, world, ctx.codec_dir) for spec, q in resolved]
    embedder_name = resolve_embedder_name(config.embedder, home)
    inputs = {"model": model.identity(), "latents": artifact_hash(latents_dir), "world": artifact_hash(world_dir),
              "queries": hash_json([[i.id, hash_tensors({"latent": i.latent})] for i in items])}
    if config.method == "embedding":
        inputs["embedder"] = embedder_input(embedder_name, home)
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        return read_parquet(out_dir / SCORES_FILE)
    train = TrainingSet.from_world(latents.subset(config.split), world)
    resources = {"model": model, "seed": config.seed}
    if config.method == "embedding":
        resources["embedder"] = resolve_embedder(embedder_name, home)
    method = build_method(config.method, resources, **config.options)
    scores = score_many(method, items, train)
    parts = []
    for item, s in zip(items, scores, strict=True):
        order = np.argsort(-s, kind="stable")
        rank = np.empty(len(s), dtype=np.int64)
        rank[order] = np.arange(1, len(s) + 1)
        parts.append(pd.DataFrame({"query_id": item.id, "method": config.method, "train_id": train.ids, "artist": train.latents.artists,
                                   "score": s, "rank": rank, "config_hash": config.config_hash()}))
    table = pd.concat(parts, ignore_index=True).sort_values(["query_id", "rank"], kind="stable").reset_index(drop=True)
    write_parquet(out_dir / SCORES_FILE, table)
    finish_stage(out_dir, config, inputs, content_hash=hash_json({"scores": hash_tensors({"s": scores})}),
                 extra={"queries": [i.id for i in items], "n_items": len(train), "embedder": inputs.get("embedder")})
    return table
