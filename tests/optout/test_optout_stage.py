"""The opt-out stage: configs round-trip, bad input is one clear error that writes nothing, runs resume and chain."""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os

import pytest
import torch

from fixtures_codec import single_thread
from fixtures_optout import FORGET_ARTIST
from songtrace.artifacts import artifact_hash, hash_tensors, load_safetensors, read_json, write_json
from songtrace.attribution import FisherConfig, compute_fisher, unlearn
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import MODEL_FILE, load_model, load_task
from songtrace.optout import METHODS, ForgetSpec, NewtonConfig, OptoutConfig, load_optout, method_config, optout, read_ids_file
from songtrace.optout.methods import run_newton
from songtrace.optout.run import ELAPSED_FILE, FORGET_FILE, prepare

QUICK_GA = {"steps": 12, "lr": 3e-4, "checkpoint_every": 4}


def test_configs_round_trip_and_fill_defaults():
    for name, m in METHODS.items():
        cfg = m.config()
        assert type(cfg).from_dict(cfg.to_dict()) == cfg, name
    spec = ForgetSpec(ids=("a", "b"), ids_source="ids.txt")
    c = OptoutConfig(method="newton", settings={"unlearn": {"lr": 1e-4}}, forget=spec)
    assert OptoutConfig.from_dict(c.to_dict()) == c
    assert c.settings["fisher_timesteps"] == NewtonConfig().fisher_timesteps and c.settings["unlearn"]["lr"] == 1e-4
    assert isinstance(c.method_config, NewtonConfig) and c.method_config.unlearn.lr == 1e-4
    assert ForgetSpec.from_dict(spec.to_dict()) == spec and spec.kind == "ids"


def test_loop_settings_take_numpy_numbers():
    """Review #16: the loop checks its numbers with artifacts.check_finite (its own copy refused numpy scalars)."""
    import numpy as np

    from songtrace.optout.loop import LoopConfig

    cfg = LoopConfig(lr=np.float32(1e-4), steps=np.int64(5), checkpoint_every=np.int32(5))
    assert LoopConfig.from_dict(cfg.to_dict()) == cfg and cfg.steps == 5
    with pytest.raises(SongtraceError, match="lr must be a finite number"):
        LoopConfig(lr=np.float32("nan"))


@pytest.mark.parametrize(("settings", "match"), [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"steps": 0}, "steps must be > 0"),
    ({"cfg_dropout": 1.0}, "cfg_dropout"),
    ({"bogus": 1}, "unknown config keys"),
])
def test_bad_settings_name_the_field(settings, match):
    with pytest.raises(SongtraceError, match=match):
        method_config("ga", settings)


def test_bad_method_and_spec_are_refused():
    with pytest.raises(SongtraceError, match="valid: ga, rl, graddiff, ewc, newton, salun, bounded, retrain"):
        method_config("forget-harder")
    with pytest.raises(SongtraceError, match="exactly one way"):
        ForgetSpec(artist="x", caption_regex="y")
    with pytest.raises(SongtraceError, match="not a valid regular expression"):
        ForgetSpec(caption_regex="(unclosed")
    with pytest.raises(SongtraceError, match=r"fraction must be in \(0, 1\]"):
        method_config("salun", {"fraction": 1.5})


def test_ids_file_parsing(tmp_path):
    (tmp_path / "ids.txt").write_text("# opt-out of 2025-01-01\nt0000\n\nt0003  # a comment\nt0000\n")
    assert read_ids_file(tmp_path / "ids.txt") == ("t0000", "t0003")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(SongtraceError, match=r"empty\.txt: lists no ids"):
        read_ids_file(tmp_path / "empty.txt")
    with pytest.raises(SongtraceError, match="not found"):
        read_ids_file(tmp_path / "missing.txt")


