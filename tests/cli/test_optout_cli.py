"""`songtrace optout` and `songtrace optout-eval` through the real typer app; the checkpoint works as --model everywhere."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fixtures_optout import FORGET_ARTIST
from songtrace.cli import app
from songtrace.cli.optout import parse_settings
from songtrace.errors import SongtraceError

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_world, tiny_codec, tiny_latents, optout_model):
    """A data directory whose world, codec, latents and model are the tiny ones (named `tiny`)."""
    home = tmp_path_factory.mktemp("optout_home")
    for stage, path in (("worlds", tiny_world), ("codecs", tiny_codec), ("latents", tiny_latents), ("models", optout_model)):
        (home / stage).mkdir()
        (home / stage / "tiny").symlink_to(path, target_is_directory=True)
    return home


def test_settings_parse_as_json_with_dotted_keys_and_shortcuts():
    assert parse_settings(["lam=0.5", "pairing=forget_captions", "mask_forget=false"], "bounded", {"steps": 9, "lr": None}) == {
        "lam": 0.5, "pairing": "forget_captions", "mask_forget": False, "steps": 9}
    assert parse_settings(["unlearn.damping=0.1"], "newton", {"lr": 1e-4}) == {"unlearn": {"damping": 0.1, "lr": 1e-4}}
    with pytest.raises(SongtraceError, match="KEY=VALUE"):
        parse_settings(["lr"], "ga", {})


def test_list_methods():
    methods = _run("optout", "--list-methods", "--json")
    assert sorted(methods) == sorted(["ga", "rl", "graddiff", "ewc", "newton", "salun", "bounded", "retrain"])


def test_optout_then_the_checkpoint_is_a_model_for_every_command(home, tmp_path):
    common = ["--model", "tiny", "--latents", "tiny", "--home", home]
    summary = _run("optout", "--artist", FORGET_ARTIST, "--method", "ga", "--steps", 4, "--name", "forgot", *common, "--json")
    ckpt = home / "models" / "forgot"
    assert summary["checkpoint"] == str(ckpt) and summary["forget"]["n_forget"] == 3 and summary["settings"]["steps"] == 4
    gen = _run("generate", "--prompt", "a fiddle tune", "--model", "forgot", "--codec", "tiny", "--seconds", 1, "--steps", 2,
               "--out", tmp_path / "x.wav", "--home", home, "--json")
    assert gen["model_hash"] == summary["identity"]
    _run("fisher", "--model", "forgot", "--latents", "tiny", "--timesteps", 1, "--name", "forgot", "--home", home, "--json")
    attr = _run("attribute", "-q", "train:t0000", "--model", "forgot", "--latents", "tiny", "--fisher", "forgot", "--timesteps", 2,
                "--score-timesteps", 2, "--home", home, "--json")
    assert len(attr["queries"][0]["top"]) == 11
    ids = tmp_path / "ids.txt"
    ids.write_text("t0001\n")
    second = _run("optout", "--ids", ids, "--method", "newton", "--lr", 1e-5, "--set", "unlearn.n_timesteps=2", "--set",
                  "fisher_timesteps=1", "--model", "forgot", "--latents", "tiny", "--home", home, "--json")
    assert second["forget"]["n_forget"] == 1 and second["original_model"]["identity"] == summary["original_model"]["identity"]


def test_bad_input_raises_one_clear_error_and_writes_nothing(home, tmp_path):
    before = sorted(p.name for p in (home / "models").iterdir())
    cases = [
        (["--artist", "Nobody", "--method", "ga"], "unknown artist 'Nobody'"),
        (["--artist", FORGET_ARTIST, "--method", "nope"], "unknown opt-out method"),
        (["--artist", FORGET_ARTIST, "--method", "ga", "--lr", "nan"], "finite"),
        (["--artist", FORGET_ARTIST, "--caption-regex", "x", "--method", "ga"], "exactly one way"),
        (["--caption-regex", "zzz", "--method", "ga"], "matches no caption"),
    ]
    for args, match in cases:
        result = runner.invoke(app, ["optout", *args, "--model", "tiny", "--latents", "tiny", "--home", str(home)])
        assert result.exit_code != 0 and isinstance(result.exception, SongtraceError), (args, result.output)
        assert match in str(result.exception) and "\n" not in str(result.exception)
    assert sorted(p.name for p in (home / "models").iterdir()) == before


def test_optout_eval_prints_the_table_and_writes_json(home):
    _run("optout", "--artist", FORGET_ARTIST, "--method", "bounded", "--steps", 30, "--name", "bounded", "--model", "tiny",
         "--latents", "tiny", "--home", home, "--json")
    args = ["optout-eval", "bounded", "--original", "tiny", "--latents", "tiny", "--codec", "tiny", "--embedder", "dsp", "--timesteps", 2,
            "--prompts", 1, "--sampler-steps", 2, "--credit-queries", 1, "--relearn-steps", 1, "--home", home]
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "forget loss change" in result.output and "membership AUC" in result.output
    record = json.loads((home / "models" / "bounded" / "eval" / "eval.json").read_text())
    assert record["figures"]["unlearned"]["quality"]["alignment"] is None  # dsp has no text side
    assert record["forget"]["method"] == "bounded" and record["gaps"] == {}
