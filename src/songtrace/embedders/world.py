"""Embedding a whole world once: pooled track vectors (Parquet) and every window's vector (safetensors).

`<home>/embeddings/<world>-<embedder>/` holds `embeddings.parquet` (id, artist, split, n_windows,
embedding), `windows.safetensors` (`windows [sum W, D]`, `offsets [N + 1]`) and `config.json` with
the world's and the embedder's content hashes and the time it took.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from songtrace.artifacts import (
    StageConfig,
    begin_stage,
    check_positive,
    finish_stage,
    hash_tensors,
    load_safetensors,
    read_json,
    read_parquet,
    write_parquet,
)
from songtrace.data.windows import WINDOW_RULE, l2_normalise
from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError
from songtrace.progress import progress

EMBEDDINGS_FILE = "embeddings.parquet"
WINDOWS_FILE = "windows.safetensors"


@dataclasses.dataclass(frozen=True)
class EmbedWorldConfig(StageConfig):
    """Which embedder, with which windows, embedded the world."""

    embedder: str = "songclap"
    window_seconds: float = 4.0
    hop_seconds: float = 1.0

    def __post_init__(self) -> None:
        check_positive("window_seconds", self.window_seconds)
        check_positive("hop_seconds", self.hop_seconds)


def embed_world(world_dir: str | Path, embedder: Embedder, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Embed every track of a world (timed); skips when the same world and embedder are already done."""
    import pandas as pd
    import torch

    from songtrace.artifacts import save_safetensors
    from songtrace.world import load_world

    world = load_world(world_dir)
    out_dir = Path(out_dir)
    config = EmbedWorldConfig(embedder.name, embedder.window_seconds, embedder.hop_seconds)
    inputs = {"world": world.content_hash, "embedder": embedder.content_hash, "window_rule": WINDOW_RULE}
    if begin_stage(out_dir, config, inputs, overwrite):
        return read_json(out_dir / "config.json")["summary"]
    start = time.perf_counter()
    windows, pooled = [], []
    m = world.manifest
    for track_id in progress(m["id"], total=len(m), desc=f"embed ({embedder.name})", unit="track"):
        w = embedder.embed_windows(world.audio(track_id), world.sample_rate)
        windows.append(w)
        pooled.append(l2_normalise(w.mean(axis=0)))
    seconds = time.perf_counter() - start
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in windows])]).astype(np.int64)
    tensors = {"windows": torch.from_numpy(np.concatenate(windows)), "offsets": torch.from_numpy(offsets)}
    save_safetensors(out_dir / WINDOWS_FILE, tensors)
    table = pd.DataFrame({
        "id": m["id"].astype(str), "artist": m["artist"].astype(str), "split": m["split"].astype(str),
        "n_windows": [len(w) for w in windows], "embedding": [p.astype(np.float32).tolist() for p in pooled],
    })
    write_parquet(out_dir / EMBEDDINGS_FILE, table)
    audio_seconds = float(m["duration"].sum())
    summary = {
        "tracks": len(m), "windows": int(offsets[-1]), "dim": int(embedder.dim), "seconds": round(seconds, 2),
        "audio_seconds": round(audio_seconds, 1), "realtime_factor": round(audio_seconds / max(seconds, 1e-9), 1),
        "embedder": embedder.describe(), "path": str(out_dir),
    }
    finish_stage(out_dir, config, inputs, content_hash=hash_tensors(tensors), extra={"summary": summary})
    return summary


def load_world_embeddings(path: str | Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """(table of id/artist/split/n_windows/embedding, windows `[sum W, D]`, offsets `[N + 1]`) of `embed_world`."""
    path = Path(path)
    if not (path / EMBEDDINGS_FILE).exists():
        raise SongtraceError(f"{path}: no {EMBEDDINGS_FILE}; run `songtrace embedder embed` first")
    table = read_parquet(path / EMBEDDINGS_FILE)
    tensors = load_safetensors(path / WINDOWS_FILE)
    return table, tensors["windows"].numpy(), tensors["offsets"].numpy()