def _bad_inputs(tiny_latents, tiny_world, tmp_path):
    data = LatentSet.load(tiny_latents)
    train_ids = data.subset("train").ids
    valid_id = data.subset("valid").ids[0]
    other = tmp_path / "other_latents"
    changed = LatentSet(**{**data.__dict__, "latents": data.latents + 0.01})
    changed.save(other)
    return [
        (dict(spec=ForgetSpec(artist="Nobody")), r"unknown artist 'Nobody'.*artists: Capella Sistina Revival \(2\), Kilfenora Road \(3\)"),
        (dict(spec=ForgetSpec(caption_regex="banjo")), "matches no caption"),
        (dict(spec=ForgetSpec(caption_regex=".")), "whole training data"),
        (dict(spec=ForgetSpec(ids=tuple(train_ids))), "whole training data"),
        (dict(spec=ForgetSpec(ids=("t0000", "nope"))), r"1 of 2 ids are not in the model's training data: 1 not in"),
        (dict(spec=ForgetSpec(ids=(valid_id,))), "held out, not trained on"),
        (dict(spec=ForgetSpec(artist=FORGET_ARTIST), latents=other), "was not trained on"),
        (dict(spec=ForgetSpec(artist=FORGET_ARTIST), method="nope"), "unknown opt-out method"),
        (dict(spec=ForgetSpec(artist=FORGET_ARTIST), settings={"lr": float("inf")}), "finite"),
    ]


def test_every_bad_input_is_one_line_and_writes_nothing(tmp_path, optout_model, tiny_latents, tiny_world):
    for i, (kw, match) in enumerate(_bad_inputs(tiny_latents, tiny_world, tmp_path)):
        out = tmp_path / f"out{i}"
        with pytest.raises(SongtraceError, match=match) as err:
            optout(optout_model, kw.get("latents", tiny_latents), kw["spec"], kw.get("method", "ga"), out,
                   settings=kw.get("settings"), world_dir=tiny_world)
        assert "\n" not in str(err.value)
        assert not out.exists(), match
    with pytest.raises(SongtraceError, match="is the model being unlearned"):
        optout(optout_model, tiny_latents, ForgetSpec(artist=FORGET_ARTIST), "ga", optout_model)


def test_caption_regex_selects_by_caption(tmp_path, optout_model, tiny_latents, tiny_world):
    config = OptoutConfig(method="ga", forget=ForgetSpec(caption_regex=r"bagpipes"))
    _, forget_set, _ = prepare(optout_model, tiny_latents, config, world_dir=tiny_world)
    assert forget_set.artists == {"The Highland Pipers": 3}
    with pytest.raises(SongtraceError, match="pass the world"):
        prepare(optout_model, tiny_latents, config, home=tmp_path / "empty-home")


@pytest.fixture(scope="module")
def ga_dir(tmp_path_factory, optout_model, tiny_latents):
    out = tmp_path_factory.mktemp("optout_stage") / "ga"
    with single_thread():
        optout(optout_model, tiny_latents, ForgetSpec(artist=FORGET_ARTIST), "ga", out, settings=QUICK_GA)
    return out


def test_checkpoint_records_what_it_forgot_and_loads_as_a_model(ga_dir, optout_model, tiny_latents):
    record = load_optout(ga_dir)
    original = load_task(optout_model).identity()
    assert record["inputs"]["model"] == original == record["original_model"]["identity"] == record["parent_model"]["identity"]
    assert record["config"]["method"] == "ga" and record["config"]["settings"]["steps"] == 12
    assert record["forget"]["artists"] == {FORGET_ARTIST: 3} and len(record["forget_ids"]) == 3
    assert record["forget_hash"] == record["inputs"]["forget"] and record["seconds"] > 0
    task = load_task(ga_dir)
    weights = load_safetensors(ga_dir / MODEL_FILE)
    assert task.identity() == hash_tensors(weights) == artifact_hash(ga_dir) != original
    assert not load_model(ga_dir).training
    table = __import__("pandas").read_parquet(ga_dir / FORGET_FILE)
    assert sorted(table[table["set"] == "forget"]["id"]) == sorted(record["forget_ids"]) and len(table) == 11


def test_rerun_skips_and_a_different_config_is_refused(ga_dir, optout_model, tiny_latents):
    stamp = (ga_dir / MODEL_FILE).stat().st_mtime_ns
    again = optout(optout_model, tiny_latents, ForgetSpec(artist=FORGET_ARTIST), "ga", ga_dir, settings=QUICK_GA)
    assert again.finished and (ga_dir / MODEL_FILE).stat().st_mtime_ns == stamp
    with pytest.raises(SongtraceError, match="different config"):
        optout(optout_model, tiny_latents, ForgetSpec(artist=FORGET_ARTIST), "ga", ga_dir, settings={**QUICK_GA, "lr": 1e-3})


