"""A world on disk: `audio/<id>.wav`, `manifest.parquet` and `config.json`, and the `World` reader.

Both the demo world (`build_world`) and an imported folder (`import_world`) have this layout, so
every later stage reads them the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from songtrace.artifacts import (
    CONFIG_FILE,
    StageConfig,
    atomic_path,
    check_intact,
    hash_json,
    read_json,
    read_parquet,
    sha256_file,
    write_parquet,
)
from songtrace.errors import SongtraceError
from songtrace.world.config import ImportConfig, WorldConfig

MANIFEST_FILE = "manifest.parquet"
AUDIO_DIR = "audio"
SPLITS = ("train", "valid")

# The manifest's columns and their Arrow types (every world has at least these).
MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("artist", pa.string()),
        ("title", pa.string()),
        ("caption", pa.string()),
        ("duration", pa.float64()),
        ("source", pa.string()),
        ("version_group", pa.string()),
        ("version_of", pa.string()),
        ("sha256", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("genre", pa.string()),
        ("instruments", pa.string()),
        ("bpm", pa.float64()),
        ("key", pa.string()),
        ("meter", pa.string()),
    ]
)
MANIFEST_COLUMNS = tuple(MANIFEST_SCHEMA.names)

# Stage names recorded in config.json -> the config class of a world made that way.
WORLD_STAGES: dict[str, type[StageConfig]] = {"WorldConfig": WorldConfig, "ImportConfig": ImportConfig}

# Columns that define the world's content (besides the config); their hash is the world's `content_hash`.
HASHED_COLUMNS = ("id", "sha256", "artist", "caption", "split", "version_group")


def track_path(track_id: str) -> str:
    """The manifest's relative `path` of a track's WAV."""
    return f"{AUDIO_DIR}/{track_id}.wav"


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> str:
    """Write mono float audio as 16-bit PCM WAV atomically; returns the file's sha256."""
    import soundfile as sf

    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV")
    return sha256_file(path)


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """A manifest DataFrame with the standard columns first (in order), rows sorted by id."""
    df = pd.DataFrame(rows)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise SongtraceError(f"manifest rows lack columns {missing}")
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return df[list(MANIFEST_COLUMNS) + extra].sort_values("id", kind="stable").reset_index(drop=True)


