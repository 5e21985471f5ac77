"""The forget set of an opt-out and the retain set (the rest of the model's training data).

A rights holder names what to forget in one of three ways (`ForgetSpec`): an artist's whole
catalogue, a list of track ids, or every training item whose caption matches a regular
expression. `select_forget` turns that into the forget and retain sets of the *model's* training
data: the train split of its latent cache minus whatever earlier opt-outs already forgot. Every
way it can go wrong (an unknown artist, an empty set, the whole set, ids the model never trained
on) is a one-line `SongtraceError` raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from songtrace.artifacts import CONFIG_FILE, StageConfig, hash_json, read_json
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError

SELECTORS = ("artist", "ids", "caption_regex")


@dataclasses.dataclass(frozen=True)
class ForgetSpec(StageConfig):
    """What to forget: exactly one of an artist's name, a tuple of ids (`ids_source` names their file) or a caption regex."""

    artist: str | None = None
    ids: tuple[str, ...] | None = None
    caption_regex: str | None = None
    ids_source: str = ""

    def __post_init__(self) -> None:
        given = [name for name in SELECTORS if getattr(self, name) is not None]
        if len(given) != 1:
            raise SongtraceError(f"name the forget set in exactly one way (--artist, --ids or --caption-regex), got {len(given)}")
        if self.caption_regex is not None:
            try:
                re.compile(self.caption_regex)
            except re.error as e:
                raise SongtraceError(f"--caption-regex {self.caption_regex!r}: not a valid regular expression ({e})") from None
        if self.ids is not None and len(self.ids) == 0:
            raise SongtraceError(f"{self.ids_source or '--ids'}: lists no ids; the forget set is empty")

    @property
    def kind(self) -> str:
        """Which selector is used: artist, ids or caption_regex."""
        return next(name for name in SELECTORS if getattr(self, name) is not None)

    def describe(self) -> str:
        """A short human description (for messages and tables)."""
        if self.artist is not None:
            return f"artist {self.artist!r}"
        if self.ids is not None:
            return f"{len(self.ids)} ids" + (f" from {self.ids_source}" if self.ids_source else "")
        return f"captions matching {self.caption_regex!r}"


@dataclasses.dataclass(frozen=True)
class ForgetSet:
    """The forget and retain ids (data order) of the model's training data, and what chose them."""

    spec: ForgetSpec
    forget_ids: tuple[str, ...]
    retain_ids: tuple[str, ...]
    artists: dict[str, int]  # artist -> number of its tracks in the forget set

    @property
    def forget_hash(self) -> str:
        """Content hash of the forget set (its sorted ids)."""
        return forget_hash(self.forget_ids)

    def to_record(self) -> dict[str, object]:
        """What a checkpoint's config.json says about the forget set."""
        return {"spec": self.spec.describe(), "n_forget": len(self.forget_ids), "n_retain": len(self.retain_ids),
                "artists": dict(self.artists), "forget_hash": self.forget_hash}


def forget_hash(ids: Sequence[str]) -> str:
    """The content hash of a set of ids (order and repeats do not matter)."""
    return hash_json(sorted(set(ids)))


