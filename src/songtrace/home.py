"""Where worlds, checkpoints and caches live: `--home`, else `$SONGTRACE_HOME`, else `./songtrace-data`."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "songtrace-data"


def resolve_home(home: str | Path | None = None) -> Path:
    """Return the data directory (created if missing)."""
    if home is None:
        home = os.environ.get("SONGTRACE_HOME") or DEFAULT_HOME
    path = Path(home).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_dir(home: str | Path | None, stage: str, name: str) -> Path:
    """The artifact directory of one stage, e.g. `<home>/models/demo`."""
    return resolve_home(home) / stage / name


def resolve_artifact(home: str | Path | None, stage: str, name_or_path: str | Path) -> Path:
    """An artifact directory: an existing directory holding a config.json given as a path, else a name under `<home>/<stage>/`."""
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.json").exists():
        return p
    return stage_dir(home, stage, str(name_or_path))
