"""Sequential opt-outs chain checkpoints and are scored on every earlier set; relearning tunes a copy only."""

from __future__ import annotations

import pytest
import torch

from fixtures_codec import single_thread
from fixtures_optout import FORGET_ARTIST
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task
from songtrace.optout import ForgetSpec
from songtrace.optout.evaluate import OptoutEvalConfig, _loss_part, load_inputs, loss_sets
from songtrace.optout.figures import relearn
from songtrace.optout.robustness import comeback, forgetting_matrix, sequential_optout


def test_sequential_optouts_and_their_forgetting_matrix(tmp_path, optout_model, tiny_latents):
    specs = [ForgetSpec(artist=FORGET_ARTIST), ForgetSpec(artist="The Highland Pipers")]
    with single_thread():
        steps = sequential_optout(optout_model, tiny_latents, specs, "ga", tmp_path, settings={"steps": 15})
    assert [s.out_dir.name for s in steps] == ["step1", "step2"]
    assert steps[1].record["parent_model"]["identity"] == load_task(steps[0].out_dir).identity()
    data = LatentSet.load(tiny_latents)
    sets = [s.record["forget_ids"] for s in steps]
    retain = [i for i in data.subset("train").ids if i not in set(steps[-1].record["forgotten_ids"])]
    with single_thread():
        m = forgetting_matrix(load_task(optout_model), [load_task(s.out_dir) for s in steps], data, sets, retain, 4, 0)
        m0 = forgetting_matrix(load_task(optout_model), [load_task(optout_model)], data, sets, retain, 4, 0)
    assert len(m) == 2 and all(len(r) == 2 for r in m)
    assert m0 == [[0.0, 0.0]]  # the original against itself: exactly no change (common random numbers)
    assert m[0][0] > 0 and m[1][1] > 0  # each step forgot its own set
    # optout-eval's `history` of the chained checkpoint is the matrix's last row (same plan, all of the retain set)
    inputs = load_inputs(steps[-1].out_dir, optout_model, tiny_latents, None)
    config = OptoutEvalConfig(loss_timesteps=4, max_items=len(retain), seed=0)
    per_model = {name: {} for name in inputs.models}
    with single_thread():
        _loss_part(inputs, config, loss_sets(inputs, config), per_model)
    history = per_model["unlearned"]["history"]
    assert [history[f"optout_{j + 1}"]["forget_minus_retain"] for j in range(2)] == pytest.approx(m[-1], abs=1e-6)
    assert [h["artists"] for h in history.values()] == [FORGET_ARTIST, "The Highland Pipers"]
    assert all(h["delta_forget"] == 0.0 for h in per_model["original"]["history"].values())
    with pytest.raises(SongtraceError, match="no forget sets"):
        sequential_optout(optout_model, tiny_latents, [], "ga", tmp_path / "none")


def test_comeback_is_the_share_of_the_margin_lost():
    assert comeback([[2.0, 0.0], [1.0, 3.0]]) == [0.5, 0.0]
    assert comeback([[-1.0]]) == [None]


def test_relearning_tunes_a_copy(optout_model, tiny_latents):
    task = load_task(optout_model)
    before = {k: v.detach().clone() for k, v in task.module.named_parameters()}
    retain = LatentSet.load(tiny_latents).subset("train")
    with single_thread():
        tuned = relearn(task, retain, 3, 1e-3, 4, 0, False)
        again = relearn(task, retain, 3, 1e-3, 4, 0, False)
    assert all(torch.equal(before[k], v) for k, v in task.module.named_parameters())
    moved = dict(tuned.module.named_parameters())
    assert any(not torch.equal(before[k], moved[k]) for k in before)
    assert tuned.identity() == again.identity()
