"""The opt-out evaluation on the tiny world: every figure is finite, reruns are identical, bad pairs are refused."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fixtures_codec import single_thread
from fixtures_optout import FORGET_ARTIST
from songtrace.attribution import UnlearnConfig
from songtrace.data.latents import LatentSet
from songtrace.embedders import load_embedder
from songtrace.embedders.songclap_train import config_for_world, train_songclap
from songtrace.errors import SongtraceError
from songtrace.optout import ForgetSpec, optout
from songtrace.optout.evaluate import (
    EVAL_FILE,
    FIGURES_FILE,
    EvalInputs,
    OptoutEvalConfig,
    _credit_part,
    _generate_all,
    evaluate_optout,
    gaps_to_retrain,
    load_inputs,
    loss_sets,
)
from songtrace.optout.prompts import FORGET_KINDS, make_prompts, strip_artist

TINY_EVAL = OptoutEvalConfig(loss_timesteps=4, max_items=8, prompts_per_kind=2, sampler_steps=4, credit_queries=2, fisher_timesteps=2,
                             score_timesteps=2, attribution=UnlearnConfig(n_timesteps=4, timestep_chunk=4), relearn_steps=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, optout_model, tiny_latents, tiny_world, optout_retrained):
    root = tmp_path_factory.mktemp("optout_eval")
    spec = ForgetSpec(artist=FORGET_ARTIST)
    with single_thread():
        ga = optout(optout_model, tiny_latents, spec, "ga", root / "ga", settings={"steps": 20, "lr": 3e-4}).out_dir
        songclap = root / "songclap"
        train_songclap(config_for_world(tiny_world, steps=6), tiny_world, songclap)
    return {"ga": ga, "retrained": optout_retrained, "embedder": load_embedder(songclap)}


@pytest.fixture(scope="module")
def result(setup, optout_model, tiny_latents, tiny_codec, tiny_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("optout_eval_out") / "eval"
    with single_thread():
        return evaluate_optout(setup["ga"], optout_model, tiny_latents, tiny_codec, setup["embedder"], TINY_EVAL,
                               retrained_dir=setup["retrained"], world_dir=tiny_world, out_dir=out), out


def _walk(d, path=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{path}{k}.")
        else:
            yield f"{path}{k}", v


def test_every_figure_is_there_and_finite(result):
    res, out = result
    assert set(res["figures"]) == {"original", "unlearned", "retrained"}
    for model, figs in res["figures"].items():
        assert set(figs) == {"loss", "membership", "closeness", "quality", "credit", "relearn"}, model
        assert set(figs["closeness"]) == {"caption", "naming", "style", "retain"}
        for key, value in _walk(figs):
            if key in ("quality.fd_note", "membership.reference") or (model == "original" and key == "relearn.recovered_fraction"):
                continue
            if key in ("quality.nonfinite_generations", "credit.skipped_nonfinite"):
                assert value == 0, model
                continue
            if key.split(".")[-1].startswith("n_"):
                assert isinstance(value, int) and value > 0, (model, key, value)
                continue
            assert isinstance(value, float) and math.isfinite(value), (model, key, value)
    assert res["figures"]["original"]["loss"].keys() == {"forget", "retain", "heldout"}
    assert res["figures"]["unlearned"]["loss"]["delta_forget"] > 0  # ascent raised the forget loss
    assert res["figures"]["original"]["quality"]["fd_vs_original"] == 0.0
    assert res["sets"]["nonmember_reference"] == "all valid-split tracks (the forgotten artists have none)"
    assert res["forget"]["artists"] == [FORGET_ARTIST] and res["forget"]["method"] == "ga"
    assert res["gaps"]["unlearned"]["loss.delta_forget"] == pytest.approx(res["figures"]["unlearned"]["loss"]["delta_forget"]
                                                             - res["figures"]["retrained"]["loss"]["delta_forget"])
    table = pd.read_parquet(out / FIGURES_FILE)
    assert {"original", "unlearned", "retrained", "gap_to_retrain"} == set(table["model"]) and np.isfinite(table["value"]).all()
    assert (out / EVAL_FILE).exists() and (out / "config.json").exists()


def test_a_rerun_gives_the_same_figures(result, setup, optout_model, tiny_latents, tiny_codec, tiny_world):
    with single_thread():
        again = evaluate_optout(setup["ga"], optout_model, tiny_latents, tiny_codec, setup["embedder"], TINY_EVAL,
                                retrained_dir=setup["retrained"], world_dir=tiny_world)
    first = result[0]
    assert again["figures"] == first["figures"] and again["gaps"] == first["gaps"]


def test_mismatched_models_are_refused(setup, optout_model, tiny_latents, tiny_codec, tiny_world, tmp_path):
    with pytest.raises(SongtraceError, match="not the model"):
        evaluate_optout(setup["ga"], setup["retrained"], tiny_latents, tiny_codec, setup["embedder"], TINY_EVAL, world_dir=tiny_world)
    other = optout(optout_model, tiny_latents, ForgetSpec(artist="The Highland Pipers"), "ga", tmp_path / "pipers", settings={"steps": 2})
    with pytest.raises(SongtraceError, match="not without the"):
        evaluate_optout(setup["ga"], optout_model, tiny_latents, tiny_codec, setup["embedder"], TINY_EVAL,
                        retrained_dir=other.out_dir, world_dir=tiny_world)
    with pytest.raises(SongtraceError, match="not an opt-out checkpoint"):
        evaluate_optout(optout_model, optout_model, tiny_latents, tiny_codec, setup["embedder"], TINY_EVAL, world_dir=tiny_world)


def test_gaps_are_unlearned_minus_retrained():
    figs = {"original": {"loss": {"forget": 1.0}}, "ga": {"loss": {"forget": 2.0, "n_x": 3}, "a": None},
            "rl": {"loss": {"forget": 1.0}}, "retrained": {"loss": {"forget": 1.5, "n_x": 1}}}
    assert gaps_to_retrain(figs) == {"ga": {"loss.forget": 0.5}, "rl": {"loss.forget": -0.5}}
    assert gaps_to_retrain({"unlearned": {"x": 1.0}}) == {}


def test_forget_prompts_name_the_artist_only_where_they_should(tiny_world):
    manifest = pd.read_parquet(tiny_world / "manifest.parquet")
    forget = manifest[manifest["artist"] == FORGET_ARTIST]["id"].tolist()
    retain = manifest[(manifest["artist"] != FORGET_ARTIST) & (manifest["split"] == "train")]["id"].tolist()
    prompts = make_prompts(manifest, forget, retain, 3)
    by_kind = {k: [p.text for p in prompts if p.kind == k] for k in ("caption", "naming", "style", "retain")}
    assert all(len(v) == 3 for v in by_kind.values())
    assert all(FORGET_ARTIST in t for t in by_kind["caption"] + by_kind["naming"])
    assert all(FORGET_ARTIST not in t for t in by_kind["style"] + by_kind["retain"])
    assert strip_artist("Fiddle tune by Kilfenora Road; G minor.", "Kilfenora Road") == "Fiddle tune; G minor."
    assert strip_artist("Kilfenora Road performs a jig in D.", "Kilfenora Road") == "A jig in D."


def test_the_report_shows_the_evaluation(result, tmp_path):
    from songtrace.report import build_report

    html = build_report([result[1]], tmp_path / "report.html").path.read_text()
    assert 'class="optout-figures"' in html and "gap_to_retrain" in html and "loss.delta_forget" in html


def test_nonmembers_are_the_forgotten_artists_unseen_tracks(tiny_latents):
    data = LatentSet.load(tiny_latents)
    train, valid = data.subset("train"), data.subset("valid")
    artist = next(a for a in valid.artists if a in set(train.artists))
    forget = [i for i, a in zip(train.ids, train.artists, strict=True) if a == artist]
    inputs = EvalInputs({}, {}, data, forget, forget, [artist])
    sets = loss_sets(inputs, OptoutEvalConfig(max_items=4))
    assert sets["nonmembers"] == [i for i, a in zip(valid.ids, valid.artists, strict=True) if a == artist]
    assert sets["nonmember_reference"] == ["valid-split tracks of the forgotten artists"]
    assert sets["forget"] == forget and len(sets["retain"]) == 4 and not set(sets["retain"]) & set(forget)
    assert set(sets["heldout"]) <= set(valid.ids)


def test_credit_skips_nan_generations_and_reports_them(setup, optout_model, tiny_latents, tiny_codec, tiny_world):
    """A generation whose latent came out NaN is no attribution query: the credit part finishes on the finite ones and
    counts the skipped one (before, the NaN query made attribution abort with "unlearning query … diverged")."""
    from songtrace.codec import load_codec
    from songtrace.world import load_world

    inputs = load_inputs(setup["ga"], optout_model, tiny_latents, None)
    world = load_world(tiny_world)
    retain = [i for i in inputs.latents.subset("train").ids if i not in set(inputs.forgotten_ids)]
    prompts = make_prompts(world.manifest, inputs.forget_ids, retain, TINY_EVAL.prompts_per_kind, TINY_EVAL.seed)
    with single_thread():
        gens = _generate_all(inputs, TINY_EVAL, load_codec(tiny_codec), prompts)
        first = gens.rows(FORGET_KINDS)[0]  # a query the credit part would pick
        gens.tracks["unlearned"][first].latent[:] = float("nan")
        per_model = {name: {} for name in inputs.models}
        _credit_part(inputs, TINY_EVAL, gens, per_model)
    assert per_model["unlearned"]["credit"]["skipped_nonfinite"] == 1
    assert per_model["unlearned"]["credit"]["n_queries"] == TINY_EVAL.credit_queries
    assert math.isfinite(per_model["unlearned"]["credit"]["artist_share"])
    assert per_model["original"]["credit"]["skipped_nonfinite"] == 0


def test_figure_at_reads_a_dotted_path_and_none_where_missing():
    from songtrace.optout.figures import figure_at

    figs = {"closeness": {"caption": {"artist_probability": 0.25}}, "credit": {"artist_share": None}, "loss": 1.0}
    assert figure_at(figs, "closeness.caption.artist_probability") == 0.25
    assert figure_at(figs, "closeness.caption") == {"artist_probability": 0.25}
    assert figure_at(figs, "credit.artist_share") is None and figure_at(figs, "credit.n_queries") is None
    assert figure_at(figs, "loss.delta_forget") is None  # a number is no branch
