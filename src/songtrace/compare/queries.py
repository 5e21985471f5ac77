"""The queries of the method comparison: generated tracks from diverse prompts, and planted ground truth.

- `generated`: N tracks generated from diverse training captions (k-means on the captions'
  sentence embeddings, the caption nearest each centre), as seed 002 generates 16 tracks from
  distinct prompts (Test-to-Train). No ground truth; used for Figs. 1-2.
- `planted_version`: a new rendition of a training piece that the model never saw: the demo
  world's renderer plays the original's excerpt with another artist's ensemble, a tempo 13-22 %
  away and a key 3-5 semitones away. True source: the original (and its planted versions in the
  training set). For worlds that cannot render (imported folders), the world's own planted version
  pairs are used instead: the version (a training item, excluded from the ranking) is the query and
  its original the true source.
- `planted_artist`: a track generated from a caption naming a small artist (training catalogue of
  at most `small_artist_tracks`); true sources: that artist's training tracks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from songtrace.baselines.base import QueryItem
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError

VERSION_TEMPO_RATIOS = (0.82, 0.87, 1.15, 1.22)
VERSION_SHIFTS = (-5, -4, -3, 3, 4, 5)


@dataclasses.dataclass
class CompareQuery:
    """A query of the comparison, with its ground truth when it has one."""

    item: QueryItem
    kind: str  # generated | planted_version | planted_artist
    prompt: str = ""
    seed: int | None = None
    true_sources: list[str] = dataclasses.field(default_factory=list)
    exclude: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """One row of queries.parquet."""
        return {
            "query_id": self.item.id, "kind": self.kind, "prompt": self.prompt, "seed": -1 if self.seed is None else self.seed,
            "n_frames": int(self.item.n_frames), "seconds": float(self.item.seconds_total),
            "true_sources": ",".join(self.true_sources), "exclude": ",".join(self.exclude),
            **{k: str(v) for k, v in self.meta.items()},
        }


def diverse_captions(captions: Sequence[str], k: int, seed: int) -> list[int]:
    """Indices of k mutually distinct captions: k-means on sentence embeddings, the caption nearest each centre."""
    from sklearn.cluster import KMeans

    from songtrace.codec.text import encode_sentences

    unique = list(dict.fromkeys(captions))
    if k >= len(unique):
        return [captions.index(c) for c in unique]
    emb = encode_sentences(unique).numpy().astype(np.float64)
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(emb)
    picked = []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        d = np.linalg.norm(emb[members] - km.cluster_centers_[c], axis=1)
        picked.append(captions.index(unique[int(members[np.argmin(d)])]))
    return sorted(picked)


def fit_tokens(text: torch.Tensor, mask: torch.Tensor, like: LatentSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption tokens padded/cropped to the latent cache's token count."""
    from songtrace.attribution.query import fit_text

    return fit_text(text, mask, int(like.text.shape[1]), "query caption")


def generated_query(track: Any, query_id: str, latents: LatentSet) -> QueryItem:
    """A `GeneratedTrack` as a `QueryItem` (latent at the model length, prompt tokens, audio)."""
    text, mask = fit_tokens(track.text, track.text_mask, latents)
    return QueryItem(id=query_id, latent=track.latent.float(), n_frames=int(track.n_frames), text=text, text_mask=mask,
                     seconds_start=0.0, seconds_total=float(track.seconds), wav=np.asarray(track.wav, np.float32),
                     sr=int(track.sample_rate), caption=str(track.prompt))


def small_artists(manifest: pd.DataFrame, max_tracks: int) -> list[str]:
    """Artists with at most `max_tracks` training tracks (and at least one), by name."""
    train = manifest[manifest["split"] == "train"]
    sizes = train.groupby("artist").size()
    return sorted(str(a) for a, n in sizes.items() if 0 < n <= max_tracks)


def version_sources(manifest: pd.DataFrame, original_id: str) -> list[str]:
    """The original and every training track of its version group (the true sources of a version of it)."""
    train = manifest[manifest["split"] == "train"]
    group = train[(train["version_group"] == original_id) | (train["id"] == original_id)]
    return sorted(set(group["id"].astype(str)) | {original_id})


def plan_matches(plan: Any, row: Any) -> bool:
    """Whether a re-derived `TrackPlan` is the one the world's manifest row was rendered from (artist, piece, tempo, key)."""
    same = plan.artist == row["artist"] and plan.piece.source == row["source"] and abs(float(plan.bpm) - float(row["bpm"])) < 1e-6
    if "transpose" in row and row["transpose"] == row["transpose"]:  # present and not NaN
        same = same and int(plan.transpose) == int(row["transpose"])
    return bool(same)


def reproduces(world: Any, plan: Any) -> bool:
    """Whether rendering `plan` gives the world's audio of that track (to 16-bit precision)."""
    from songtrace.world.build import render_track

    try:
        _, audio = render_track(plan, world.config)
    except SongtraceError:
        return False
    stored = world.audio(plan.id)
    return audio.shape == stored.shape and bool(np.allclose(audio, stored, atol=2.0 / 32768))


