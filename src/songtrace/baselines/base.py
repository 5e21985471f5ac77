"""One interface for every attribution method: a query -> one score per training item.

Unlearning (the counterfactual method) and the paper's non-counterfactual baselines (seed 002,
section 3.3: CLAP-like embedding similarity, CLEWS-like version similarity, LPIPS-like activation
similarity, representer points) and a TRAK-style gradient similarity all take the same inputs:

- a `QueryItem`: the query's latent (zero-padded to the model length, with its number of real
  frames, caption tokens and timing conditioning) and its audio (mono wave and sample rate);
- a `TrainingSet`: the training latents (`LatentSet`) and a way to read each item's audio.

and return `score(query, train) -> np.ndarray [N]`, larger = more attributed. Features that depend
only on the training set are computed once and kept in `train.cache` under the method's
`cache_key`, so scoring many queries is cheap. Methods are looked up by name in `METHODS`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from songtrace.data.audio import to_mono
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError, missing_package


@dataclasses.dataclass
class QueryItem:
    """A track to attribute: latent + conditioning (for model-based methods) and audio (for audio ones)."""

    id: str
    latent: torch.Tensor  # [C, L] zero-padded to the model length
    n_frames: int
    text: torch.Tensor  # [S, D] caption / prompt token embeddings
    text_mask: torch.Tensor  # [S] bool
    seconds_start: float = 0.0
    seconds_total: float = 0.0
    wav: np.ndarray | None = None  # mono float32
    sr: int | None = None
    caption: str = ""

    def batch(self) -> Batch:
        """The query as a one-item `Batch` for the model."""
        return Batch.single(self.id, self.latent, self.n_frames, self.text, self.text_mask, self.seconds_start, self.seconds_total)

    @classmethod
    def from_batch(cls, batch: Batch, wav: np.ndarray | None = None, sr: int | None = None, caption: str = "") -> QueryItem:
        """Item 0 of a `Batch` (e.g. a resolved attribution query's) with its audio."""
        return cls(id=batch.ids[0], latent=batch.latents[0], n_frames=int(batch.n_frames[0]), text=batch.text[0],
                   text_mask=batch.text_mask[0], seconds_start=float(batch.seconds_start[0]),
                   seconds_total=float(batch.seconds_total[0]), wav=wav, sr=sr, caption=caption)

    def audio(self) -> tuple[np.ndarray, int]:
        """(mono wave, sample rate), with a clear error when the query carries no audio."""
        if self.wav is None or self.sr is None:
            raise SongtraceError(f"query {self.id!r} has no audio; audio-based methods need its wave and sample rate")
        return to_mono(self.wav, f"query {self.id!r}"), int(self.sr)

    @classmethod
    def from_latents(cls, latents: LatentSet, item_id: str, wav: np.ndarray | None = None, sr: int | None = None,
                     query_id: str | None = None) -> QueryItem:
        """A query made of an item of a latent cache (a training or held-out track)."""
        batch = latents.batch([latents.index_of(item_id)])
        batch.ids = [query_id or item_id]
        return cls.from_batch(batch, wav=wav, sr=sr)


@dataclasses.dataclass
class TrainingSet:
    """The items attributed to: their latents and (optionally) their audio, plus per-method feature caches."""

    latents: LatentSet
    audio_fn: Callable[[str], np.ndarray] | None = None  # item id -> mono wave at `sample_rate`
    sample_rate: int | None = None
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def ids(self) -> list[str]:
        """Item ids, in score order."""
        return self.latents.ids

    def audio(self, item_id: str) -> tuple[np.ndarray, int]:
        """(mono wave, sample rate) of one item."""
        if self.audio_fn is None or self.sample_rate is None:
            raise SongtraceError("this training set carries no audio; audio-based methods need the world (--world)")
        return to_mono(self.audio_fn(item_id), f"training item {item_id!r}"), int(self.sample_rate)

    def cached(self, key: str, build: Callable[[], Any]) -> Any:
        """The value cached under `key`, built once on first use."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    @classmethod
    def from_world(cls, latents: LatentSet, world: Any) -> TrainingSet:
        """Latents plus the audio of a loaded world (`world.audio(id)`, `world.sample_rate`)."""
        return cls(latents=latents, audio_fn=world.audio, sample_rate=int(world.sample_rate))


@runtime_checkable
class AttributionMethod(Protocol):
    """query -> one score per training item (larger = more attributed).

    Methods may also offer `prepare(train)` (compute the training-set features now) and
    `score_many(queries, train) -> [Q, N]` (batched scoring); `prepare_method` / `score_many`
    below use them when present.
    """

    name: str

    def score(self, query: QueryItem, train: TrainingSet) -> np.ndarray: ...


def prepare_method(method: AttributionMethod, train: TrainingSet) -> None:
    """Compute a method's per-training-set features (a no-op for methods without any)."""
    own = getattr(method, "prepare", None)
    if callable(own):
        own(train)


def score_many(method: AttributionMethod, queries: Sequence[QueryItem], train: TrainingSet) -> np.ndarray:
    """Scores `[Q, N]` of several queries; uses the method's own batched `score_many` when it has one."""
    own = getattr(method, "score_many", None)
    if callable(own):
        out = np.asarray(own(queries, train), dtype=np.float64)
    else:
        out = np.stack([np.asarray(method.score(q, train), dtype=np.float64) for q in queries]) if queries else np.zeros((0, len(train)))
    check_scores(method.name, out, len(train))
    return out


def check_scores(name: str, scores: np.ndarray, n_items: int) -> None:
    """Raise when a method returned the wrong number of scores or non-finite ones."""
    if scores.shape[-1] != n_items:
        raise SongtraceError(f"method {name!r} returned {scores.shape[-1]} scores for {n_items} training items")
    if not np.all(np.isfinite(scores)):
        raise SongtraceError(f"method {name!r} returned non-finite scores (NaN or inf)")


def method_cache_key(method: Any) -> str:
    """A key naming a method's configuration, for its entry in `TrainingSet.cache`.

    Plain settings enter by value; objects (the model, an embedder, a Fisher) by identity, plus
    their `content_hash` when they have one.
    """
    parts = [type(method).__name__]
    for f in dataclasses.fields(method):
        v = getattr(method, f.name)
        if v is None or isinstance(v, str | int | float | bool | tuple | list | dict):
            parts.append(f"{f.name}={v!r}")
        else:
            parts.append(f"{f.name}=<{type(v).__name__}:{id(v)}:{getattr(v, 'content_hash', '')}>")
    return "|".join(parts)


# --------------------------------------------------------------------------- registry

METHODS: dict[str, type] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator adding an attribution method to `METHODS` under `name`."""

    def deco(cls: type) -> type:
        METHODS[name] = cls
        return cls

    return deco


# The modules of the built-in methods (imported on first lookup, so `base` imports fast).
METHOD_MODULES = ("embedding", "version", "activations", "representer", "gradient", "unlearning", "mucs", "fast")


def _load_all() -> None:
    """Import the modules that register the built-in methods; a missing dependency is an error naming it, never a missing method."""
    import importlib

    for mod in METHOD_MODULES:
        try:
            importlib.import_module(f"songtrace.baselines.{mod}")
        except ModuleNotFoundError as e:
            if e.name is None or e.name.startswith("songtrace"):
                raise  # a broken install or a bug, not an optional dependency
            raise missing_package(e.name, f"the attribution method module songtrace.baselines.{mod}") from None


def method_names() -> list[str]:
    """Names of every registered method."""
    _load_all()
    return sorted(METHODS)


def get_method(name: str, **options: Any) -> AttributionMethod:
    """Build the method registered as `name` with its options (e.g. `model=`, `embedder=`)."""
    _load_all()
    if name not in METHODS:
        raise SongtraceError(f"unknown attribution method {name!r}; valid: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    accepted = set(inspect.signature(cls).parameters)
    unknown = set(options) - accepted
    if unknown:
        raise SongtraceError(f"method {name!r} takes no option(s) {sorted(unknown)}; valid: {', '.join(sorted(accepted))}")
    return cls(**options)


def build_method(name: str, resources: Mapping[str, Any], **options: Any) -> AttributionMethod:
    """Build a method from shared `resources` (model, fisher, embedder, seed, ...) and its own `options`.

    Each method takes the resources its constructor names and ignores the others, so one dict of
    loaded artifacts builds any method; `options` override resources and must all be accepted.
    """
    _load_all()
    if name not in METHODS:
        raise SongtraceError(f"unknown attribution method {name!r}; valid: {', '.join(sorted(METHODS))}")
    accepted = set(inspect.signature(METHODS[name]).parameters)
    return get_method(name, **{**{k: v for k, v in resources.items() if k in accepted}, **options})