def write_manifest(path: Path, manifest: pd.DataFrame) -> None:
    """Write the manifest as Parquet atomically, with the standard column types."""
    fields = [MANIFEST_SCHEMA.field(c) if c in MANIFEST_COLUMNS else None for c in manifest.columns]
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    schema = pa.schema([f if f is not None else table.schema.field(c) for f, c in zip(fields, manifest.columns, strict=True)])
    write_parquet(path, table.cast(schema))


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest, checking its columns, with an error naming the file."""
    if not path.exists():
        raise SongtraceError(f"{path}: not found; is this a world directory?")
    df = read_parquet(path)
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise SongtraceError(f"{path}: manifest lacks columns {missing}")
    return df


def manifest_hash(manifest: pd.DataFrame, config: StageConfig) -> str:
    """The world's content hash: its config plus each track's id, audio sha256, artist, caption, split and version group."""
    cols = {c: manifest[c].astype(str).tolist() for c in HASHED_COLUMNS}
    return hash_json({"config": config.to_dict(), "stage": type(config).__name__, "tracks": cols})


@dataclasses.dataclass
class World:
    """A finished world: its directory, config, manifest and audio."""

    dir: Path
    config: StageConfig
    manifest: pd.DataFrame
    content_hash: str

    @property
    def sample_rate(self) -> int:
        """Sample rate of every WAV of the world."""
        return int(self.config.sample_rate)

    @property
    def ids(self) -> list[str]:
        """Track ids, in manifest order."""
        return self.manifest["id"].tolist()

    def __len__(self) -> int:
        return len(self.manifest)

    def track(self, track_id: str) -> pd.Series:
        """The manifest row of a track, with an error for an unknown id."""
        rows = self.manifest.index[self.manifest["id"] == track_id]
        if len(rows) == 0:
            raise SongtraceError(f"{self.dir}: no track with id {track_id!r}")
        return self.manifest.loc[rows[0]]

    def split(self, name: str) -> pd.DataFrame:
        """The manifest rows of one split ("train" or "valid")."""
        if name not in SPLITS:
            raise SongtraceError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return self.manifest[self.manifest["split"] == name].reset_index(drop=True)

    def audio_path(self, track_id: str) -> Path:
        """Absolute path of a track's WAV."""
        return self.dir / str(self.track(track_id)["path"])

    def audio(self, track_id: str) -> np.ndarray:
        """A track's audio as float32 mono at the world's sample rate, with errors naming a missing or corrupt file."""
        import soundfile as sf

        path = self.audio_path(track_id)
        if not path.exists():
            raise SongtraceError(f"{path}: audio of track {track_id} is missing")
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as e:  # libsndfile errors come as several types
            raise SongtraceError(f"{path}: audio of track {track_id} is not readable ({e})") from None
        if sr != self.sample_rate:
            raise SongtraceError(f"{path}: sample rate {sr} Hz, but the world's is {self.sample_rate} Hz")
        if data.shape[1] != 1:
            raise SongtraceError(f"{path}: {data.shape[1]} channels, expected mono")
        return data[:, 0]

    def summary(self) -> dict:
        """Artists with catalogue sizes, duration statistics, planted versions and split sizes."""
        m = self.manifest
        d = m["duration"].astype(float)
        max_seconds = float(self.config.max_seconds)
        artists = m.groupby("artist", sort=True).agg(tracks=("id", "size"), valid=("split", lambda s: int((s == "valid").sum())))
        genre = m.groupby("artist", sort=True)["genre"].first()
        return {
            "dir": str(self.dir),
            "kind": type(self.config).__name__,
            "content_hash": self.content_hash,
            "sample_rate": self.sample_rate,
            "tracks": len(m),
            "splits": {s: int((m["split"] == s).sum()) for s in SPLITS},
            "artists": [
                {"artist": a, "tracks": int(r.tracks), "valid": int(r.valid), "genre": str(genre[a])} for a, r in artists.iterrows()
            ],
            "duration": {
                "total": round(float(d.sum()), 3),
                "min": round(float(d.min()), 3),
                "median": round(float(d.median()), 3),
                "max": round(float(d.max()), 3),
                "max_seconds": max_seconds,
                "short_fraction": round(float((d < max_seconds / 3).mean()), 4),
            },
            "versions": int((m["version_of"] != "").sum()),
        }

    def verify(self) -> None:
        """Check that every WAV exists and has the sha256 the manifest records."""
        for row in self.manifest.itertuples():
            path = self.dir / row.path
            if not path.exists():
                raise SongtraceError(f"{path}: audio of track {row.id} is missing")
            if sha256_file(path) != row.sha256:
                raise SongtraceError(f"{path}: content differs from the manifest's sha256 (file changed or corrupt)")


def load_world(path: str | Path) -> World:
    """Open a finished world directory (built or imported)."""
    path = Path(path)
    if not path.is_dir():
        raise SongtraceError(f"{path}: world directory not found")
    record = read_json(path / CONFIG_FILE)
    stage = record.get("stage")
    if stage not in WORLD_STAGES:
        raise SongtraceError(f"{path}: holds a {stage!r} artifact, not a world ({', '.join(WORLD_STAGES)})")
    if not record.get("complete"):
        raise SongtraceError(f"{path}: the world was not finished; run the build or import again to resume")
    check_intact(path, remedy="rebuild or re-import it with --overwrite")
    config = WORLD_STAGES[stage].from_dict(record["config"])
    manifest = read_manifest(path / MANIFEST_FILE)
    return World(dir=path, config=config, manifest=manifest, content_hash=str(record.get("content_hash", "")))


def find_world(home: str | Path | None, content_hash: str) -> Path | None:
    """The world directory under `<home>/worlds/` whose content hash is `content_hash` (what a latent cache records), or None."""
    from songtrace.home import resolve_home

    worlds = resolve_home(home) / "worlds"
    if not content_hash or not worlds.is_dir():
        return None
    for world_dir in sorted(worlds.iterdir()):
        cfg = world_dir / CONFIG_FILE
        if not cfg.exists():
            continue
        try:
            if read_json(cfg).get("content_hash") == content_hash:
                return world_dir
        except SongtraceError:
            continue
    return None
