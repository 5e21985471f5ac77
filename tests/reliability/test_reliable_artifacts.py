"""Artifacts are verifiable, replaced only by their own kind, written by one process at a time, and a failed run's pending state
never blocks the corrected rerun (issue 15, part 2)."""

import dataclasses
import importlib
import math
import os
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import songtrace
from songtrace.artifacts import (
    StageConfig,
    abandon_open_stages,
    begin_stage,
    check_positive,
    check_range,
    finish_stage,
    hash_table,
    read_json,
    stage_guard,
    verify_artifact,
)
from songtrace.errors import SongtraceError


@dataclasses.dataclass(frozen=True)
class Toy(StageConfig):
    lr: float = 1e-3
    steps: int = 2
    sizes: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        check_positive("steps", self.steps)


@dataclasses.dataclass(frozen=True)
class Other(StageConfig):
    x: int = 1


def _finished(out, config=Toy(), payload=b"weights" * 100, begun=False):
    assert begun or begin_stage(out, config, {"data": "d"}) is False
    (out / "model.bin").write_bytes(payload)
    (out / "sub").mkdir(exist_ok=True)
    (out / "sub" / "table.txt").write_text("a table")
    return finish_stage(out, config, {"data": "d"}, content_hash="h")


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_by_every_check_and_every_config(bad):
    for check in (lambda v: check_positive("x", v), lambda v: check_positive("x", v, allow_zero=True), lambda v: check_range("x", v, 0, 1)):
        with pytest.raises(SongtraceError, match="finite"):
            check(bad)
    with pytest.raises(SongtraceError, match="lr must be a finite number"):
        Toy(lr=bad)
    with pytest.raises(SongtraceError, match=r"sizes\[1\]"):
        Toy(sizes=(1.0, bad))


def _all_stage_configs():
    for mod in pkgutil.walk_packages(songtrace.__path__, "songtrace."):
        if mod.name.startswith("songtrace.cli") and mod.name != "songtrace.cli.demo":
            continue
        try:
            importlib.import_module(mod.name)
        except ImportError:  # an optional extra that is not installed
            continue

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return sorted({c for c in subclasses(StageConfig) if c.__module__.startswith("songtrace.")}, key=lambda c: c.__name__)


def test_every_float_field_of_every_stage_config_refuses_nan_and_inf():
    configs = _all_stage_configs()
    assert len(configs) >= 20  # every stage's config was found
    checked = 0
    for cls in configs:
        try:
            default = cls()
        except (TypeError, SongtraceError):  # a config with required fields
            continue
        for field in dataclasses.fields(cls):
            value = getattr(default, field.name)
            if isinstance(value, float) or field.type in ("float", "float | None") or "float" == str(field.type):
                for bad in (math.nan, math.inf):
                    with pytest.raises(SongtraceError):
                        dataclasses.replace(default, **{field.name: bad})
                checked += 1
    assert checked >= 30


# --------------------------------------------------------------------------- completion markers and verification


def test_the_completion_marker_lists_every_file_and_finds_corruption(tmp_path):
    out = tmp_path / "a"
    record = _finished(out)
    assert set(record["files"]) == {"model.bin", "sub/table.txt"}
    assert record["files"]["model.bin"]["size"] == 700
    assert record["seeds"] == {} and record["songtrace_version"] == songtrace.__version__
    assert verify_artifact(out) == []
    (out / "model.bin").write_bytes(b"x" * 700)  # same size, other bytes: only a hash sees it
    assert verify_artifact(out, "sizes") == []
    assert "changed" in verify_artifact(out)[0]
    (out / "model.bin").write_bytes(b"short")
    assert "5 bytes" in verify_artifact(out, "sizes")[0]
    (out / "sub" / "table.txt").unlink()
    assert any("sub/table.txt not found" in p for p in verify_artifact(out))


def test_a_corrupt_artifact_with_the_same_config_is_refused_and_recomputed_with_overwrite(tmp_path):
    out = tmp_path / "a"
    _finished(out)
    assert begin_stage(out, Toy(), {"data": "d"}) is True  # intact: skip
    (out / "model.bin").write_bytes(b"truncated")
    with pytest.raises(SongtraceError, match=r"corrupt: model\.bin has 9 bytes"):
        begin_stage(out, Toy(), {"data": "d"})
    assert begin_stage(out, Toy(), {"data": "d"}, overwrite=True) is False  # recompute
    assert not (out / "model.bin").exists() and not (out / "config.json").exists()
    abandon_open_stages()


