"""`songtrace cost measure | predict`: a throughput measured on the tiny model, predictions as JSON."""

import json

from typer.testing import CliRunner

from songtrace.cli import app


def test_cost_measure_writes_a_throughput_that_predict_reads(tmp_path, tiny_model, tiny_latents):
    runner = CliRunner()
    out = tmp_path / "tp.json"
    res = runner.invoke(app, ["cost", "measure", "--model", str(tiny_model), "--latents", str(tiny_latents), "--items", "2",
                              "--timesteps", "2", "--repeats", "1", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    measured = json.loads(res.stdout)["throughput"]
    assert measured["forward_flops_per_s"] > 0 and out.exists()
    assert measured["clock"] == "cpu" and measured["threads"] == 1  # the file says what its seconds are
    res = runner.invoke(app, ["cost", "predict", "--throughput", str(out), "--weights", "1e6", "--frames", "64", "--width", "64",
                              "--depth", "4", "--tracks", "100", "--gpus", "1", "--json"])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.stdout)
    assert pred["query"]["wall_seconds"] > pred["scoring"]["wall_seconds"] > 0
    assert pred["throughput"]["threads"] == 1


def test_cost_predict_for_seed_002_on_assumed_h100s_and_a_bad_gpu_name():
    runner = CliRunner()
    res = runner.invoke(app, ["cost", "predict", "--gpu", "h100-fp32", "--tracks", "115000", "--gpus", "8", "--json"])
    assert res.exit_code == 0, res.output
    step = json.loads(res.stdout)["unlearn_step"]["wall_seconds"] / 60
    assert 10 < step < 40  # the paper's one unlearning step took about 20 minutes on an H100
    res = runner.invoke(app, ["cost", "predict", "--gpu", "a100"])
    assert res.exit_code != 0 and "h100-bf16" in str(res.exception)
