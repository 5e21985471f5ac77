"""`songtrace attribute` starts from the configuration `songtrace selfinfluence` saved, for that model only."""

import shutil

from songtrace.artifacts import artifact_hash, write_json
from songtrace.attribution.run import default_unlearn_config
from songtrace.attribution.unlearn import UnlearnConfig


def test_best_config_is_used_only_for_the_model_it_was_found_for(tmp_path, tiny_model):
    home = tmp_path / "home"
    assert default_unlearn_config(home, tiny_model) == (UnlearnConfig(), None)
    best = UnlearnConfig(lr=3e-4, steps=2, group="self_attn", mask="both")
    path = home / "attribution" / "best_config.json"
    write_json(path, {"unlearn": best.to_dict(), "inputs": {"model": artifact_hash(tiny_model)}})
    assert default_unlearn_config(home, tiny_model) == (best, str(path))
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model, other)
    write_json(path, {"unlearn": best.to_dict(), "inputs": {"model": "not-this-model"}})
    assert default_unlearn_config(home, other) == (UnlearnConfig(), None)
