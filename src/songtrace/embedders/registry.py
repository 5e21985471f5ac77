"""Finding an embedder by name or path: `load_embedder("dsp")`, `load_embedder("songclap")`, `load_embedder(dir)`.

Names: `dsp` (always works), `songclap` (`<home>/embedders/songclap`, made by `songtrace embedder
train`), and the real models, read from `<home>/embedders/<name>` unless `path=` is given: `clap`
(transformers folder), `laion-clap` (checkpoint), `openl3` (`.h5` weights). A path is recognised
by what it holds; so is any other name under `<home>/embedders/`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from songtrace.artifacts import artifact_hash, read_json
from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError


def _home_path(home: str | Path | None, name: str, kw: dict[str, Any]) -> Path:
    from songtrace.home import stage_dir

    path = kw.pop("path", None)
    return Path(path) if path is not None else stage_dir(home, "embedders", name)


def _dsp(home: str | Path | None, **kw: Any) -> Embedder:
    from songtrace.embedders.dsp import DspEmbedder

    return DspEmbedder(**kw)


def _songclap(home: str | Path | None, **kw: Any) -> Embedder:
    from songtrace.embedders.songclap import SongClapEmbedder

    return SongClapEmbedder.from_dir(_home_path(home, "songclap", kw), **kw)


def _clap(home: str | Path | None, **kw: Any) -> Embedder:
    from songtrace.embedders.clap import ClapEmbedder

    return ClapEmbedder(_home_path(home, "clap", kw), **kw)


def _laion_clap(home: str | Path | None, **kw: Any) -> Embedder:
    from songtrace.embedders.clap import LaionClapEmbedder

    return LaionClapEmbedder(_home_path(home, "laion-clap", kw), **kw)


def _openl3(home: str | Path | None, **kw: Any) -> Embedder:
    from songtrace.embedders.openl3 import OpenL3Embedder

    return OpenL3Embedder(_home_path(home, "openl3", kw), **kw)


EMBEDDERS: dict[str, Callable[..., Embedder]] = {
    "dsp": _dsp,
    "songclap": _songclap,
    "clap": _clap,
    "laion-clap": _laion_clap,
    "openl3": _openl3,
}


def detect_kind(path: Path) -> str | None:
    """Which registered embedder a file or folder holds, by its contents; None when unknown."""
    if path.is_file():
        return {".h5": "openl3", ".pt": "laion-clap", ".ckpt": "laion-clap"}.get(path.suffix.lower())
    if not path.is_dir():
        return None
    if (path / "config.json").exists():
        cfg = read_json(path / "config.json")
        if cfg.get("stage") == "SongClapConfig":
            return "songclap"
        if cfg.get("model_type") == "clap":
            return "clap"
    if any(path.glob("*.h5")):
        return "openl3"
    if any(path.glob("*.pt")) or any(path.glob("*.ckpt")):
        return "laion-clap"
    return None


def load_embedder(name_or_path: str | Path, home: str | Path | None = None, **kw: Any) -> Embedder:
    """An embedder by registered name, by path, or by a name under `<home>/embedders/`."""
    name = str(name_or_path)
    if name in EMBEDDERS:
        return EMBEDDERS[name](home, **kw)
    candidates = [Path(name)]
    if "/" not in name and name:
        from songtrace.home import stage_dir

        candidates.append(stage_dir(home, "embedders", name))
    for path in candidates:
        if path.exists():
            kind = detect_kind(path)
            if kind is None:
                raise SongtraceError(f"{path}: not a recognised embedder (expected a songclap artifact, a transformers "
                                     "CLAP folder, a LAION-CLAP .pt checkpoint or openl3 .h5 weights)")
            return EMBEDDERS[kind](home, path=path, **kw)
    raise SongtraceError(f"unknown embedder {name!r}; valid: {', '.join(EMBEDDERS)}, or a path to embedder weights")


def resolve_embedder_name(name: str, home: str | Path | None) -> str:
    """"auto" -> "songclap" when `<home>/embedders/songclap` holds a trained one, else "dsp"; other names unchanged."""
    if name != "auto":
        return name
    from songtrace.home import stage_dir

    return "songclap" if (stage_dir(home, "embedders", "songclap") / "config.json").exists() else "dsp"


def resolve_embedder(embedder: str | Path | Embedder, home: str | Path | None = None) -> Embedder:
    """The one way from what a user or config names to an `Embedder`: an instance as it is; "auto",
    a registered name, a path or a name under `<home>/embedders/` loaded (`resolve_embedder_name`, `load_embedder`)."""
    if not isinstance(embedder, str | Path):
        return embedder
    return load_embedder(resolve_embedder_name(str(embedder), home), home=home)


def embedder_input(name: str, home: str | Path | None) -> str:
    """What a result depends on for an embedder (after `resolve_embedder_name`): its name, plus the content hash
    of its artifact when it has one, so a stage can check its inputs before loading the embedder."""
    from songtrace.home import stage_dir

    for path in (Path(name), stage_dir(home, "embedders", name)):
        if "/" not in name and path == Path(name):
            continue
        if (path / "config.json").exists():
            try:
                return f"{name}:{artifact_hash(path)}"
            except SongtraceError:
                return name
    return name
