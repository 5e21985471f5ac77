"""Artifacts are verifiable, replaced only by their own kind, written by one process at a time, and a failed run's pending state
never blocks the corrected rerun (issue 15, part 2)."""

import dataclasses
import importlib
import math
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


def _finished(out, config=Toy(), payload=b"weights" * 100):
    assert begin_stage(out, config, {"data": "d"}) is False
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
