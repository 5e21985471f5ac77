"""Text-audio alignment: mean CLAP-style cosine between each prompt and the audio generated from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError


@dataclasses.dataclass(frozen=True)
class AlignmentResult:
    """Mean (and spread) of prompt-audio cosines, per item, and a mismatched-pair reference."""

    mean: float
    std: float
    mismatched_mean: float | None  # prompt i vs audio j != i: what "unaligned" looks like under this embedder
    per_item: list[float]
    n: int
    embedder: str
    embedder_hash: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def text_audio_alignment(embedder: Embedder, prompts: Sequence[str], waves: Sequence[np.ndarray], sr: int) -> AlignmentResult:
    """Cosine between each prompt's text embedding and its audio's pooled embedding (CLAP score)."""
    if len(prompts) != len(waves):
        raise SongtraceError(f"text-audio alignment: {len(prompts)} prompts but {len(waves)} audio tracks")
    if not prompts:
        raise SongtraceError("text-audio alignment: no prompts")
    text = embedder.embed_text(prompts)
    audio = embedder.embed_audio(waves, sr)
    sim = np.asarray(text, np.float64) @ np.asarray(audio, np.float64).T
    matched = np.diag(sim)
    off = sim[~np.eye(len(prompts), dtype=bool)]
    return AlignmentResult(
        mean=float(matched.mean()),
        std=float(matched.std()),
        mismatched_mean=float(off.mean()) if off.size else None,
        per_item=[float(x) for x in matched],
        n=len(prompts),
        embedder=embedder.name,
        embedder_hash=embedder.content_hash,
    )
