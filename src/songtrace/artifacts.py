"""Artifacts: stage configs that round-trip through JSON, content hashes, atomic writes, completion markers and locks.

Every stage writes one directory holding its data and a `config.json` with the config that made
it, the content hashes of its inputs, the seeds and the package version. `config.json` with
`complete: true` is the completion marker: it lists every file of the artifact with its size and
sha256, so a finished artifact can be verified (`verify_artifact`). A stage that finds its output
present with the same config verifies it and skips; a corrupt one is refused, or recomputed with
`overwrite`; a different config is refused unless overwriting, and `overwrite` only ever replaces
an artifact of the same kind, deleting only what that artifact wrote (never a hidden file of the
user's such as .git; a folder holding other files is refused). A lost or unreadable marker makes a
corrupt artifact of the kind the lock file records (recomputed with `overwrite`), and clearing is
kill-safe. One writer at a time: `begin_stage` takes a file lock on the artifact (`.lock` inside
it, recording the writer's pid and the stage kind) until `finish_stage`, and a second writer is
refused with a message; on a filesystem without flock the stage is written unlocked. A finished,
intact artifact is found before any lock file is made (a read-only folder still skips). A run that
fails marks its pending state failed (`abandon_open_stages`), so a corrected rerun with another
config just works; a run killed outright keeps its partial files for the rerun to resume.
"""

from __future__ import annotations

import contextvars
import dataclasses
import errno
import fcntl
import hashlib
import itertools
import json
import math
import numbers
import os
import re
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
    `from_dict(to_dict(c)) == c` holds. Every number of every config is refused when NaN or
    infinite before the subclass's own checks run (`check_finite_fields`, wrapped around each
    subclass's `__post_init__`, so no config can forget it).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is None or getattr(own, "_checks_finite", False):
            return

        def __post_init__(self: StageConfig) -> None:
            plain_number_fields(self)
            check_finite_fields(self)
            own(self)

        __post_init__._checks_finite = True  # type: ignore[attr-defined]
        __post_init__.__doc__ = own.__doc__
        cls.__post_init__ = __post_init__  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        """Validate; subclasses raise `SongtraceError` naming the bad field."""
        plain_number_fields(self)
        check_finite_fields(self)

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