def can_render(world: Any) -> bool:
    """Whether the world was built by the demo renderer (so new versions of its pieces can be rendered)."""
    from songtrace.world import WorldConfig

    return isinstance(getattr(world, "config", None), WorldConfig)


def render_version(world: Any, plans: dict[str, Any], original_id: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render an unseen version of a training track: same piece and excerpt, another artist, tempo and key.

    `plans` maps track id -> `TrackPlan` of the world (`plan_world(world.config)`).
    """
    from songtrace.world import artist_by_name
    from songtrace.world.build import render_track

    if original_id not in plans:
        raise SongtraceError(f"{world.dir}: track {original_id} is not in the world's plan (was the world built with this config?)")
    orig = plans[original_id]
    others = sorted(set(world.manifest["artist"].astype(str)) - {orig.artist})
    if not others:
        raise SongtraceError("rendering a version needs a second artist in the world")
    artist = artist_by_name(str(rng.choice(others)))
    bpm = float(round(orig.bpm * float(rng.choice(VERSION_TEMPO_RATIOS))))
    cfg = world.config
    duration = min(cfg.max_seconds, max(cfg.min_seconds, np.floor(orig.duration * orig.bpm / bpm * 1000) / 1000))
    plan = dataclasses.replace(orig, id=f"t9{original_id.lstrip('t')}", artist=artist.name, bpm=bpm,
                               transpose=orig.transpose + int(rng.choice(VERSION_SHIFTS)), duration=float(duration),
                               version_group=orig.id, version_of=orig.id, split="query")
    row, audio = render_track(plan, cfg)
    return np.asarray(audio, np.float32), row


def rendered_version_queries(world: Any, latents: LatentSet, codec_dir: Path, n: int, seed: int) -> list[CompareQuery]:
    """n queries that are new renditions of training originals (originals drawn with `seed`)."""
    from songtrace.codec import encode_audio, load_codec
    from songtrace.codec.text import encode_tokens
    from songtrace.world import plan_world

    if n <= 0:
        return []
    m = world.manifest
    train_ids = set(latents.ids)
    plans = {p.id: p for p in plan_world(world.config)}
    originals = m[(m["split"] == "train") & (m["version_of"] == "") & m["id"].isin(train_ids)]
    originals = originals[originals["duration"] >= 0.5 * float(m["duration"].max())]  # enough music to recognise
    # only tracks whose plan, re-derived from the world's config, is the one they were rendered from
    originals = originals[[r["id"] in plans and plan_matches(plans[r["id"]], r) for _, r in originals.iterrows()]]
    if originals.empty:
        return []
    rng = np.random.default_rng([seed, 7])
    chosen = []
    for oid in rng.permutation(originals["id"].to_numpy()):
        if len(chosen) == n:
            break
        if reproduces(world, plans[str(oid)]):
            chosen.append(str(oid))
    chosen.sort()
    codec = load_codec(codec_dir)
    length = int(latents.latent_shape[1])
    out = []
    for k, oid in enumerate(chosen):
        audio, row = render_version(world, plans, str(oid), rng)
        z = encode_audio(codec, audio, world.sample_rate)[:, :length]
        latent = torch.zeros(z.shape[0], length)
        latent[:, : z.shape[1]] = z
        text, mask = encode_tokens([row["caption"]])
        text, mask = fit_tokens(text[0], mask[0], latents)
        item = QueryItem(id=f"version{k:02d}", latent=latent, n_frames=int(z.shape[1]), text=text, text_mask=mask,
                         seconds_start=0.0, seconds_total=float(row["duration"]), wav=audio, sr=world.sample_rate,
                         caption=row["caption"])
        meta = {"original": oid, "version_artist": row["artist"], "bpm": row["bpm"], "key": row["key"], "source": "rendered"}
        out.append(CompareQuery(item, "planted_version", prompt=row["caption"], true_sources=version_sources(m, str(oid)), meta=meta))
    return out


def world_version_queries(world: Any, latents: LatentSet, n: int) -> list[CompareQuery]:
    """n queries from the world's own planted version pairs (the version item is excluded from its ranking)."""
    m = world.manifest
    ids = set(latents.ids)
    pairs = m[(m["version_of"] != "") & m["id"].isin(ids) & m["version_of"].isin(ids)].sort_values("id")
    out = []
    for k, row in enumerate(pairs.head(max(0, n)).itertuples()):
        item = QueryItem.from_latents(latents, str(row.id), wav=world.audio(str(row.id)), sr=world.sample_rate,
                                      query_id=f"version{k:02d}")
        item.caption = str(row.caption)
        meta = {"original": row.version_of, "version_item": row.id, "source": "world"}
        out.append(CompareQuery(item, "planted_version", prompt=str(row.caption),
                                true_sources=[s for s in version_sources(m, str(row.version_of)) if s != row.id],
                                exclude=[str(row.id)], meta=meta))
    return out
