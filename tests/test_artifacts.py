"""Config round-trips, stage directories (skip / resume / refuse), atomic writes."""

import dataclasses

import pytest
import torch

from songtrace.artifacts import (
    StageConfig,
    atomic_path,
    begin_stage,
    finish_stage,
    hash_tensors,
    load_stage_config,
    read_json,
)
from songtrace.errors import SongtraceError


@dataclasses.dataclass(frozen=True)
class ToyConfig(StageConfig):
    lr: float = 1e-3
    steps: int = 10
    groups: tuple[str, ...] = ("all",)
    name: str | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SongtraceError("steps must be >= 1")


def test_config_round_trip_keeps_types():
    c = ToyConfig(lr=1.0, steps=3, groups=("a", "b"), name="x")
    back = ToyConfig.from_dict(c.to_dict())
    assert back == c
    assert isinstance(back.groups, tuple) and isinstance(back.lr, float)
    assert c.config_hash() == back.config_hash() != ToyConfig().config_hash()


def test_config_rejects_unknown_keys_and_invalid_values():
    with pytest.raises(SongtraceError, match="unknown config keys"):
        ToyConfig.from_dict({"lr": 1.0, "bogus": 2})
    with pytest.raises(SongtraceError, match="steps"):
        ToyConfig(steps=0)


def test_stage_skip_resume_refuse(tmp_path):
    out = tmp_path / "stage"
    c = ToyConfig()
    assert begin_stage(out, c, {"data": "abc"}) is False  # fresh
    assert begin_stage(out, c, {"data": "abc"}) is False  # unfinished: resume
    finish_stage(out, c, {"data": "abc"}, content_hash="h")
    assert begin_stage(out, c, {"data": "abc"}) is True  # finished: skip
    assert load_stage_config(out, ToyConfig) == c
    with pytest.raises(SongtraceError, match="different config"):
        begin_stage(out, ToyConfig(steps=5), {"data": "abc"})
    assert begin_stage(out, ToyConfig(steps=5), {"data": "abc"}, overwrite=True) is False
    assert not (out / "config.json").exists()


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_hash_tensors_sensitive_to_content_and_names():
    a = {"w": torch.zeros(3)}
    assert hash_tensors(a) == hash_tensors({"w": torch.zeros(3)})
    assert hash_tensors(a) != hash_tensors({"w": torch.tensor([0.0, 0.0, 1e-9])})
    assert hash_tensors(a) != hash_tensors({"v": torch.zeros(3)})


def test_read_json_names_the_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{nope")
    with pytest.raises(SongtraceError, match=r"bad\.json"):
        read_json(p)