def test_an_interrupted_run_resumes_bit_for_bit(tmp_path, ga_dir, optout_model, tiny_latents):
    spec = ForgetSpec(artist=FORGET_ARTIST)
    with single_thread():
        first = optout(optout_model, tiny_latents, spec, "ga", tmp_path / "r", settings=QUICK_GA, max_steps=5)
        assert not first.finished and not (tmp_path / "r" / MODEL_FILE).exists()
        fd = os.open(tmp_path / "r" / ".lock", os.O_RDWR)  # review #1: stopped early, it unlocked (another process may resume)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        second = optout(optout_model, tiny_latents, spec, "ga", tmp_path / "r", settings=QUICK_GA, max_steps=4)
        assert not second.finished
        done = optout(optout_model, tiny_latents, spec, "ga", tmp_path / "r", settings=QUICK_GA)
    assert done.finished and artifact_hash(tmp_path / "r") == artifact_hash(ga_dir)
    assert done.record["method_log"]["curve"] == read_json(ga_dir / "config.json")["method_log"]["curve"]


def test_a_leftover_elapsed_file_without_cpu_seconds_is_resumed(tmp_path, optout_model, tiny_latents):
    """state/elapsed.json holding only {"seconds"} (an older version's) adds up instead of a KeyError in the run's `finally`."""
    spec = ForgetSpec(artist=FORGET_ARTIST)
    with single_thread():
        optout(optout_model, tiny_latents, spec, "ga", tmp_path / "r", settings=QUICK_GA, max_steps=4)
        write_json(tmp_path / "r" / ELAPSED_FILE, {"seconds": 7.0})
        again = optout(optout_model, tiny_latents, spec, "ga", tmp_path / "r", settings=QUICK_GA, max_steps=4)
    assert not again.finished
    spent = read_json(tmp_path / "r" / ELAPSED_FILE)
    assert spent["seconds"] > 7.0 and spent["cpu_seconds"] >= 0.0


def test_sequential_opt_outs_chain_and_refuse_what_is_already_forgotten(tmp_path, ga_dir, optout_model, tiny_latents):
    with single_thread():
        second = optout(ga_dir, tiny_latents, ForgetSpec(artist="The Highland Pipers"), "ga", tmp_path / "two", settings=QUICK_GA)
    record = second.record
    assert record["original_model"]["identity"] == load_task(optout_model).identity()
    assert record["parent_model"]["identity"] == load_task(ga_dir).identity() and record["parent_model"]["method"] == "ga"
    assert len(record["forgotten_ids"]) == 6 and [h["artists"] for h in record["history"]] == [{FORGET_ARTIST: 3},
                                                                                                 {"The Highland Pipers": 3}]
    assert record["forget"]["n_retain"] == 5
    with pytest.raises(SongtraceError, match="already forgotten"):
        optout(tmp_path / "two", tiny_latents, ForgetSpec(artist=FORGET_ARTIST), "ga", tmp_path / "three")
    gone = record["forgotten_ids"][0]
    with pytest.raises(SongtraceError, match="already forgotten by an earlier opt-out"):
        optout(tmp_path / "two", tiny_latents, ForgetSpec(ids=(gone,)), "ga", tmp_path / "three")
    assert not (tmp_path / "three").exists()


def test_newton_on_a_set_is_attribution_unlearn_of_the_whole_batch(optout_model, tiny_latents):
    config = OptoutConfig(method="newton", forget=ForgetSpec(artist=FORGET_ARTIST),
                          settings={"unlearn": {"lr": 1e-4, "steps": 2, "n_timesteps": 4, "timestep_chunk": 2}, "item_chunk": 1})
    setup, _, _ = prepare(optout_model, tiny_latents, config)
    cfg = config.method_config
    with single_thread():
        setup.fisher = compute_fisher(setup.task, setup.training, FisherConfig(n_timesteps=2))
        outcome = run_newton(setup, cfg, None, None)
        delta = unlearn(setup.task, setup.fisher, setup.forget.batch(range(len(setup.forget))), cfg.unlearn, n_train=len(setup.training))
    theta0 = dict(setup.task.module.named_parameters())
    for k, d in delta.items():
        assert torch.allclose(outcome.params[k], theta0[k].detach() + d, atol=1e-7, rtol=1e-5), k
    assert math.isfinite(outcome.log["delta_norm"]) and outcome.log["delta_norm"] > 0
    assert dataclasses.asdict(cfg.unlearn)["steps"] == 2