def test_overwrite_only_replaces_the_same_kind_and_never_a_folder_of_other_files(tmp_path):
    out = tmp_path / "a"
    _finished(out)
    with pytest.raises(SongtraceError, match="holds a Toy artifact, not a Other one"):
        begin_stage(out, Other(), overwrite=True)
    assert (out / "model.bin").exists()
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(SongtraceError, match="folder of other files"):
        begin_stage(folder, Toy(), overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_failed_run_never_blocks_the_corrected_rerun_but_a_killed_one_keeps_its_work(tmp_path):
    out = tmp_path / "a"
    with pytest.raises(RuntimeError), stage_guard():  # a run that fails after starting
        begin_stage(out, Toy(lr=1e30), {"data": "d"})
        (out / "partial.bin").write_text("half")
        raise RuntimeError("diverged")
    assert read_json(out / ".pending.json")["failed"] is True
    assert begin_stage(out, Toy(), {"data": "d"}) is False  # another config: allowed, the failed state cleared
    assert not (out / "partial.bin").exists()
    (out / "partial.bin").write_text("half")
    with pytest.raises(KeyboardInterrupt), stage_guard():  # interrupted: keep the partial work for resuming
        begin_stage(out, Toy(), {"data": "d"})
        raise KeyboardInterrupt
    with pytest.raises(SongtraceError, match="unfinished run"):
        begin_stage(out, Toy(lr=0.5), {"data": "d"})
    assert begin_stage(out, Toy(), {"data": "d"}) is False and (out / "partial.bin").exists()  # same config resumes
    abandon_open_stages()


def test_a_stage_begun_again_in_the_same_process_treats_the_first_attempt_as_failed(tmp_path):
    out = tmp_path / "a"
    begin_stage(out, Toy(lr=1e30), {"data": "d"})  # a library caller whose stage raised (no guard)
    assert begin_stage(out, Toy(), {"data": "d"}) is False
    finish_stage(out, Toy(), {"data": "d"})
    assert begin_stage(out, Toy(), {"data": "d"}) is True


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "a"
    begin_stage(out, Toy(), {"data": "d"})
    script = textwrap.dedent(f"""
        import dataclasses, sys
        from songtrace.artifacts import StageConfig, begin_stage
        from songtrace.errors import SongtraceError
        @dataclasses.dataclass(frozen=True)
        class Toy(StageConfig):
            lr: float = 1e-3
            steps: int = 2
            sizes: tuple[float, ...] = (1.0,)
        try:
            begin_stage({str(out)!r}, Toy(), {{"data": "d"}}, overwrite=True)
        except SongtraceError as e:
            print(e)
            sys.exit(2)
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    assert "another songtrace process" in p.stdout and "is writing this artifact" in p.stdout
    finish_stage(out, Toy(), {"data": "d"})
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr  # released: the next writer gets it


def test_writers_of_disjoint_parts_share_an_unlocked_stage(tmp_path):
    """`index build --shard i` by hand: each shard process unlocks the stage it began, so the next one is not refused."""
    from songtrace.artifacts import unlock_stage

    out = tmp_path / "a"
    begin_stage(out, Toy(), {"data": "d"})
    unlock_stage(out)
    script = textwrap.dedent(f"""
        import dataclasses
        from songtrace.artifacts import StageConfig, begin_stage
        @dataclasses.dataclass(frozen=True)
        class Toy(StageConfig):
            lr: float = 1e-3
            steps: int = 2
            sizes: tuple[float, ...] = (1.0,)
        assert begin_stage({str(out)!r}, Toy(), {{"data": "d"}}) is False  # the same unfinished stage: resumed, not refused
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (out / ".pending.json").exists()


def test_table_hash_does_not_depend_on_column_order():
    import pandas as pd

    a = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    assert hash_table(a) == hash_table(a[["y", "x"]]) != hash_table(a.assign(x=[1.0, 3.0]))


def test_table_hash_is_exact_not_ten_significant_digits():
    """Review #10: two tables 1e-13 apart hash differently (DataFrame.to_json kept 10 significant digits)."""
    import pandas as pd

    a = pd.DataFrame({"x": [0.123456789012345, 2.0], "n": [1, 2]})
    b = a.assign(x=[0.123456789012345 + 1e-13, 2.0])
    assert hash_table(a) != hash_table(b)
    assert hash_table(a) == hash_table(a.copy()[["n", "x"]]) == hash_table(a.set_axis([5, 6]))  # column order and index aside


# --------------------------------------------------------------------------- review fixes: numbers, clearing, markers, locks


def test_numpy_and_other_real_scalars_are_numbers_but_bools_and_nan_are_not():
    """Review #7: numpy scalars (and numbers.Real) pass the checks and configs; configs still dump to JSON and round-trip."""
    from fractions import Fraction

    import numpy as np

    from songtrace.artifacts import check_finite

    for ok in (np.float32(0.5), np.int64(3), np.float64(2.0), Fraction(1, 2), 4, 0.25):
        check_finite("x", ok)
        check_positive("x", ok)
    for bad in (True, np.bool_(False), "1", None):
        with pytest.raises(SongtraceError, match="must be a number"):
            check_finite("x", bad)
    with pytest.raises(SongtraceError, match="finite"):
        check_finite("x", np.float32("nan"))
    config = Toy(lr=np.float32(0.5), steps=np.int64(3), sizes=(np.float64(1.5),))
    assert type(config.lr) is float and type(config.steps) is int and config.to_dict() == {"lr": 0.5, "steps": 3, "sizes": [1.5]}
    assert Toy.from_dict(config.to_dict()) == config and config.config_hash() == Toy(lr=0.5, steps=3, sizes=(1.5,)).config_hash()
    with pytest.raises(SongtraceError, match="finite"):
        Toy(lr=np.float64("inf"))
    with pytest.raises(SongtraceError, match="finite"):
        Toy(sizes=(np.float32("nan"),))


def test_overwrite_never_deletes_a_users_hidden_files(tmp_path):
    """Review #2: `--overwrite` deletes what the artifact wrote, never .git and the like; other files refuse it."""
    out = tmp_path / "a"
    out.mkdir()
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main")
    _finished(out)
    assert begin_stage(out, Toy(lr=0.5), {"data": "d"}, overwrite=True) is False
    assert (out / ".git" / "HEAD").read_text() == "ref: refs/heads/main"
    assert not (out / "model.bin").exists() and not (out / "sub").exists()
    finish_stage(out, Toy(lr=0.5), {"data": "d"})
    (out / "notes.txt").write_text("mine")  # a file of the user's put into a finished artifact
    with pytest.raises(SongtraceError, match=r"holds files that are not part of its artifact \(notes\.txt\)"):
        begin_stage(out, Toy(lr=0.25), {"data": "d"}, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "config.json").exists()


@pytest.mark.parametrize("damage", ["missing", "truncated", "not a record"])
def test_an_artifact_with_a_lost_or_broken_marker_is_recomputed_with_overwrite(tmp_path, damage):
    """Review #3: a lost/unreadable config.json is a corrupt artifact of the kind its lock file records: refused, then
    recomputed with --overwrite; another kind never replaces it; with nothing recording the kind, refused clearly."""
    out = tmp_path / "a"
    _finished(out)
    marker = out / "config.json"
    if damage == "missing":
        marker.unlink()
    else:
        marker.write_text('{"stage": "To' if damage == "truncated" else "[1, 2]")
    with pytest.raises(SongtraceError, match=r"is a corrupt Toy artifact: .*config\.json.*; pass --overwrite to recompute it"):
        begin_stage(out, Toy(), {"data": "d"})
    with pytest.raises(SongtraceError, match="holds a Toy artifact, not a Other one"):
        begin_stage(out, Other(), overwrite=True)
    assert (out / "model.bin").exists()
    assert begin_stage(out, Toy(), {"data": "d"}, overwrite=True) is False
    assert not (out / "model.bin").exists()
    _finished(out, begun=True)
    assert begin_stage(out, Toy(), {"data": "d"}) is True
    marker.unlink()
    (out / ".lock").unlink()  # nothing records which stage made the folder: refused, never guessed
    with pytest.raises(SongtraceError, match=r"folder of other files|nothing records which songtrace stage"):
        begin_stage(out, Toy(), {"data": "d"}, overwrite=True)
    assert (out / "model.bin").exists()


@pytest.mark.parametrize("killed_at", [1, 2, 3])
def test_a_clearing_killed_at_any_point_leaves_a_state_the_next_run_repairs(tmp_path, monkeypatch, killed_at):
    """Review #3: `_clear` is interrupted at its k-th deletion (a kill -9 there); the next run of the kind, with or without
    --overwrite, starts afresh (or finds the untouched artifact), never a folder it refuses as "other files"."""
    import shutil

    from songtrace import artifacts

    out = tmp_path / "a"
    _finished(out)
    calls = {"n": 0}
    real_unlink, real_rmtree = artifacts.Path.unlink, shutil.rmtree

    def counted(real):
        def delete(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == killed_at:
                raise KeyboardInterrupt  # the process dies here
            return real(*args, **kwargs)
        return delete

    monkeypatch.setattr(artifacts.Path, "unlink", counted(real_unlink))
    monkeypatch.setattr(artifacts.shutil, "rmtree", counted(real_rmtree))
    with pytest.raises(KeyboardInterrupt):
        begin_stage(out, Toy(lr=0.5), {"data": "d"}, overwrite=True)
    monkeypatch.undo()
    if begin_stage(out, Toy(), {"data": "d"}):  # the original config: the untouched artifact (killed before deleting anything) ...
        assert killed_at == 1 and verify_artifact(out) == []
    else:  # ... or recomputed from scratch, never resumed from a half-deleted state
        assert not (out / "model.bin").exists() and not (out / "config.json").exists()
        _finished(out, begun=True)
    assert begin_stage(out, Toy(), {"data": "d"}) is True
    assert begin_stage(out, Toy(lr=0.5), {"data": "d"}, overwrite=True) is False  # and the overwrite that was killed now works


def test_a_finished_artifact_is_found_without_creating_a_lock_file(tmp_path):
    """Review #14: the finished-and-intact check comes before the lock file is made (a read-only folder still skips)."""
    out = tmp_path / "a"
    _finished(out)
    (out / ".lock").unlink()
    assert begin_stage(out, Toy(), {"data": "d"}) is True
    assert not (out / ".lock").exists()


def test_only_a_held_lock_means_locked(tmp_path, monkeypatch):
    """Review #14: EWOULDBLOCK/EAGAIN mean another writer; a filesystem without flock (ENOLCK, EOPNOTSUPP) is written
    unlocked; any other error is refused as what it is, not as "another process"."""
    import errno
    import fcntl
    import types

    from songtrace import artifacts

    def failing(code):
        def flock(fd, op):
            raise OSError(code, os.strerror(code))
        return types.SimpleNamespace(flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_NB=fcntl.LOCK_NB, LOCK_UN=fcntl.LOCK_UN)

    monkeypatch.setattr(artifacts, "fcntl", failing(errno.ENOLCK))
    assert begin_stage(tmp_path / "a", Toy(), {"data": "d"}) is False
    finish_stage(tmp_path / "a", Toy(), {"data": "d"})
    assert begin_stage(tmp_path / "a", Toy(), {"data": "d"}) is True
    monkeypatch.setattr(artifacts, "fcntl", failing(errno.EIO))
    with pytest.raises(SongtraceError, match=r"\.lock: cannot lock the artifact \(Input/output error\)"):
        begin_stage(tmp_path / "b", Toy(), {"data": "d"})
    monkeypatch.setattr(artifacts, "fcntl", failing(errno.EAGAIN))
    with pytest.raises(SongtraceError, match="another songtrace process"):
        begin_stage(tmp_path / "c", Toy(), {"data": "d"})


def test_the_pickle_refusal_names_a_flag_only_where_the_command_has_one(tmp_path):
    """Review #16: --allow-pickle exists on `model import` only; elsewhere the refusal suggests the environment variable."""
    from songtrace.artifacts import allow_pickle, refuse_pickle

    with pytest.raises(SongtraceError) as e:
        refuse_pickle(tmp_path / "w.pt", "a checkpoint")
    assert "SONGTRACE_ALLOW_PICKLE=1" in str(e.value) and "--allow-pickle" not in str(e.value)
    with allow_pickle(False, flag="--allow-pickle"), pytest.raises(SongtraceError, match="allow it with --allow-pickle"):
        refuse_pickle(tmp_path / "w.pt", "a checkpoint")
