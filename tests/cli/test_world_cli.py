"""The `songtrace world` commands: build, import, info (through the real typer app)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from songtrace.cli import app

runner = CliRunner()


def test_world_info_json(tiny_world, tmp_path):
    shutil.copytree(tiny_world, tmp_path / "worlds" / "tiny")
    result = runner.invoke(app, ["world", "info", "--name", "tiny", "--home", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["tracks"] == 12 and info["versions"] == 1 and info["splits"] == {"train": 11, "valid": 1}
    assert sorted(a["tracks"] for a in info["artists"]) == [3, 3, 3, 3]
    assert info["duration"]["max"] <= 2.0 and info["kind"] == "WorldConfig"
    text = runner.invoke(app, ["world", "info", "--name", "tiny", "--home", str(tmp_path)])
    assert text.exit_code == 0 and "Leipzig Cantorei" in text.output


def test_world_build_and_import(tmp_path):
    result = runner.invoke(app, ["world", "build", "--tracks", "4", "--max-seconds", "1.5", "--sample-rate", "8000",
                                 "--name", "small", "--home", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["tracks"] == 4 and info["sample_rate"] == 8000
    assert sf.info(str(tmp_path / "worlds" / "small" / "audio" / "t0000.wav")).samplerate == 8000

    audio = tmp_path / "mine"
    audio.mkdir()
    sf.write(audio / "x.wav", 0.1 * np.ones((8000, 2)), 8000)
    (tmp_path / "c.csv").write_text("file,caption,artist\nx.wav,a hum,Me\n")
    result = runner.invoke(app, ["world", "import", str(audio), "--captions", str(tmp_path / "c.csv"), "--name", "mine",
                                 "--home", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "ImportConfig"
    assert (tmp_path / "worlds" / "mine" / "manifest.parquet").exists()