def _is_number(value: Any) -> bool:
    """Whether `value` is a real number (Python or numpy int/float, any `numbers.Real`), a bool (Python or numpy) not counting."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_finite(name: str, value: float) -> None:
    """Raise a clear error when a numeric setting is NaN or infinite (`nan < 0` is False, so range checks alone let NaN through).

    Any real number passes (Python or numpy scalars, `numbers.Real`); a bool where a number is expected does not."""
    if not _is_number(value):
        raise SongtraceError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise SongtraceError(f"{name} must be a finite number, got {value}")


def check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Raise a clear error when a numeric setting is not a finite positive number (NaN and inf refused)."""
    check_finite(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        raise SongtraceError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise a clear error when a numeric setting is NaN/inf or outside [low, high]."""
    check_finite(name, value)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if low is not None and high is not None else (
            f">= {low:g}" if low is not None else f"<= {high:g}")
        raise SongtraceError(f"{name} must be {bounds}, got {value:g}")


def _numbers(value: Any, name: str) -> Iterator[tuple[str, float]]:
    """(name, number) for every float/int in a config field (tuples, lists and dicts searched; nested configs check themselves)."""
    if isinstance(value, bool | np.bool_):
        return
    if _is_number(value):
        yield name, value
    elif isinstance(value, tuple | list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{name}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{name}.{k}")


def _plain(value: Any) -> Any:
    """`value` with numpy (or other `numbers.Real`) scalars as Python numbers, in tuples, lists and dicts too (configs dump to JSON)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def plain_number_fields(config: Any) -> None:
    """Turn a (frozen) config's numpy scalars into Python numbers in place, so it hashes and round-trips through JSON."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        plain = _plain(value)
        if plain is not value:
            object.__setattr__(config, field.name, plain)


def check_finite_fields(config: Any) -> None:
    """Refuse a config any of whose numbers is NaN or infinite, naming the field."""
    for field in dataclasses.fields(config):
        for name, number in _numbers(getattr(config, field.name), field.name):
            if not math.isfinite(float(number)):
                raise SongtraceError(f"{type(config).__name__}: {name} must be a finite number, got {number}")


def check_finite_tensors(tensors: Mapping[str, Any], source: str) -> None:
    """Refuse tensors with NaN or infinite entries (a NaN in must be an error, never NaN out), naming the file and tensor."""
    for name, t in tensors.items():
        if hasattr(t, "is_floating_point") and t.is_floating_point() and t.numel() and not bool(t.isfinite().all()):
            bad = int((~t.isfinite()).sum())
            raise SongtraceError(f"{source}: {name} has {bad} NaN/inf entries")


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


def hash_table(table: Any) -> str:
    """Exact content hash of a pandas table (column names, row count and every value; floats by their exact shortest repr, so
    1e-12 apart differ), independent of its column order (a resumed run may build them in another order) and of the index."""
    h = hashlib.sha256(f"rows|{len(table)}|".encode())
    for name in sorted(table.columns, key=str):
        values = table[name].tolist()  # Python scalars: json.dumps writes floats exactly (repr round-trips)
        h.update(json.dumps([str(name), values], default=str, allow_nan=True).encode())
        h.update(b"\n")
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


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (its header only), with an error naming the file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for corrupt files
        raise SongtraceError(f"{path}: not a readable safetensors file ({e})") from None


# --------------------------------------------------------------------------- untrusted files

_ALLOW_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar("songtrace_allow_pickle", default=False)
# the command-line flag that opts in, where the running command has one (refusals name it only then)
_PICKLE_FLAG: contextvars.ContextVar[str | None] = contextvars.ContextVar("songtrace_pickle_flag", default=None)


@contextmanager
def allow_pickle(allowed: bool = True, flag: str | None = None) -> Iterator[None]:
    """Let the block load pickle-capable weight files (.pt, .ckpt, .h5 models) that can run code when read: only files you trust.

    `flag`: the option of the running command that opts in (e.g. "--allow-pickle"), which a refusal then suggests."""
    token, flag_token = _ALLOW_PICKLE.set(allowed), _PICKLE_FLAG.set(flag)
    try:
        yield
    finally:
        _ALLOW_PICKLE.reset(token)
        _PICKLE_FLAG.reset(flag_token)


def pickle_allowed() -> bool:
    """Whether pickle-capable files may be loaded: inside `allow_pickle()`, or with SONGTRACE_ALLOW_PICKLE=1."""
    return _ALLOW_PICKLE.get() or os.environ.get("SONGTRACE_ALLOW_PICKLE") == "1"


def refuse_pickle(path: str | Path, what: str) -> None:
    """Refuse a pickle-capable file unless the user opted in (`allow_pickle`, SONGTRACE_ALLOW_PICKLE=1, or the command's flag);
    the message suggests the command's own flag only where it has one, else the environment variable (and the API)."""
    if not pickle_allowed():
        flag = _PICKLE_FLAG.get()
        how = f"{flag} (or SONGTRACE_ALLOW_PICKLE=1)" if flag else "SONGTRACE_ALLOW_PICKLE=1 (in Python: artifacts.allow_pickle())"
        raise SongtraceError(
            f"{path}: {what} is a pickle-capable file, which can run code when loaded; convert it to safetensors, or, "
            f"only if you trust its source, allow it with {how}"
        )


def check_file_size(path: str | Path, max_bytes: int, what: str = "file") -> int:
    """The size of a file, refusing one larger than `max_bytes` before anything reads it whole."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SongtraceError(f"{path}: {what} not found") from None
    if size > max_bytes:
        raise SongtraceError(f"{path}: {what} of {size / 2**20:.0f} MiB is larger than the {max_bytes / 2**20:.0f} MiB limit")
    return size


# --------------------------------------------------------------------------- stage directories

PENDING_FILE = ".pending.json"
LOCK_FILE = ".lock"
# top-level entries a stage keeps while it runs (resumable state) and deletes once finished: not part of the artifact
SCRATCH_NAMES = frozenset({"state", "partial", "retrain", "checkpoint.safetensors"})
# a quick check (whenever a finished artifact is found or read) hashes files up to QUICK_HASH_BYTES, QUICK_HASH_BUDGET bytes in
# all, and checks the sizes of the rest; SONGTRACE_VERIFY=full (or `songtrace verify`) hashes every file
QUICK_HASH_BYTES = 64 * 2**20
QUICK_HASH_BUDGET = 64 * 2**20


def artifact_files(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every file of an artifact (relative POSIX path -> size and sha256): all but config.json, hidden files and scratch state."""
    out_dir = Path(out_dir)
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir)
        if rel.parts[0] in SCRATCH_NAMES or any(part.startswith(".") for part in rel.parts) or rel.as_posix() == CONFIG_FILE:
            continue
        if p.is_file() and not p.is_symlink():
            files[rel.as_posix()] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return files


def verify_level() -> str:
    """How thoroughly finished artifacts are checked when found or read: "quick" (default), "full" or "sizes" (SONGTRACE_VERIFY)."""
    level = os.environ.get("SONGTRACE_VERIFY", "quick")
    check_choice("SONGTRACE_VERIFY", level, ("quick", "full", "sizes"))
    return level


def verify_artifact(out_dir: str | Path, level: str | None = None) -> list[str]:
    """What is wrong with a finished artifact's files against its completion marker (empty: intact).

    Sizes are always checked; sha256 of every file ("full"), of none ("sizes"), or ("quick") of the files up to
    `QUICK_HASH_BYTES`, smallest first, until `QUICK_HASH_BUDGET` bytes are hashed. An artifact written before markers
    listed their files (no `files` in config.json) has nothing to check.
    """
    out_dir = Path(out_dir)
    level = level or verify_level()
    record = read_json(out_dir / CONFIG_FILE)
    listed = record.get("files")
    if not isinstance(listed, dict):
        return []
    problems = []
    budget = QUICK_HASH_BUDGET
    for rel, entry in sorted(listed.items(), key=lambda kv: (int(kv[1].get("size") or 0), kv[0])):
        p = out_dir / rel
        if not p.is_file():
            problems.append(f"{rel} not found")
            continue
        size = p.stat().st_size
        if size != entry.get("size"):
            problems.append(f"{rel} has {size} bytes, {entry.get('size')} when finished")
        elif level == "full" or (level == "quick" and size <= min(QUICK_HASH_BYTES, budget)):
            budget -= size
            if sha256_file(p) != entry.get("sha256"):
                problems.append(f"{rel} has changed since it was finished (sha256 differs)")
    return problems


def read_level() -> str:
    """How thoroughly a finished artifact is checked each time a stage reads it: sizes (cheap; content checks such as NaN and
    identity hashes follow in the readers), or every hash with SONGTRACE_VERIFY=full."""
    return "full" if verify_level() == "full" else "sizes"


def check_intact(out_dir: str | Path, level: str | None = None, remedy: str = "recompute it with --overwrite") -> None:
    """Refuse a corrupt finished artifact, naming the file and what is wrong (default level: `read_level()`)."""
    problems = verify_artifact(out_dir, level or read_level())
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SongtraceError(f"{out_dir} is corrupt: {problems[0]}{more}; {remedy}")


def _seeds(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every field named like a seed in a config dict, with its dotted path."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(_seeds(v, path + "."))
            elif "seed" in str(k) and isinstance(v, int | None) and not isinstance(v, bool):
                out[path] = v
    return out


def stage_record(config: StageConfig, inputs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `config.json` holds besides the results: config, its class, input hashes, version."""
    as_dict = config.to_dict()
    return {
        "stage": type(config).__name__,
        "config": as_dict,
        "config_hash": config.config_hash(),
        "inputs": dict(inputs or {}),
        "seeds": _seeds(as_dict),
        "songtrace_version": __version__,
    }


@dataclasses.dataclass
class _OpenStage:
    """A stage this process has begun and not finished: its lock and pending record."""

    fd: int
    record: dict[str, Any]
    serial: int = dataclasses.field(default_factory=lambda: next(_SERIAL))


_SERIAL = itertools.count()
_OPEN: dict[Path, _OpenStage] = {}


# an atomic_path temporary (`.NAME.<12 hex>.tmp`), left behind only by a write that was killed
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
# flock errors meaning the filesystem cannot lock (some network and FUSE mounts): the stage is written without a lock
_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS})


def _lock(out_dir: Path, stage: str) -> int:
    """Take the artifact's lock (fcntl flock on `<out_dir>/.lock`, which also records the writer's pid and the stage kind),
    refusing when another process holds it. Only EWOULDBLOCK/EAGAIN mean "held"; on a filesystem without flock the stage
    is written unlocked (-1: one writer per artifact is then the user's to ensure); any other error is refused in one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise SongtraceError(f"{out_dir}: cannot write the artifact here ({(e.strerror or str(e)).lower()})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            holder = os.pread(fd, 32, 0).decode(errors="replace").split() or ["?"]
            os.close(fd)
            raise SongtraceError(f"{out_dir}: another songtrace process (pid {holder[0]}) is writing this artifact; "
                                 "wait for it to finish, or choose another output") from None
        if e.errno not in _NO_FLOCK:
            os.close(fd)
            raise SongtraceError(f"{out_dir / LOCK_FILE}: cannot lock the artifact ({e.strerror or e})") from None
        _write_lock_record(fd, stage)
        os.close(fd)
        return -1
    _write_lock_record(fd, stage)
    return fd


def _write_lock_record(fd: int, stage: str) -> None:
    """`<pid> <stage kind>` in the lock file: the pid for a refused writer's message, the kind for a marker that is later lost."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {stage}\n".encode(), 0)


def _recorded_kind(out_dir: Path) -> str | None:
    """The stage kind the artifact's lock file records (None: no lock file, or one written before it recorded kinds)."""
    try:
        words = (out_dir / LOCK_FILE).read_text(errors="replace").split()
    except OSError:
        return None
    return words[1] if len(words) > 1 and words[1].isidentifier() else None


def _release(out_dir: Path) -> None:
    """Drop this process's lock on an artifact (the lock file stays, so waiting writers lock the same file)."""
    held = _OPEN.pop(out_dir, None)
    if held is not None and held.fd >= 0:
        fcntl.flock(held.fd, fcntl.LOCK_UN)
        os.close(held.fd)


def _owned_entries(out_dir: Path, existing: dict[str, Any] | None) -> tuple[list[Path], list[str]]:
    """(the top-level entries the artifact wrote, the names of any other non-hidden entries).

    The artifact's: its marker and pending record, scratch state, leftover atomic-write temporaries, and the files its
    completion marker lists (a folder holding listed files counts whole); without a list (an unfinished run, a lost marker)
    every non-hidden entry, as a stage only begins in a folder with none of other files. Another hidden entry (.git,
    .DS_Store) is never the artifact's: it is kept, not deleted.
    """
    listed = existing.get("files") if existing else None
    tops = {rel.split("/")[0] for rel in listed} if isinstance(listed, dict) else None
    owned: list[Path] = []
    foreign: list[str] = []
    for p in sorted(out_dir.iterdir()):
        name = p.name
        if name == LOCK_FILE:
            continue
        if name in (CONFIG_FILE, PENDING_FILE) or name in SCRATCH_NAMES or _TEMP_NAME.match(name):
            owned.append(p)
        elif name.startswith("."):
            continue
        elif tops is None or name in tops:
            owned.append(p)
        else:
            foreign.append(name)
    return owned, foreign


def _clear(out_dir: Path, existing: dict[str, Any] | None, stage: str) -> None:
    """Delete what the artifact wrote (`_owned_entries`), keeping the lock file and any hidden file of the user's; refuse,
    deleting nothing, when the folder holds other files. Kill-safe: a pending record saying `clearing` is written first, then
    the completion marker goes, then the data; a run killed at any point leaves either the intact artifact or that record,
    which the next run of this kind clears again (`begin_stage` replaces it with its own pending record)."""
    owned, foreign = _owned_entries(out_dir, existing)
    if foreign:
        raise SongtraceError(f"{out_dir} holds files that are not part of its artifact ({', '.join(foreign[:3])}); "
                             "move them away, or choose another output")
    files = existing.get("files") if existing else None
    write_json(out_dir / PENDING_FILE, {"stage": stage, "clearing": True, "files": files if isinstance(files, dict) else None})
    for p in sorted(owned, key=lambda p: (p.name != CONFIG_FILE, p.name == PENDING_FILE)):
        if p.name == PENDING_FILE:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _broken(out_dir: Path, problem: str) -> dict[str, Any]:
    """The record of an artifact whose marker is lost or unreadable: of the kind its lock file records (replaceable with
    --overwrite by that kind), else refused, as nothing says which stage made the folder."""
    kind = _recorded_kind(out_dir)
    if kind is None:
        raise SongtraceError(f"{out_dir}: {problem}, and nothing records which songtrace stage made this folder; "
                             "move it away, or choose another output")
    return {"stage": kind, "broken": problem}


def _existing(out_dir: Path) -> dict[str, Any] | None:
    """The record of what `out_dir` holds: its completion marker, else its pending record, else None; a marker that is
    unreadable, or missing from a folder songtrace locked that still holds files, gives a `broken` record (`_broken`)."""
    if not out_dir.is_dir():
        return None
    for name in (CONFIG_FILE, PENDING_FILE):
        path = out_dir / name
        if path.exists():
            try:
                rec = json.loads(path.read_text())
            except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                return _broken(out_dir, f"its {name} is not valid JSON ({str(e).splitlines()[0]})")
            if not isinstance(rec, dict) or not isinstance(rec.get("stage"), str):
                return _broken(out_dir, f"its {name} is not a songtrace stage record")
            return rec
    if (out_dir / LOCK_FILE).exists() and _recorded_kind(out_dir) and any(not p.name.startswith(".") for p in out_dir.iterdir()):
        return _broken(out_dir, f"its completion marker {CONFIG_FILE} is missing")
    return None


def _check_replaceable(out_dir: Path, existing: dict[str, Any] | None, record: dict[str, Any]) -> None:
    """Refuse to put an artifact where another kind lives, or into a folder of other files."""
    if existing is not None:
        if existing.get("stage") != record["stage"]:
            raise SongtraceError(
                f"{out_dir} holds a {existing.get('stage', 'non-songtrace')} artifact, not a {record['stage']} one; "
                "--overwrite only replaces an artifact of the same kind; choose another output"
            )
        return
    others = [p.name for p in out_dir.iterdir() if not p.name.startswith(".")] if out_dir.is_dir() else []
    if others:
        raise SongtraceError(f"{out_dir} is a folder of other files ({', '.join(sorted(others)[:3])}), not a songtrace artifact; "
                             "choose a new or empty folder")


def _same(existing: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether a stage record was made with the same config and inputs."""
    return existing.get("config") == record["config"] and existing.get("inputs") == record["inputs"]


def _finished(out_dir: Path, existing: dict[str, Any]) -> bool:
    """Whether a record is a readable completion marker (not a pending, clearing or broken one)."""
    return (out_dir / CONFIG_FILE).exists() and bool(existing.get("complete")) and not existing.get("broken")


def begin_stage(
    out_dir: str | Path,
    config: StageConfig,
    inputs: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> bool:
    """Prepare `out_dir` for a stage run. Returns True when the finished, intact artifact is already there.

    Same config and inputs, finished: verified (`verify_artifact`), then True (skip; checked before any lock file is made,
    so a finished artifact on a read-only folder is still found); a corrupt one (files changed, or its marker lost or
    unreadable) is refused, or cleared and recomputed with `overwrite`. Same config, unfinished: False and keep the partial
    files so the stage can resume. A different config or inputs: refused unless `overwrite` (or unless the unfinished run
    there failed), which clears the directory (`_clear`: only what the artifact wrote). Only an artifact of the same stage
    kind is ever replaced, and a folder of other files is never written into. From here to `finish_stage` this process
    holds the artifact's lock; a second writer is refused.
    """
    out_dir = Path(out_dir).absolute()
    record = stage_record(config, inputs)
    stage = record["stage"]
    if out_dir.exists() and not out_dir.is_dir():
        raise SongtraceError(f"{out_dir} is a file, not a directory")
    existing = _existing(out_dir)
    _check_replaceable(out_dir, existing, record)
    if out_dir in _OPEN:  # begun earlier in this process and never finished: that attempt failed
        abandon_stage(out_dir, failed=True)
    if existing is not None and _same(existing, record) and _finished(out_dir, existing) and not verify_artifact(out_dir):
        return True
    fd = _lock(out_dir, stage)
    _OPEN[out_dir] = _OpenStage(fd, record)
    try:
        existing = _existing(out_dir)  # again, under the lock
        _check_replaceable(out_dir, existing, record)
        if existing is not None:
            same, finished = _same(existing, record), _finished(out_dir, existing)
            if existing.get("clearing"):  # a clearing that was killed: finish it
                _clear(out_dir, existing, stage)
            elif existing.get("broken"):
                if not overwrite:
                    raise SongtraceError(f"{out_dir} is a corrupt {stage} artifact: {existing['broken']}; pass --overwrite to recompute it")
                _clear(out_dir, existing, stage)
            elif same and finished:
                problems = verify_artifact(out_dir)
                if not problems:
                    _release(out_dir)
                    return True
                if not overwrite:
                    raise SongtraceError(f"{out_dir} is corrupt: {problems[0]}; pass --overwrite to recompute it")
                _clear(out_dir, existing, stage)
            elif same:
                if existing.get("failed"):
                    existing.pop("failed")
                    write_json(out_dir / PENDING_FILE, {**existing, **record})
                return False
            elif overwrite or (not finished and existing.get("failed")):
                _clear(out_dir, existing, stage)
            else:
                what = "an unfinished run (resume it with the same options)" if not finished else "an artifact"
                raise SongtraceError(
                    f"{out_dir} already holds {what} made with a different config or inputs; "
                    "pass --overwrite to replace it or choose another output"
                )
        write_json(out_dir / PENDING_FILE, {**record, "pid": os.getpid()})
        return False
    except BaseException:
        _release(out_dir)
        raise


def finish_stage(
    out_dir: str | Path,
    config: StageConfig,
    inputs: Mapping[str, str] | None = None,
    content_hash: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the completion marker `config.json` (the record, plus every file's size and sha256), drop the pending marker and the lock."""
    out_dir = Path(out_dir).absolute()
    record = stage_record(config, inputs)
    record["complete"] = True
    if content_hash is not None:
        record["content_hash"] = content_hash
    if extra:
        record.update(extra)
    record["files"] = artifact_files(out_dir)
    write_json(out_dir / CONFIG_FILE, record)
    pending = out_dir / PENDING_FILE
    if pending.exists():
        pending.unlink()
    _release(out_dir)
    return record


def abandon_stage(out_dir: str | Path, failed: bool = True) -> None:
    """Give up a stage this process began: mark its pending state failed (a rerun with another config may replace it) and unlock it.

    `failed=False` (the run was interrupted, e.g. Ctrl-C) only unlocks: the partial files stay for a rerun to resume, and
    a rerun with another config is still refused unless --overwrite.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir not in _OPEN:
        return
    try:
        pending = out_dir / PENDING_FILE
        if failed and pending.exists() and not (out_dir / CONFIG_FILE).exists():
            rec = read_json(pending)
            write_json(pending, {**rec, "failed": True})
    finally:
        _release(out_dir)


def unlock_stage(out_dir: str | Path) -> None:
    """Let other processes work on a stage this process began (its pending record stays): for writers of disjoint parts of one
    artifact, e.g. `index build --shard i` run by hand in one process per shard, each writing only its own shard file."""
    _release(Path(out_dir).absolute())


def abandon_open_stages(failed: bool = True) -> list[Path]:
    """`abandon_stage` every stage this process began and did not finish (a command that ended in an error); returns them."""
    dirs = list(_OPEN)
    for d in dirs:
        abandon_stage(d, failed=failed)
    return dirs


@contextmanager
def stage_guard() -> Iterator[None]:
    """Run stages; any stage begun inside and not finished when the block raises is abandoned (failed, or kept for resuming on Ctrl-C)."""
    before = {d: held.serial for d, held in _OPEN.items()}
    try:
        yield
    except BaseException as e:
        for d in [d for d, held in _OPEN.items() if before.get(d) != held.serial]:
            abandon_stage(d, failed=isinstance(e, Exception))
        raise


def artifact_containing(path: str | Path) -> Path | None:
    """The songtrace artifact folder `path` lies in (it or an ancestor holds a stage record, a pending record or a songtrace lock
    file naming its stage), else None: a file written there by hand would be listed in, or break, the artifact's marker."""
    for d in [Path(path).absolute(), *Path(path).absolute().parents]:
        if _recorded_kind(d) is not None:
            return d
        for name in (CONFIG_FILE, PENDING_FILE):
            if (d / name).is_file():
                try:
                    rec = json.loads((d / name).read_text())
                except (ValueError, OSError):
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("stage"), str) and "config" in rec:
                    return d
    return None


def check_new_file(path: str | Path, overwrite: bool, what: str = "file") -> None:
    """Refuse to write a file of the user's into a songtrace artifact folder, or over an existing file unless `overwrite`."""
    path = Path(path)
    inside = artifact_containing(path.parent)
    if inside is not None:
        raise SongtraceError(f"{path}: lies inside the songtrace artifact {inside}; write the {what} elsewhere")
    if path.exists() and not overwrite:
        raise SongtraceError(f"{path} already exists; pass --overwrite to replace it or choose another --out")


def load_stage_config(out_dir: str | Path, cls: type[C]) -> C:
    """Read the config dataclass back from a finished artifact, checking its stage type."""
    out_dir = Path(out_dir)
    rec = read_json(out_dir / CONFIG_FILE)
    if rec.get("stage") != cls.__name__:
        raise SongtraceError(f"{out_dir}: holds a {rec.get('stage')!r} artifact, expected {cls.__name__}")
    if not rec.get("complete"):
        raise SongtraceError(f"{out_dir}: the stage did not finish; run it again to resume")
    check_intact(out_dir)
    return cls.from_dict(rec["config"])
