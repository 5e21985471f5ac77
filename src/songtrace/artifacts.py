"""Artifacts: stage configs that round-trip through JSON, content hashes, and atomic writes.

Every stage writes one directory holding its data and a `config.json` with the config that made
it, the content hashes of its inputs, the seeds and the package version. A stage that finds its
output present with the same config skips; a different config is refused unless overwriting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from songtrace import __version__
from songtrace.errors import SongtraceError

C = TypeVar("C", bound="StageConfig")

CONFIG_FILE = "config.json"


# --------------------------------------------------------------------------- configs


def _coerce(value: Any, hint: Any) -> Any:
    """Turn a JSON value back into the type a dataclass field declares (tuples, nested configs)."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0]) if len(non_none) == 1 else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if origin is list:
        return [_coerce(v, args[0]) for v in value] if args else list(value)
    if origin is dict:
        return {k: _coerce(v, args[1]) for k, v in value.items()} if args else dict(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint.from_dict(value) if hasattr(hint, "from_dict") else hint(**value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Base for the one config dataclass each stage has.

    Subclasses validate in `__post_init__` (call `super().__post_init__()`), and
    `from_dict(to_dict(c)) == c` holds.
    """

    def __post_init__(self) -> None:
        """Validate; subclasses raise `SongtraceError` naming the bad field."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild a config from `to_dict` output; unknown keys are an error."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise SongtraceError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
        return cls(**{k: _coerce(v, hints[k]) for k, v in data.items()})

    def config_hash(self) -> str:
        """A short hash of the config, used to tell runs apart."""
        return hash_json(self.to_dict())[:16]


def check_choice(name: str, value: str, choices: typing.Iterable[str]) -> None:
    """Raise a clear error when `value` is not one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise SongtraceError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise a clear error when a numeric setting is not positive."""
    if value < 0 or (value == 0 and not allow_zero):
        raise SongtraceError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


# --------------------------------------------------------------------------- hashes


def hash_json(obj: Any) -> str:
    """sha256 of a canonical JSON dump."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def hash_tensors(tensors: Mapping[str, Any]) -> str:
    """Content hash of named tensors/arrays (names, dtypes, shapes and bytes), order independent."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        arr = t.detach().cpu().contiguous().numpy() if hasattr(t, "detach") else np.ascontiguousarray(t)
        h.update(f"{name}|{arr.dtype}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def artifact_hash(path: str | Path) -> str:
    """The content hash recorded in an artifact's config.json (`content_hash`)."""
    cfg = read_json(Path(path) / CONFIG_FILE)
    if "content_hash" not in cfg:
        raise SongtraceError(f"{Path(path) / CONFIG_FILE}: no content_hash; was the stage finished?")
    return str(cfg["content_hash"])


# --------------------------------------------------------------------------- atomic writes


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    # created with mode 0666 so the process umask applies, as for any other file it writes (mkstemp would make 0600)
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (indent 2, keys sorted)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read JSON with an error naming the file."""
    path = Path(path)
    if not path.exists():
        raise SongtraceError(f"{path}: not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SongtraceError(f"{path}: not valid JSON ({e})") from None


def write_parquet(path: str | Path, table: Any) -> None:
    """Write a pandas DataFrame (index dropped) or a pyarrow Table to Parquet atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | Path, columns: list[str] | None = None) -> Any:
    """Read a Parquet file into a pandas DataFrame, with an error naming the file when it is missing or unreadable."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise SongtraceError(f"{path}: not found")
    try:
        return pq.read_table(path, columns=columns).to_pandas()
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for truncated or foreign files
        raise SongtraceError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def save_safetensors(path: str | Path, tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> None:
    """Save torch tensors to safetensors atomically."""
    from safetensors.torch import save_file

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=dict(metadata or {}))


def load_safetensors(path: str | Path) -> dict[str, Any]:
    """Load a safetensors file to CPU torch tensors, with an error naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise SongtraceError(f"{path}: not found")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises several types for corrupt files
        raise SongtraceError(f"{path}: not a readable safetensors file ({e})") from None


# --------------------------------------------------------------------------- stage directories


def stage_record(config: StageConfig, inputs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `config.json` holds besides the results: config, its class, input hashes, version."""
    return {
        "stage": type(config).__name__,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "inputs": dict(inputs or {}),
        "songtrace_version": __version__,
    }


def begin_stage(
    out_dir: str | Path,
    config: StageConfig,
    inputs: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> bool:
    """Prepare `out_dir` for a stage run. Returns True when the finished artifact is already there.

    Same config and inputs, finished: True (skip). Same config, unfinished: False and keep the
    partial files so the stage can resume. A different config or inputs: refused unless
    `overwrite`, which clears the directory.
    """
    out_dir = Path(out_dir)
    record = stage_record(config, inputs)
    cfg_path = out_dir / CONFIG_FILE
    pending_path = out_dir / ".pending.json"
    existing = None
    if cfg_path.exists():
        existing = read_json(cfg_path)
    elif pending_path.exists():
        existing = read_json(pending_path)
    if existing is not None:
        same = existing.get("config") == record["config"] and existing.get("inputs") == record["inputs"]
        if same:
            return cfg_path.exists() and bool(existing.get("complete"))
        if not overwrite:
            raise SongtraceError(
                f"{out_dir} already holds a {existing.get('stage', 'stage')} artifact made with a different "
                "config or inputs; pass --overwrite to replace it or choose another output"
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(pending_path, record)
    return False


def finish_stage(
    out_dir: str | Path,
    config: StageConfig,
    inputs: Mapping[str, str] | None = None,
    content_hash: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the final `config.json` (marking the artifact complete) and drop the pending marker."""
    out_dir = Path(out_dir)
    record = stage_record(config, inputs)
    record["complete"] = True
    if content_hash is not None:
        record["content_hash"] = content_hash
    if extra:
        record.update(extra)
    write_json(out_dir / CONFIG_FILE, record)
    pending = out_dir / ".pending.json"
    if pending.exists():
        pending.unlink()
    return record


def load_stage_config(out_dir: str | Path, cls: type[C]) -> C:
    """Read the config dataclass back from a finished artifact, checking its stage type."""
    out_dir = Path(out_dir)
    rec = read_json(out_dir / CONFIG_FILE)
    if rec.get("stage") != cls.__name__:
        raise SongtraceError(f"{out_dir}: holds a {rec.get('stage')!r} artifact, expected {cls.__name__}")
    if not rec.get("complete"):
        raise SongtraceError(f"{out_dir}: the stage did not finish; run it again to resume")
    return cls.from_dict(rec["config"])
