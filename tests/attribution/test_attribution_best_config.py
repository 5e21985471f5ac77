"""One model identity end to end: `selfinfluence` saves the best configuration of a model, `attribute` and
`compare` start from it for that very model and not for another, and tuning a second model keeps the first's.

Nothing here writes a hash: the identities are whatever the writer (`selfinfluence_from_dirs`) and the
readers (`default_unlearn_config`, the `attribute` and `compare` commands) compute.
"""

import dataclasses
import json
import shutil

import pytest
from typer.testing import CliRunner

from songtrace.artifacts import load_safetensors, read_json, save_safetensors
from songtrace.attribution import FisherConfig, fit_fisher
from songtrace.attribution.best_config import BEST_CONFIGS, LEGACY_BEST_CONFIG, default_unlearn_config, resolve_unlearn_config
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.cli import app
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.selfinfluence.inputs import selfinfluence_from_dirs
from songtrace.selfinfluence.run import SelfInfluenceConfig

SEARCH = SelfInfluenceConfig(targets=2, stage_a_targets=1, lrs=(1e-4, 1e-2), steps=(1,), groups=("all", "self_attn"),
                             masks=("mixed", "both"), score_timesteps=2, unlearn_timesteps=4, embedder="dsp", fd=False)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_world, tiny_codec, tiny_model, tiny_latents):
    """A home with the tiny stack as "demo", a second model "other" (the same weights nudged), and model A tuned."""
    home = tmp_path_factory.mktemp("best_config") / "home"
    for stage, src in (("worlds", tiny_world), ("codecs", tiny_codec), ("models", tiny_model), ("latents", tiny_latents)):
        (home / stage).mkdir(parents=True)
        (home / stage / "demo").symlink_to(src)
    other = home / "models" / "other"
    shutil.copytree(tiny_model, other)
    weights = load_safetensors(other / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_safetensors(other / "model.safetensors", weights)
    fit_fisher(other, tiny_latents, FisherConfig(group="all"), home / "fisher" / "other")
    selfinfluence_from_dirs(SEARCH, home=home, out_dir=home / "runs" / "si_demo")
    return home


def best_of(home, run):
    return UnlearnConfig.from_dict(read_json(home / "runs" / run / "config.json")["best"]["unlearn"])


def cli_unlearn_config(home, tmp_path, command, model, fisher):
    """The unlearning config a command ran with, read back from its run directory."""
    train_id = LatentSet.load(home / "latents" / "demo").subset("train").ids[0]
    out = tmp_path / f"{command}-{model}"
    common = ["--home", str(home), "--model", model, "--fisher", fisher, "--out", str(out), "--score-timesteps", "2", "--json"]
    if command == "attribute":
        args = ["attribute", *common, "--query", f"train:{train_id}"]
    else:
        args = ["compare", *common, "--methods", "unlearning", "--queries", "1", "--sampler-steps", "2", "--planted-versions", "0",
                "--planted-artists", "0"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return UnlearnConfig.from_dict(read_json(out / "config.json")["config"]["unlearn"])


def test_attribute_and_compare_start_from_the_best_config_of_that_model_only(home, tmp_path):
    best = best_of(home, "si_demo")
    assert best != UnlearnConfig() and best.n_timesteps == SEARCH.unlearn_timesteps  # the search's, not the defaults
    config, source = default_unlearn_config(home, home / "models" / "demo")
    assert config == best and source is not None and source.startswith(str(home.joinpath(*BEST_CONFIGS)))
    assert default_unlearn_config(home, home / "models" / "other") == (UnlearnConfig(), None)
    # the commands: both take the tuned settings for the tuned model, the defaults for the other one
    assert cli_unlearn_config(home, tmp_path, "attribute", "demo", "demo") == best
    assert cli_unlearn_config(home, tmp_path, "compare", "demo", "demo") == best
    assert cli_unlearn_config(home, tmp_path, "attribute", "other", "other") == UnlearnConfig()
    assert cli_unlearn_config(home, tmp_path, "compare", "other", "other") == UnlearnConfig()
    # given settings go on top of the defaults
    lr_given, _ = resolve_unlearn_config(home, home / "models" / "demo", lr=0.5, steps=None)
    assert lr_given == dataclasses.replace(best, lr=0.5)
    with pytest.raises(SongtraceError, match="unknown unlearning settings"):
        resolve_unlearn_config(home, home / "models" / "demo", learning_rate=0.5)


def test_tuning_another_model_keeps_the_first_ones_config(home):
    a_before = default_unlearn_config(home, home / "models" / "demo")
    other_search = dataclasses.replace(SEARCH, unlearn_timesteps=6)
    selfinfluence_from_dirs(other_search, home=home, model="other", fisher="other", out_dir=home / "runs" / "si_other")
    assert len(list(home.joinpath(*BEST_CONFIGS).glob("*.json"))) == 2  # one file per model
    assert default_unlearn_config(home, home / "models" / "demo") == a_before
    b_config, b_source = default_unlearn_config(home, home / "models" / "other")
    assert b_config == best_of(home, "si_other") and b_config.n_timesteps == 6 and b_source != a_before[1]


def test_the_single_file_of_older_versions_is_still_read_for_its_model(home, tmp_path):
    legacy_home = tmp_path / "legacy"
    shutil.copytree(home, legacy_home, symlinks=True)
    demo_config, demo_source = default_unlearn_config(legacy_home, legacy_home / "models" / "demo")
    legacy = legacy_home.joinpath(*LEGACY_BEST_CONFIG)
    shutil.move(demo_source, legacy)  # what an older selfinfluence left behind, for the same model
    assert default_unlearn_config(legacy_home, legacy_home / "models" / "demo") == (demo_config, str(legacy))
    shutil.rmtree(legacy_home.joinpath(*BEST_CONFIGS))
    assert default_unlearn_config(legacy_home, legacy_home / "models" / "other") == (UnlearnConfig(), None)
    record = json.loads(legacy.read_text())
    record["unlearn"]["lr"] = -1.0
    legacy.write_text(json.dumps(record))
    with pytest.raises(SongtraceError, match="not a valid unlearning configuration"):
        default_unlearn_config(legacy_home, legacy_home / "models" / "demo")
