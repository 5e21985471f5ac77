"""The prompts an opt-out is judged on: forget prompts of three kinds, and retain prompts.

- `caption`: the captions of the forgotten tracks themselves;
- `naming`: new prompts that name the artist ("a new piece by X", "music in the style of X");
- `style`:  prompts that do *not* name the artist: style descriptions (genre, instruments, tempo, key,
  meter from the manifest) and the forget captions paraphrased with the artist's name removed,
  alternately; a model that forgot only the name still answers these;
- `retain`: captions of other artists' training tracks (what must keep working).

All choices are deterministic (data order, then a seeded shuffle), so every model is prompted alike.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from songtrace.errors import SongtraceError
from songtrace.world.captions import tempo_words

KINDS = ("caption", "naming", "style", "retain")
FORGET_KINDS = ("caption", "naming", "style")

NAMING_TEMPLATES = (
    "A new piece by {artist}.",
    "{artist} performs a tune.",
    "Music in the style of {artist}.",
    "A recording by {artist}, previously unreleased.",
)


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt: its kind, its text and the track it came from (empty for made-up prompts)."""

    kind: str
    text: str
    source_id: str = ""


def strip_artist(caption: str, artist: str) -> str:
    """A caption with the artist's name (and the "by"/"By" that introduces it) removed: a paraphrase that does not name it."""
    name = re.escape(artist)
    text = re.sub(rf"\s*[,;:]?\s*\b[Bb]y {name}\b\.?", "", caption)
    text = re.sub(rf"\b{name}\b\s+(performs|plays)\s+", "", text)
    text = re.sub(rf"\b{name}\b", "an ensemble", text)
    text = re.sub(r"\s+([.,;:])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    return text[:1].upper() + text[1:] if text else text


def style_description(row: pd.Series) -> str | None:
    """A style description from a manifest row (genre, instruments, tempo, key, meter) without the artist; None if absent."""
    genre = str(row.get("genre", "") or "").strip()
    instruments = str(row.get("instruments", "") or "").strip()
    if not genre or not instruments:
        return None
    bpm = float(row.get("bpm", 0) or 0)
    parts = [f"{genre[:1].upper() + genre[1:]} played on {instruments}"]
    if bpm > 0:
        marking, adj = tempo_words(bpm)
        parts.append(f"{adj}, {marking} at {bpm:.0f} BPM")
    for field in ("key", "meter"):
        value = str(row.get(field, "") or "").strip()
        if value:
            parts.append(value if field == "key" else f"{value} time")
    return ", ".join(parts) + "."


def _pick(items: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    items = list(items)
    if len(items) <= n:
        return items
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def make_prompts(manifest: pd.DataFrame, forget_ids: Sequence[str], retain_ids: Sequence[str], per_kind: int,
                 seed: int = 0) -> list[Prompt]:
    """`per_kind` prompts of each kind for a forget set; retain prompts spread over the other artists."""
    if per_kind < 1:
        raise SongtraceError(f"prompts per kind must be >= 1, got {per_kind}")
    rows = manifest.set_index(manifest["id"].astype(str))
    missing = [i for i in list(forget_ids) + list(retain_ids) if i not in rows.index]
    if missing:
        raise SongtraceError(f"the world's manifest lacks {len(missing)} items of the model's data (e.g. {missing[:3]}); "
                             "pass the world the latents were encoded from (--world)")
    rng = np.random.default_rng(seed)
    forget = rows.loc[list(forget_ids)]
    artists = list(dict.fromkeys(forget["artist"].astype(str)))
    out: list[Prompt] = []
    for i in _pick(list(forget_ids), per_kind, rng):
        out.append(Prompt("caption", str(rows.loc[i, "caption"]), i))
    for k in range(per_kind):
        artist = artists[k % len(artists)]
        out.append(Prompt("naming", NAMING_TEMPLATES[(k // len(artists)) % len(NAMING_TEMPLATES)].format(artist=artist)))
    styles: list[tuple[str, str]] = []
    for k, i in enumerate(forget_ids):  # style descriptions and name-free paraphrases, alternately
        row = rows.loc[i]
        paraphrase = strip_artist(str(row["caption"]), str(row["artist"]))
        text = (style_description(row) or paraphrase) if k % 2 == 0 else paraphrase
        if text and text not in [s for s, _ in styles]:
            styles.append((text, i))
    chosen = _pick([s for s, _ in styles], per_kind, rng)
    out += [Prompt("style", s, dict(styles)[s]) for s in chosen]
    retain = rows.loc[list(retain_ids)]
    by_artist = {a: list(g.index) for a, g in retain.groupby(retain["artist"].astype(str), sort=True)}
    picked: list[str] = []
    while len(picked) < per_kind and any(by_artist.values()):
        for a in sorted(by_artist):
            if by_artist[a] and len(picked) < per_kind:
                picked.append(by_artist[a].pop(int(rng.integers(len(by_artist[a])))))
    out += [Prompt("retain", str(rows.loc[i, "caption"]), i) for i in picked]
    return out
