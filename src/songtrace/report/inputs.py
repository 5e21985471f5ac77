"""What the report reads: finished run directories, the world their training tracks come from, and each query's audio.

A run directory is any finished songtrace artifact (`config.json` with `complete: true`); which
section shows it is decided by `sections.SECTION_KINDS`. Training tracks are found in the world the
run's latent cache was encoded from, looked up by the content hash the cache records (never another
world), under `--home`'s `worlds/` or, failing that, beside the latent cache (`<home>/latents/NAME`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from songtrace.artifacts import CONFIG_FILE, read_json
from songtrace.attribution.run import query_file_stem
from songtrace.data.latent_file import LATENT_SUFFIX
from songtrace.errors import SongtraceError
from songtrace.home import resolve_home
from songtrace.world import World, find_world, load_world


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The `config.json` record of a finished run directory, with a one-line error for anything else."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SongtraceError(f"{run_dir}: not a directory; pass the output directory of a songtrace run")
    if not (run_dir / CONFIG_FILE).is_file():
        raise SongtraceError(f"{run_dir}: not a songtrace run (no {CONFIG_FILE})")
    record = read_json(run_dir / CONFIG_FILE)
    if not isinstance(record, dict) or not record.get("complete"):
        raise SongtraceError(f"{run_dir}: the run did not finish (config.json is not marked complete); run it again")
    return record


@dataclasses.dataclass
class TrainingSources:
    """The training tracks of a run: their title, artist, caption and audio file, from the world."""

    world: World

    def info(self, track_id: str) -> dict[str, Any]:
        """Title, artist, caption and duration of a track (manifest row)."""
        row = self.world.track(track_id)
        return {"train_id": track_id, "title": str(row.get("title", "")), "artist": str(row.get("artist", "")),
                "caption": str(row.get("caption", "")), "duration": float(row.get("duration", 0.0))}

    def audio_path(self, track_id: str) -> Path:
        """The track's audio file (an error naming it when missing)."""
        path = self.world.audio_path(track_id)
        if not path.is_file():
            raise SongtraceError(f"{path}: audio of training track {track_id} is missing")
        return path


def training_sources(run_dir: Path, record: Mapping[str, Any], home: str | Path | None) -> TrainingSources:
    """The world a run's training tracks come from (by the latent cache's recorded world hash)."""
    latents_dir = record.get("latents_dir")
    if not latents_dir:
        raise SongtraceError(f"{run_dir}: the run does not record its latent cache (latents_dir), so its training tracks cannot be found")
    latents_dir = Path(latents_dir)
    world_hash = read_json(latents_dir / CONFIG_FILE).get("inputs", {}).get("world", "") if (latents_dir / CONFIG_FILE).is_file() else ""
    if not world_hash:
        raise SongtraceError(f"{latents_dir}: the latent cache does not record the world it was encoded from")
    homes = list(dict.fromkeys([resolve_home(home), latents_dir.parent.parent]))
    for candidate in homes:
        found = find_world(candidate, world_hash)
        if found is not None:
            return TrainingSources(load_world(found))
    raise SongtraceError(f"{run_dir}: the world {latents_dir} was encoded from is not under "
                         f"{' or '.join(str(h / 'worlds') for h in homes)}; pass --home")


# query kind -> where its audio is: (run dir, query record, training sources) -> path
def _prompt_audio(run_dir: Path, query: Mapping[str, Any], sources: TrainingSources) -> Path:
    return run_dir / "queries" / f"{query_file_stem(str(query['query_id']))}.wav"


def _latent_audio(run_dir: Path, query: Mapping[str, Any], sources: TrainingSources) -> Path:
    source = Path(str(query.get("source", "")))
    stem = source.name[: -len(LATENT_SUFFIX)] if source.name.endswith(LATENT_SUFFIX) else source.stem
    return source.with_name(f"{stem}.wav")


def _audio_audio(run_dir: Path, query: Mapping[str, Any], sources: TrainingSources) -> Path:
    return Path(str(query.get("source", "")))


def _train_audio(run_dir: Path, query: Mapping[str, Any], sources: TrainingSources) -> Path:
    return sources.audio_path(str(query.get("train_id") or str(query["query_id"]).removeprefix("train:")))


QUERY_AUDIO = {"prompt": _prompt_audio, "latent": _latent_audio, "audio": _audio_audio, "train": _train_audio}


def generation_record(query: Mapping[str, Any]) -> dict[str, Any]:
    """The prompt and seed of a latent query that `songtrace generate` wrote (from its JSON beside the latent), else {}."""
    source = Path(str(query.get("source", "")))
    if query.get("kind") != "latent" or not source.name.endswith(LATENT_SUFFIX):
        return {}
    path = source.with_name(source.name[: -len(LATENT_SUFFIX)] + ".json")
    try:
        record = read_json(path) if path.is_file() else {}
    except SongtraceError:
        return {}
    return {k: record[k] for k in ("prompt", "seed") if isinstance(record, dict) and k in record}


def query_audio_path(run_dir: Path, query: Mapping[str, Any], sources: TrainingSources) -> Path:
    """The audio file of an attributed query: the run's saved generation, the WAV beside a latent, the audio file, or the training track."""
    kind = str(query.get("kind", ""))
    if kind not in QUERY_AUDIO:
        raise SongtraceError(f"{run_dir}: query {query.get('query_id')!r} is of kind {kind!r}; the report knows {', '.join(QUERY_AUDIO)}")
    path = QUERY_AUDIO[kind](run_dir, query, sources)
    if not path.is_file():
        raise SongtraceError(f"{path}: audio of query {query.get('query_id')!r} not found")
    return path
