"""`songtrace codec train` and `songtrace encode` through the real CLI app, on the tiny world."""

import json

from typer.testing import CliRunner

from songtrace.cli import app
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError


def test_codec_train_then_encode(tmp_path, tiny_world, one_thread):
    home = tmp_path / "home"
    (home / "worlds").mkdir(parents=True)
    (home / "worlds" / "tiny").symlink_to(tiny_world)
    runner = CliRunner()
    train = runner.invoke(app, ["codec", "train", "--world", "tiny", "--name", "c", "--steps", "3", "--home", str(home), "--json"])
    assert train.exit_code == 0, train.output
    metrics = json.loads(train.stdout)
    assert metrics["steps"] == 3 and metrics["codec_dir"] == str(home / "codecs" / "c") and metrics["mel_l1"] > 0
    encoded = runner.invoke(app, ["encode", "--world", "tiny", "--codec", "c", "--name", "z", "--home", str(home), "--json"])
    assert encoded.exit_code == 0, encoded.output
    summary = json.loads(encoded.stdout)
    assert summary["n_items"] == 12 and summary["latent_shape"] == [8, 21]
    assert LatentSet.load(home / "latents" / "z").content_hash() == summary["content_hash"]
    missing = runner.invoke(app, ["encode", "--world", "tiny", "--codec", "nope", "--name", "z2", "--home", str(home)])
    assert missing.exit_code != 0 and isinstance(missing.exception, SongtraceError) and "codec train" in str(missing.exception)
