"""Importing a user's own folder of audio with a captions CSV as a world (same layout as the demo world).

The CSV has one row per track: `file` (relative to the folder), `caption`, `artist`, and optionally
`title`, `genre`, `instruments`, `bpm`, `key`, `meter` and `version_group` (rows sharing a group are
versions of one piece; the first row of a group is the original). Audio in any format libsndfile
reads, any sample rate, mono or stereo, is mixed to mono, resampled and cropped to `max_seconds`.

Problems are errors naming the file or CSV line: a row whose file does not exist, an audio file no
row names (unless `unlisted="skip"`), unreadable, truncated, empty or too short audio, an empty
folder, missing columns.

The folder is untrusted input and the import never reads outside it: a CSV row with an absolute
path, a `..` part or a NUL is refused, every path is resolved (symlinks followed) and must stay
inside the folder, and the CSV's size is checked before it is read whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from songtrace.artifacts import begin_stage, check_file_size, finish_stage, hash_json, sha256_file
from songtrace.data.audio import read_audio, resample, to_mono
from songtrace.errors import SongtraceError
from songtrace.progress import progress
from songtrace.world.config import ImportConfig
from songtrace.world.plan import assign_splits
from songtrace.world.world import MANIFEST_FILE, manifest_frame, manifest_hash, track_path, write_manifest, write_wav

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".w64", ".caf")
REQUIRED_COLUMNS = ("file", "caption", "artist")
OPTIONAL_COLUMNS = ("title", "genre", "instruments", "bpm", "key", "meter", "version_group")
MAX_LISTED_PROBLEMS = 20
MAX_CAPTIONS_BYTES = 256 * 2**20  # a captions CSV is read whole: a larger one is refused before it fills memory
MIN_SECONDS = 0.1  # shorter audio is less than a latent frame of the demo codec (10 frames/s)


def find_audio(audio_dir: Path) -> list[str]:
    """Audio files under a folder (recursively, by extension), as sorted relative POSIX paths."""
    if not audio_dir.is_dir():
        raise SongtraceError(f"{audio_dir}: audio folder not found")
    files = [p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".") and p.is_file()]
    outside = [p.relative_to(audio_dir).as_posix() for p in files if not inside(p, audio_dir)]
    if outside:
        raise SongtraceError(_problems(f"{audio_dir}: {len(outside)} audio file(s) are symlinks that leave the folder", outside))
    return sorted(p.relative_to(audio_dir).as_posix() for p in files)


def inside(path: Path, folder: Path) -> bool:
    """Whether `path`, symlinks resolved, lies inside `folder` (resolved)."""
    return path.resolve().is_relative_to(folder.resolve())


def path_problem(file: str, audio_dir: Path) -> str | None:
    """Why a CSV `file` entry may not be read (absolute, `..`, NUL, or a symlink leaving the folder), or None."""
    if "\0" in file:
        return "contains a NUL character"
    rel = Path(file)
    if rel.is_absolute() or file.startswith(("/", "\\")) or (file[:1].isalpha() and file[1:3] in (":/", ":\\")):
        return "is an absolute path; give paths relative to the folder"
    if ".." in rel.parts or ".." in Path(file.replace("\\", "/")).parts:
        return "has a '..' part; give paths inside the folder"
    if (audio_dir / rel).exists() and not inside(audio_dir / rel, audio_dir):
        return "is a symlink that leaves the folder"
    return None


def _problems(kind: str, items: list[str]) -> str:
    """A readable list of problems, truncated."""
    shown = items[:MAX_LISTED_PROBLEMS]
    more = f"\n  ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"{kind}:\n  " + "\n  ".join(shown) + more


def read_captions(csv_path: Path, audio_dir: Path) -> pd.DataFrame:
    """Read and check the captions CSV: required columns, non-empty fields, unique files that exist in the folder."""
    if not csv_path.is_file():
        raise SongtraceError(f"{csv_path}: captions CSV not found")
    check_file_size(csv_path, MAX_CAPTIONS_BYTES, "captions CSV")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as e:  # pandas raises several types for malformed CSV
        raise SongtraceError(f"{csv_path}: not a readable CSV file ({e})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SongtraceError(f"{csv_path}: missing column(s) {missing}; found {list(df.columns)}; required: {list(REQUIRED_COLUMNS)}")
    if len(df) == 0:
        raise SongtraceError(f"{csv_path}: no rows")
    for c in df.columns:
        df[c] = df[c].astype(str).str.strip()
    problems = []
    seen: dict[str, int] = {}
    for i, row in enumerate(df.itertuples(index=False)):
        line = i + 2  # header is line 1
        where = f"{csv_path.name} line {line}"
        for col in REQUIRED_COLUMNS:
            if not getattr(row, col):
                problems.append(f"{where}: empty {col!r}")
        if not row.file:
            continue
        if row.file in seen:
            problems.append(f"{where}: file {row.file!r} already listed on line {seen[row.file]}")
        seen.setdefault(row.file, line)
        bad_path = path_problem(row.file, audio_dir)
        if bad_path:
            problems.append(f"{where}: file {row.file!r} {bad_path}")
        elif not (audio_dir / row.file).is_file():
            problems.append(f"{where}: file {row.file!r} not found in {audio_dir}")
        if "bpm" in df.columns and row.bpm:
            try:
                float(row.bpm)
            except ValueError:
                problems.append(f"{where}: bpm {row.bpm!r} is not a number")
    if problems:
        raise SongtraceError(_problems(f"{csv_path}: {len(problems)} problem(s)", problems))
    return df


def load_audio(path: Path, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Read any-rate mono/stereo audio as float32 mono at `sample_rate`, cropped to `max_seconds`; plus facts about the original."""
    import soundfile as sf

    data, sr = read_audio(path, max_seconds=max_seconds)
    frames = sf.info(str(path)).frames
    if not np.isfinite(data).all():
        raise SongtraceError(f"{path}: audio contains NaN or infinite samples")
    if frames / sr < MIN_SECONDS:
        raise SongtraceError(f"{path}: {frames / sr:.4f} s of audio is shorter than {MIN_SECONDS} s (about one latent frame)")
    mono = resample(to_mono(data, str(path)), int(sr), sample_rate)
    n = min(len(mono), round(max_seconds * sample_rate))
    facts = {
        "original_sample_rate": int(sr),
        "original_channels": int(data.shape[1]),
        "original_duration": float(frames / sr),
        "cropped": bool(frames / sr > max_seconds + 1e-9),
    }
    return np.clip(mono[:n], -1.0, 1.0).astype(np.float32), facts


