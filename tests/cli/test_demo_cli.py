"""The CLI lists every stage, and `songtrace demo --quick` runs the whole story end to end (and skips it all on a rerun)."""

import json
import math
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from songtrace.cli import app
from songtrace.cli.demo import DemoConfig
from songtrace.errors import SongtraceError

STAGES = ["world", "codec", "encode", "train", "generate", "embedder", "fd", "fisher", "attribute",
          "selfinfluence", "compare", "localise", "optout", "report", "demo"]
DEMO_STAGES = ("world", "songclap", "codec", "encode", "train", "generate", "conditioning", "fisher", "selfinfluence", "localise",
               "attribute", "compare", "optout", "optout_eval", "report")


def test_help_lists_the_stages():
    out = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert out.exit_code == 0
    for stage in STAGES:
        assert f" {stage} " in out.output, stage


def test_bad_input_is_a_clear_message_not_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "songtrace.cli", "world", "import", str(tmp_path / "missing"), "--captions",
         str(tmp_path / "c.csv"), "--home", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("config", [DemoConfig(), DemoConfig.quick()])
def test_demo_config_round_trips(config):
    assert DemoConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("change", "message"), [
    ({"max_seconds": float("nan")}, "max_seconds"),
    ({"generation_seconds": 9.0}, "generation_seconds"),
    ({"si_lrs": (1e-6, float("inf"))}, "si_lrs"),
    ({"compare_methods": ("embedding",)}, "unlearning"),
    ({"optout_method": "forget-harder"}, "opt-out method"),
    ({"tracks": 0}, "tracks"),
])
def test_demo_config_refuses_bad_sizes(change, message):
    with pytest.raises(SongtraceError, match=message):
        DemoConfig(**change)


def test_a_home_holding_a_demo_of_other_sizes_is_refused_before_any_work(tmp_path):
    from songtrace.cli.demo import run_demo

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "demo_config.json").write_text(json.dumps(DemoConfig.quick().to_dict()))
    with pytest.raises(SongtraceError, match="holds a demo made with --quick; run this one with another --home"):
        run_demo(DemoConfig(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def _numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        yield path, obj


@pytest.mark.slow
def test_quick_demo_tells_the_whole_story_and_reruns_skip(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["demo", "--quick", "--home", str(tmp_path)])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary["stages"]) == set(DEMO_STAGES)
    for stage in summary["stages"].values():
        assert stage["wall_seconds"] > 0 and stage["cpu_seconds"] >= 0 and stage["load_start"] >= 0 and not stage["skipped"]
    bad = [path for path, x in _numbers(summary) if not math.isfinite(x)]
    assert bad == []
    assert summary["model"]["valid_loss"] < summary["model"]["valid_loss_init"]
    assert summary["world"]["artists"] >= 4
    assert summary["generations"]["n"] == summary["world"]["artists"]
    assert 0 <= summary["conditioning"]["songclap"]["fraction_closer_to_own"] <= 1

    # self-influence tuned the model, saved its best configuration, and attribution used it
    si = summary["selfinfluence"]
    assert 1 <= si["metrics"]["mean_rank"] <= summary["world"]["train_tracks"] and 0 <= si["metrics"]["frac_rank1"] <= 1
    best_path = si["best_config_path"]
    assert best_path and json.loads(open(best_path).read())["unlearn"] == si["unlearn"]
    assert summary["attribute"]["config_source"] == best_path and summary["localise"]["config_source"] == best_path
    assert summary["attribute"]["unlearn"] == si["unlearn"]
    for q in [summary["localise"], *summary["attribute"]["queries"]]:
        assert q["top"] and q["credits"] and 0 < q["credits"][0]["share"] <= 1
    assert len(summary["localise"]["windows"]) >= 2
    assert summary["compare"]["pearson_with_reference"] and all(k != "unlearning" for k in summary["compare"]["pearson_with_reference"])

    # the opt-out forgot the artist's tracks, and the evaluation measured it against the original and the retrained model
    assert summary["optout"]["forget"]["n_forget"] >= 1
    figures = summary["optout_eval"]["figures"]
    assert set(figures) == {"original", "unlearned", "retrained"}
    assert figures["unlearned"]["loss.delta_forget"] is not None and figures["unlearned"]["membership.auc"] is not None

    # the report shows every kind of run, with players
    page = (tmp_path / "demo" / "report.html").read_text()
    for heading in ("Query: ", "Method comparison", "Self-influence", "Opt-out evaluation", "Which training tracks explain which moments"):
        assert heading in page, heading
    assert page.count("<audio") >= 3 + summary["config"]["report_top"]
    assert summary["report"]["report"] == str(tmp_path / "demo" / "report.html")
    assert summary["human_summary"][-1] == f"report: {tmp_path / 'demo' / 'report.html'}"
    assert f"report: {tmp_path / 'demo' / 'report.html'}" in out.output.replace("\n", "")

    # A second run finds every stage finished with the same config and skips it: nothing is regenerated or rewritten.
    written = {p: p.stat().st_mtime_ns for p in [*(tmp_path / "demo").glob("*.json"), tmp_path / "demo" / "report.html",
                                                 *(tmp_path / "demo").rglob("*.wav")] if p.name != "summary.json"}
    again = runner.invoke(app, ["demo", "--quick", "--home", str(tmp_path), "--json"])
    assert again.exit_code == 0, again.output
    summary2 = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert all(s["skipped"] for s in summary2["stages"].values()), summary2["stages"]
    assert summary2["generations"]["reused"] == summary2["generations"]["n"] == summary["generations"]["n"]
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert summary2["model"] == summary["model"]
    assert summary2["attribute"] == summary["attribute"] and summary2["optout_eval"] == summary["optout_eval"]