def read_ids_file(path: str | Path) -> tuple[str, ...]:
    """Ids from a text file, one per line (blank lines and `#` comments skipped), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SongtraceError(f"{path}: ids file not found")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise SongtraceError(f"{path}: not a text file of ids (one per line)") from None
    ids = [ln.split("#", 1)[0].strip() for ln in lines]
    ids = [i for i in ids if i]
    if not ids:
        raise SongtraceError(f"{path}: lists no ids; the forget set is empty")
    return tuple(dict.fromkeys(ids))


def _artist_listing(data: LatentSet) -> str:
    counts = Counter(data.artists)
    return ", ".join(f"{a} ({n})" for a, n in sorted(counts.items()))


def select_forget(
    latents: LatentSet,
    spec: ForgetSpec,
    captions: Mapping[str, str] | None = None,
    forgotten: Sequence[str] = (),
    source: str = "the latent cache",
) -> ForgetSet:
    """Forget and retain sets of the model's training data: the train split of `latents` minus `forgotten`.

    `captions` (id -> caption) is needed for a caption regex; `forgotten` lists what earlier
    opt-outs of this model already removed. Raises a one-line error for an unknown artist (listing
    the artists), an empty forget set, a forget set that is the whole training data, and ids the
    model did not train on.
    """
    train = latents.subset("train")
    gone = set(forgotten)
    training = [i for i in train.ids if i not in gone]
    artist_of = dict(zip(train.ids, train.artists, strict=True))
    kept_set = set(training)
    if spec.artist is not None:
        if spec.artist not in set(train.artists):
            raise SongtraceError(f"unknown artist {spec.artist!r} in the training data of {source}; artists: {_artist_listing(train)}")
        chosen = [i for i in training if artist_of[i] == spec.artist]
        if not chosen:
            raise SongtraceError(f"artist {spec.artist!r} was already forgotten by an earlier opt-out of this model; "
                                 "nothing is left to forget")
    elif spec.ids is not None:
        chosen = list(dict.fromkeys(spec.ids))
        _check_ids(chosen, latents, kept_set, gone, spec.ids_source or "--ids", source)
    else:
        if captions is None:
            raise SongtraceError(f"--caption-regex needs the captions of {source}; pass the world it was encoded from (--world)")
        pattern = re.compile(str(spec.caption_regex))
        missing = [i for i in training if i not in captions]
        if missing:
            raise SongtraceError(f"the captions given do not cover {len(missing)} training items of {source} (e.g. {missing[:3]})")
        chosen = [i for i in training if pattern.search(captions[i])]
        if not chosen:
            raise SongtraceError(f"--caption-regex {spec.caption_regex!r} matches no caption of the model's training data; "
                                 "the forget set is empty")
    chosen_set = set(chosen)
    forget = tuple(i for i in training if i in chosen_set)
    retain = tuple(i for i in training if i not in chosen_set)
    if not retain:
        raise SongtraceError(f"the forget set ({spec.describe()}) is the whole training data ({len(forget)} items): nothing would be "
                             "left to retain; train a new model instead")
    return ForgetSet(spec, forget, retain, dict(sorted(Counter(artist_of[i] for i in forget).items())))


def _check_ids(ids: Sequence[str], latents: LatentSet, training: set[str], gone: set[str], name: str, source: str) -> None:
    """Refuse ids the model did not train on: unknown ones, held-out (valid) ones, and ones already forgotten."""
    outside = [i for i in ids if i not in training]
    if not outside:
        return
    split_of = dict(zip(latents.ids, latents.splits, strict=True))
    unknown = [i for i in outside if i not in split_of]
    held_out = [i for i in outside if i in split_of and split_of[i] != "train"]
    already = [i for i in outside if i in gone]
    parts = []
    if unknown:
        parts.append(f"{len(unknown)} not in {source} (e.g. {unknown[:3]})")
    if held_out:
        parts.append(f"{len(held_out)} held out, not trained on (e.g. {held_out[:3]})")
    if already:
        parts.append(f"{len(already)} already forgotten by an earlier opt-out (e.g. {already[:3]})")
    raise SongtraceError(f"{name}: {len(outside)} of {len(ids)} ids are not in the model's training data: {'; '.join(parts)}")


def world_captions(latents_dir: str | Path, home: str | Path | None = None, world_dir: str | Path | None = None) -> dict[str, str] | None:
    """id -> caption of the world a latent cache was encoded from (`world_dir`, else the one under `<home>/worlds`
    whose hash the cache records); None when it cannot be found."""
    from songtrace.world import find_world, load_world

    if world_dir is None:
        try:
            world_hash = read_json(Path(latents_dir) / CONFIG_FILE).get("inputs", {}).get("world", "")
        except SongtraceError:
            return None
        world_dir = find_world(home, world_hash)
        if world_dir is None:
            return None
    manifest = load_world(world_dir).manifest
    return dict(zip(manifest["id"].astype(str), manifest["caption"].astype(str), strict=True))