def _versions(df: pd.DataFrame, ids: list[str]) -> tuple[list[str], list[str]]:
    """(version_group, version_of) per row: a CSV `version_group` groups rows; the first row of a group is the original."""
    groups, version_of = list(ids), [""] * len(ids)
    if "version_group" not in df.columns:
        return groups, version_of
    first: dict[str, str] = {}
    for i, label in enumerate(df["version_group"].tolist()):
        if not label:
            continue
        if label in first:
            groups[i], version_of[i] = first[label], first[label]
        else:
            first[label] = ids[i]
    return groups, version_of


def _optional(df: pd.DataFrame, col: str, i: int, default: str = "") -> str:
    """An optional CSV field, or a default when the column is absent or empty."""
    return (df[col].iat[i] or default) if col in df.columns else default


def import_world(
    audio_dir: str | Path, captions_csv: str | Path, out_dir: str | Path, config: ImportConfig | None = None, overwrite: bool = False
) -> Path:
    """Import a folder of audio with captions and artists as a world in `out_dir`; returns `out_dir`."""
    config = config or ImportConfig()
    audio_dir, captions_csv, out_dir = Path(audio_dir), Path(captions_csv), Path(out_dir)
    files = find_audio(audio_dir)
    if not files:
        raise SongtraceError(f"{audio_dir}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)})")
    df = read_captions(captions_csv, audio_dir)
    listed = set(df["file"].map(lambda f: Path(f).as_posix()))
    unlisted = [f for f in files if f not in listed]
    if unlisted and config.unlisted == "error":
        hint = "add rows, or import with unlisted='skip' (--skip-unlisted)"
        raise SongtraceError(_problems(f"{audio_dir}: {len(unlisted)} audio file(s) have no row in {captions_csv.name} ({hint})", unlisted))
    sizes = [(f, (audio_dir / f).stat().st_size) for f in sorted(listed)]
    inputs = {"captions": sha256_file(captions_csv), "audio": hash_json(sizes)}
    if begin_stage(out_dir, config, inputs, overwrite):
        return out_dir
    ids = [f"t{i:04d}" for i in range(len(df))]
    groups, version_of = _versions(df, ids)
    originals = set(version_of)
    locked = [bool(v) or i in originals for i, v in zip(ids, version_of, strict=True)]
    splits = assign_splits(df["artist"].tolist(), locked, config.valid_fraction, np.random.default_rng(config.seed))
    rows = []
    for i in progress(range(len(df)), total=len(df), desc="importing audio", unit="track"):
        file = df["file"].iat[i]
        audio, facts = load_audio(audio_dir / file, config.sample_rate, config.max_seconds)
        bpm = _optional(df, "bpm", i)
        row = {
            "id": ids[i],
            "artist": df["artist"].iat[i],
            "title": _optional(df, "title", i, Path(file).stem),
            "caption": df["caption"].iat[i],
            "duration": len(audio) / config.sample_rate,
            "source": file,
            "version_group": groups[i],
            "version_of": version_of[i],
            "path": track_path(ids[i]),
            "split": splits[i],
            "genre": _optional(df, "genre", i),
            "instruments": _optional(df, "instruments", i),
            "bpm": float(bpm) if bpm else float("nan"),
            "key": _optional(df, "key", i),
            "meter": _optional(df, "meter", i),
            **facts,
        }
        row["sha256"] = write_wav(out_dir / row["path"], audio, config.sample_rate)
        rows.append(row)
    manifest = manifest_frame(rows)
    write_manifest(out_dir / MANIFEST_FILE, manifest)
    extra = {
        "summary": {"tracks": len(manifest), "artists": int(manifest["artist"].nunique()), "cropped": int(manifest["cropped"].sum())},
        "skipped_files": unlisted,
    }
    finish_stage(out_dir, config, inputs, content_hash=manifest_hash(manifest, config), extra=extra)
    return out_dir
