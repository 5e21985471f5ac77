"""Building the demo world: plan, render each track (resuming per track), write the manifest and config.json."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from songtrace.artifacts import begin_stage, check_positive, finish_stage, read_json, sha256_file, write_json
from songtrace.errors import SongtraceError
from songtrace.progress import progress_bar
from songtrace.world.artists import artist_by_name
from songtrace.world.captions import join_names, make_caption
from songtrace.world.config import WorldConfig
from songtrace.world.corpus import parse_piece
from songtrace.world.plan import TrackPlan, plan_world
from songtrace.world.render import render_excerpt, soundfont_sha256
from songtrace.world.world import MANIFEST_FILE, manifest_frame, manifest_hash, track_path, write_manifest, write_wav

PARTIAL_DIR = ".tracks"  # per-track records of a build in progress, so an interrupted build resumes
GENERATOR_VERSION = "1"  # bump when planning or rendering changes, so old worlds are not silently reused


def world_inputs() -> dict[str, str]:
    """What a world depends on besides its config: the generator's version, the SoundFont's bytes, music21's version (its corpus)."""
    import music21

    return {"generator": GENERATOR_VERSION, "soundfont": soundfont_sha256(), "music21": str(music21.__version__)}


def render_track(plan: TrackPlan, config: WorldConfig) -> tuple[dict[str, Any], np.ndarray]:
    """Render one planned track; returns its manifest row (without sha256/path) and its audio."""
    artist = artist_by_name(plan.artist)
    notes = parse_piece(plan.piece)
    try:
        audio, key = render_excerpt(notes, artist, plan.bpm, plan.transpose, plan.duration, plan.start_frac, config.sample_rate)
    except SongtraceError as e:
        raise SongtraceError(f"track {plan.id} ({plan.piece.source}): {e}") from None
    instruments = artist.instruments()
    caption_rng = np.random.default_rng([config.seed, int(plan.id.lstrip("t") or 0), 1])
    row = {
        "id": plan.id,
        "artist": artist.name,
        "title": notes.title,
        "caption": make_caption(artist.name, artist.genre, instruments, plan.bpm, key, notes.meter, caption_rng),
        "duration": len(audio) / config.sample_rate,
        "source": plan.piece.source,
        "version_group": plan.version_group,
        "version_of": plan.version_of,
        "split": plan.split,
        "genre": artist.genre,
        "instruments": join_names(instruments),
        "bpm": float(plan.bpm),
        "key": key,
        "meter": notes.meter,
        "collection": plan.piece.collection,
        "transpose": int(plan.transpose),
    }
    return row, audio


def _finished_row(out_dir: Path, plan: TrackPlan) -> dict[str, Any] | None:
    """The row of a track a previous (interrupted) run already rendered, if its WAV is intact."""
    record_path = out_dir / PARTIAL_DIR / f"{plan.id}.json"
    wav = out_dir / track_path(plan.id)
    if not (record_path.exists() and wav.exists()):
        return None
    row = read_json(record_path)
    return row if row.get("sha256") == sha256_file(wav) else None


def _render_and_write(plan: TrackPlan, config: WorldConfig, out_dir: Path) -> dict[str, Any]:
    """Render a track, write its WAV and its partial record; returns the full manifest row."""
    row, audio = render_track(plan, config)
    row["path"] = track_path(plan.id)
    row["sha256"] = write_wav(out_dir / row["path"], audio, config.sample_rate)
    write_json(out_dir / PARTIAL_DIR / f"{plan.id}.json", row)
    return row


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A process pool; fork where available (music21 is already imported), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def build_world(config: WorldConfig, out_dir: str | Path, overwrite: bool = False, workers: int = 1) -> Path:
    """Build (or resume, or skip) the demo world in `out_dir`; returns `out_dir`.

    `workers` > 1 renders tracks in parallel processes; the result is identical for any value.
    """
    check_positive("workers", workers)
    out_dir = Path(out_dir)
    inputs = world_inputs()
    if begin_stage(out_dir, config, inputs, overwrite):
        return out_dir
    plans = plan_world(config)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for plan in plans:
        row = _finished_row(out_dir, plan)
        if row is None:
            todo.append(plan)
        else:
            rows[plan.id] = row
    bar = progress_bar(len(plans), desc="rendering world", unit="track", initial=len(rows))
    try:
        if workers > 1 and len(todo) > 1:
            with _pool(workers) as pool:
                futures = [pool.submit(_render_and_write, plan, config, out_dir) for plan in todo]
                for future in concurrent.futures.as_completed(futures):
                    row = future.result()
                    rows[row["id"]] = row
                    bar.update(1)
        else:
            for plan in todo:
                row = _render_and_write(plan, config, out_dir)
                rows[row["id"]] = row
                bar.update(1)
    finally:
        bar.close()
    manifest = manifest_frame([rows[p.id] for p in plans])
    write_manifest(out_dir / MANIFEST_FILE, manifest)
    summary = {
        "tracks": len(manifest),
        "artists": int(manifest["artist"].nunique()),
        "versions": int((manifest["version_of"] != "").sum()),
        "seconds": round(float(manifest["duration"].sum()), 3),
    }
    finish_stage(out_dir, config, inputs, content_hash=manifest_hash(manifest, config), extra={"summary": summary})
    shutil.rmtree(out_dir / PARTIAL_DIR, ignore_errors=True)
    return out_dir
