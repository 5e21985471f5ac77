"""The CLI lists every stage, and `songtrace demo --quick` runs the whole pipeline end to end."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from songtrace.cli import app

STAGES = ["world", "codec", "encode", "train", "generate", "embedder", "fd", "fisher", "attribute",
          "selfinfluence", "compare", "demo"]


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


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_reruns_skip(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["demo", "--quick", "--home", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for stage in ("world", "songclap", "codec", "encode", "train", "generate", "conditioning", "fisher", "attribute"):
        assert stage in summary["stage_seconds"]
    assert summary["model"]["valid_loss"] < summary["model"]["valid_loss_init"]
    assert summary["world"]["artists"] >= 4
    assert summary["attribution"]["self_rank"] >= 1
    assert list((tmp_path / "demo" / "generations").glob("*.latent.safetensors"))
    # A second run finds every artifact finished with the same config and skips the training stages.
    again = runner.invoke(app, ["demo", "--quick", "--home", str(tmp_path), "--json"])
    assert again.exit_code == 0, again.output
    summary2 = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary2["model"] == summary["model"]
