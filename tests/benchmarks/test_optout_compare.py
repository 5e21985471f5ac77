"""benchmarks/optout_compare.py's tuning on the tiny world: a method whose every grid setting fails is recorded, not a crash."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from fixtures_codec import single_thread
from fixtures_optout import FORGET_ARTIST
from songtrace.optout.evaluate import OptoutEvalConfig

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "optout_compare.py"


def _bench():
    spec = importlib.util.spec_from_file_location("optout_compare_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_method_whose_every_tuning_setting_fails_is_recorded_and_left_out(tmp_path, optout_model, tiny_latents):
    bench = _bench()
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "latents").mkdir()
    (home / "models" / "original").symlink_to(optout_model)
    (home / "latents" / "bench").symlink_to(tiny_latents)
    grid = {"ga": [{"lr": 1e-4, "steps": 2}], "rl": [{"lr": -1.0}, {"lr": float("nan")}], "retrain": [{}]}  # rl: both refused
    setting = bench.Setting(tracks=12, max_seconds=2.0, codec_hidden=8, codec_steps=1, songclap_steps=1, width=16, depth=2,
                            train_steps=1, eval=OptoutEvalConfig(loss_timesteps=2), sequential_methods=("ga", "rl"), grid=grid)
    with single_thread():
        out = bench.tune(home, FORGET_ARTIST, setting)
    assert set(out["picked"]) == {"ga", "retrain"} and out["picked"]["ga"] == {"lr": 1e-4, "steps": 2}
    assert "rl" in out["failed"] and "every tuning setting failed (2)" in out["failed"]["rl"]
    assert len(out["runs"]["rl"]) == 2 and all("error" in r for r in out["runs"]["rl"])
