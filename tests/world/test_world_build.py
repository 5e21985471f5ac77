"""Building the demo world end to end (tiny): layout, manifest, audio, determinism, resume, reading errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import songtrace.world.build as build_module
from fixtures_world import TINY_WORLD
from songtrace.artifacts import artifact_hash, read_json, sha256_file
from songtrace.errors import SongtraceError
from songtrace.world import MANIFEST_COLUMNS, World, WorldConfig, build_world, load_world, manifest_hash


def test_tiny_world_layout_and_manifest(tiny_world):
    world = load_world(tiny_world)
    m = world.manifest
    assert isinstance(world, World) and world.config == TINY_WORLD and world.sample_rate == 16000
    assert list(m.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert m["id"].tolist() == [f"t{i:04d}" for i in range(12)]
    assert m["path"].tolist() == [f"audio/{i}.wav" for i in m["id"]]
    assert m["artist"].nunique() == 4
    assert (m["split"] == "valid").sum() == 1 and set(m["split"]) == {"train", "valid"}
    for col in ("title", "caption", "source", "genre", "instruments", "key", "meter"):
        assert (m[col].str.len() > 0).all(), col
    assert m["key"].str.fullmatch(r"[A-G][b#]? (major|minor)").all()
    assert m["meter"].str.fullmatch(r"\d+/\d+").all()
    assert artifact_hash(tiny_world) == world.content_hash == manifest_hash(m, TINY_WORLD)
    assert not (tiny_world / ".tracks").exists() and not (tiny_world / ".pending.json").exists()


def test_tiny_world_audio_matches_manifest(tiny_world):
    world = load_world(tiny_world)
    for row in world.manifest.itertuples():
        info = sf.info(str(tiny_world / row.path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert sha256_file(tiny_world / row.path) == row.sha256
        audio = world.audio(row.id)
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert len(audio) / 16000 == pytest.approx(row.duration)
        assert 1.0 <= row.duration <= 2.0
        assert 0.05 < np.sqrt(np.mean(audio**2)) < 0.15
    d = world.manifest["duration"]
    assert (d < 2.0 / 3 + 0.34).sum() >= 1  # short tracks (1 s) exist
    world.verify()


def test_tiny_world_has_a_planted_version(tiny_world):
    m = load_world(tiny_world).manifest.set_index("id")
    versions = m[m["version_of"] != ""]
    assert len(versions) == 1
    _, v = next(versions.iterrows())
    o = m.loc[v["version_of"]]
    assert v["source"] == o["source"] and v["title"] == o["title"]
    assert v["artist"] != o["artist"] and v["instruments"] != o["instruments"]
    assert v["version_group"] == o["version_group"] == v["version_of"]
    assert v["split"] == o["split"] == "train"
    assert (m["version_group"] == v["version_group"]).sum() == 2


def test_build_is_deterministic_and_resumable(tiny_world, tmp_path, monkeypatch):
    calls = []
    real = build_module.render_track

    def failing(plan, config):
        calls.append(plan.id)
        if len(calls) == 5:
            raise RuntimeError("interrupted")
        return real(plan, config)

    monkeypatch.setattr(build_module, "render_track", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        build_world(TINY_WORLD, tmp_path / "w")
    assert (tmp_path / "w" / ".pending.json").exists() and not (tmp_path / "w" / "config.json").exists()

    calls.clear()
    monkeypatch.setattr(build_module, "render_track", lambda plan, config: (calls.append(plan.id), real(plan, config))[1])
    build_world(TINY_WORLD, tmp_path / "w")
    assert len(calls) == 12 - 4  # the four finished tracks are kept
    ours = load_world(tmp_path / "w").manifest
    ref = load_world(tiny_world).manifest
    pd.testing.assert_frame_equal(ours, ref)
    assert artifact_hash(tmp_path / "w") == artifact_hash(tiny_world)

    calls.clear()
    build_world(TINY_WORLD, tmp_path / "w")  # finished: skipped
    assert calls == []


def test_parallel_build_matches_serial(tiny_world, tmp_path):
    build_world(TINY_WORLD, tmp_path / "p", workers=2)
    assert load_world(tmp_path / "p").manifest["sha256"].tolist() == load_world(tiny_world).manifest["sha256"].tolist()


def test_other_seed_gives_another_world_and_existing_dirs_are_protected(tiny_world, tmp_path):
    out = tmp_path / "w"
    shutil.copytree(tiny_world, out)
    other = WorldConfig(tracks=6, seed=1, max_seconds=1.5, min_seconds=1.0)
    with pytest.raises(SongtraceError, match="overwrite"):
        build_world(other, out)
    build_world(other, out, overwrite=True)
    world = load_world(out)
    assert len(world) == 6 and world.config == other
    assert set(world.manifest["sha256"]).isdisjoint(set(load_world(tiny_world).manifest["sha256"]))
    assert read_json(out / "config.json")["summary"]["tracks"] == 6


def test_audio_errors_name_the_file(tiny_world, tmp_path):
    out = tmp_path / "w"
    shutil.copytree(tiny_world, out)
    world = load_world(out)
    (out / "audio" / "t0001.wav").unlink()
    with pytest.raises(SongtraceError, match=r"t0001\.wav.*missing"):
        world.audio("t0001")
    (out / "audio" / "t0002.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(SongtraceError, match=r"t0002\.wav.*not readable"):
        world.audio("t0002")
    with pytest.raises(SongtraceError, match="t0001"):
        world.verify()
    with pytest.raises(SongtraceError, match="no track with id"):
        world.audio("nope")


def test_load_world_errors(tmp_path, tiny_world):
    with pytest.raises(SongtraceError, match="not found"):
        load_world(tmp_path / "missing")
    out = tmp_path / "w"
    shutil.copytree(tiny_world, out)
    (out / "manifest.parquet").write_bytes(b"garbage")
    with pytest.raises(SongtraceError, match=r"manifest\.parquet"):
        load_world(out)
