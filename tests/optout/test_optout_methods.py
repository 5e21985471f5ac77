"""Every opt-out method forgets on the tiny model: the forget loss rises more than the retain loss (fixed plan)."""

from __future__ import annotations

import pytest
import torch

from fixtures_codec import single_thread
from fixtures_optout import FORGET_ARTIST
from songtrace.artifacts import load_safetensors, read_json
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import MODEL_FILE, load_task
from songtrace.optout import METHODS, ForgetSpec, optout
from songtrace.optout.methods import fixed_plan_loss

# small step budgets keep the tests quick; the defaults are for real models
SETTINGS = {
    "ga": {"steps": 30, "lr": 3e-4},
    "rl": {"steps": 60, "lr": 3e-4},
    "graddiff": {"steps": 40, "lr": 3e-4},
    "ewc": {"steps": 40, "lr": 3e-4, "fisher_timesteps": 2},
    "newton": {"unlearn": {"lr": 1e-4, "n_timesteps": 8, "timestep_chunk": 8}, "fisher_timesteps": 2},
    "salun": {"steps": 40, "lr": 1e-3, "saliency_timesteps": 8},
    "bounded": {"steps": 200, "lr": 3e-4, "check_every": 5},
    "retrain": {},
}


@pytest.fixture(scope="module")
def unlearned(tmp_path_factory, optout_model, tiny_latents, optout_retrained):
    """Method name -> checkpoint directory, each forgetting FORGET_ARTIST from `optout_model`."""
    root = tmp_path_factory.mktemp("optout_methods")
    with single_thread():
        out = {name: optout(optout_model, tiny_latents, ForgetSpec(artist=FORGET_ARTIST), name, root / name,
                            settings=SETTINGS[name]).out_dir for name in METHODS if name != "retrain"}
    return {**out, "retrain": optout_retrained}


def _sets(tiny_latents):
    train = LatentSet.load(tiny_latents).subset("train")
    forget_ids = [i for i, a in zip(train.ids, train.artists, strict=True) if a == FORGET_ARTIST]
    forget = train.take([train.ids.index(i) for i in forget_ids])
    return forget, train.without(forget_ids)


def _null_captions(data: LatentSet) -> LatentSet:
    return LatentSet(**{**data.__dict__, "text": torch.zeros_like(data.text), "text_mask": torch.zeros_like(data.text_mask)})


def _losses(model_dir, tiny_latents) -> tuple[float, float, float]:
    """(forget loss, retain loss, forget loss with captions dropped) on a fixed plan (seed 7, T=16)."""
    task = load_task(model_dir)
    forget, retain = _sets(tiny_latents)
    with single_thread():
        return (fixed_plan_loss(task, None, forget, 16, 7, True), fixed_plan_loss(task, None, retain, 16, 7, False),
                fixed_plan_loss(task, None, _null_captions(forget), 16, 7, True))


def test_every_method_is_covered():
    assert set(SETTINGS) == set(METHODS)


@pytest.mark.parametrize("name", ["ga", "graddiff", "ewc", "newton", "salun", "bounded", "retrain"])
def test_method_raises_the_forget_loss_more_than_the_retain_loss(name, unlearned, optout_model, tiny_latents):
    f0, r0, _ = _losses(optout_model, tiny_latents)
    f1, r1, _ = _losses(unlearned[name], tiny_latents)
    assert f1 - f0 > 0
    assert (f1 - f0) > (r1 - r0) + 0.01, f"{name}: forget {f0:.4f}->{f1:.4f}, retain {r0:.4f}->{r1:.4f}"


def test_random_labels_remove_what_the_artist_caption_adds(unlearned, optout_model, tiny_latents):
    """Seed 000's labelling (forget audio under other captions) makes the artist's captions no help on its tracks."""
    f0, _, n0 = _losses(optout_model, tiny_latents)
    f1, _, n1 = _losses(unlearned["rl"], tiny_latents)
    advantage_before, advantage_after = n0 - f0, n1 - f1
    assert advantage_before > 0.01
    assert advantage_after < 0.5 * advantage_before


def test_bounded_stops_at_the_null_loss(unlearned):
    log = read_json(unlearned["bounded"] / "config.json")["method_log"]
    assert "reached the null loss" in log["stop_reason"] and log["steps_run"] < SETTINGS["bounded"]["steps"]
    assert log["forget_loss_last_check"] >= log["null_loss"] > log["forget_loss_start"]


def test_salun_moves_only_the_salient_weights(unlearned, optout_model):
    before, after = load_safetensors(optout_model / MODEL_FILE), load_safetensors(unlearned["salun"] / MODEL_FILE)
    log = read_json(unlearned["salun"] / "config.json")["method_log"]
    moved = sum(int((before[k] != after[k]).sum()) for k in before)
    assert 0 < moved <= log["salient_weights"] == round(0.5 * log["target_weights"])
    untouched = [k for k in before if not k.startswith("layers.")]
    assert untouched and all(torch.equal(before[k], after[k]) for k in untouched)


def test_retrain_excludes_exactly_the_forget_set(unlearned, tiny_latents):
    record = read_json(unlearned["retrain"] / "config.json")
    forget, retain = _sets(tiny_latents)
    assert sorted(record["forget_ids"]) == sorted(forget.ids) == sorted(record["forgotten_ids"])
    assert record["method_log"]["train_items"] == len(retain) and record["method_log"]["steps"] == 200
    assert not (unlearned["retrain"] / "retrain").exists() and not (unlearned["retrain"] / "state").exists()


def test_common_settings_nest_where_each_method_keeps_them():
    from songtrace.optout.methods import common_settings, method_config

    for name in ("ga", "bounded", "newton"):
        config = method_config(name, common_settings(name, seed=3, lr=2e-5, steps=None))  # every method takes the common names
        lr = config.unlearn.lr if name == "newton" else config.lr
        assert lr == 2e-5
    assert common_settings("newton", lr=1e-5, seed=0) == {"unlearn": {"lr": 1e-5, "seed": 0}}
    with pytest.raises(SongtraceError, match="unknown config keys"):
        method_config("newton", {"seed": 0, "lr": 1e-5})  # what the demo passed before: newton keeps them under unlearn
