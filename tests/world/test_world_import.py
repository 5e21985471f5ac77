"""Importing a user's folder of audio with captions: the happy path and every error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from songtrace.artifacts import artifact_hash, read_json
from songtrace.errors import SongtraceError
from songtrace.world import ImportConfig, import_world, load_world


def _tone(sr: int, seconds: float, freq: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> Path:
    fields = fields or list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def folder(tmp_path) -> tuple[Path, Path]:
    """Audio at 22050 Hz stereo, 8 kHz mono and 44.1 kHz FLAC (one longer than max_seconds), with a captions CSV."""
    audio = tmp_path / "music"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "a.wav", _tone(22050, 1.5, 440, channels=2), 22050)
    sf.write(audio / "b.wav", _tone(8000, 1.0, 330), 8000)
    sf.write(audio / "sub" / "c.flac", _tone(44100, 3.0, 220), 44100)
    sf.write(audio / "d.wav", _tone(16000, 0.5, 550), 16000, subtype="FLOAT")
    (audio / "notes.txt").write_text("not audio, ignored")
    rows = [
        {"file": "a.wav", "caption": "a bright tone", "artist": "Ann", "title": "First", "version_group": "x"},
        {"file": "b.wav", "caption": "a low tone", "artist": "Ann", "title": "", "version_group": ""},
        {"file": "sub/c.flac", "caption": "a long tone", "artist": "Bob", "title": "Third", "version_group": "x"},
        {"file": "d.wav", "caption": "a short tone", "artist": "Bob", "title": "Fourth", "version_group": ""},
    ]
    return audio, _write_csv(tmp_path / "captions.csv", rows)


def test_import_resamples_mixes_and_crops(folder, tmp_path):
    audio_dir, captions = folder
    config = ImportConfig(sample_rate=16000, max_seconds=2.0)
    out = import_world(audio_dir, captions, tmp_path / "w", config)
    world = load_world(out)
    m = world.manifest.set_index("id")
    assert world.config == config and world.sample_rate == 16000
    assert m["source"].tolist() == ["a.wav", "b.wav", "sub/c.flac", "d.wav"]
    assert m["artist"].tolist() == ["Ann", "Ann", "Bob", "Bob"]
    assert m["title"].tolist() == ["First", "b", "Third", "Fourth"]
    assert m["duration"].tolist() == pytest.approx([1.5, 1.0, 2.0, 0.5])
    assert m["cropped"].tolist() == [False, False, True, False]
    assert m["original_sample_rate"].tolist() == [22050, 8000, 44100, 16000]
    assert m["original_channels"].tolist() == [2, 1, 1, 1]
    assert m.loc["t0002", "version_of"] == "t0000" and m.loc["t0002", "version_group"] == m.loc["t0000", "version_group"] == "t0000"
    assert m.loc["t0001", "version_group"] == "t0001"
    assert (m["split"] == "train").all()  # every artist keeps >= 2 train tracks
    a = world.audio("t0000")
    assert a.dtype == np.float32 and len(a) == 24000
    expected_amp = 0.3 * 0.75  # stereo (x, x/2) mixed to mono
    assert np.abs(a[1000:-1000]).max() == pytest.approx(expected_amp, rel=0.02)
    spectrum = np.abs(np.fft.rfft(a))
    assert np.argmax(spectrum) * 16000 / len(a) == pytest.approx(440, abs=2)
    assert artifact_hash(out) == world.content_hash
    world.verify()
    # same inputs: skipped; the result is the same
    assert import_world(audio_dir, captions, tmp_path / "w", config) == out


def test_import_splits_larger_catalogues(tmp_path):
    audio_dir = tmp_path / "music"
    audio_dir.mkdir()
    rows = []
    for i in range(20):
        sf.write(audio_dir / f"{i}.wav", _tone(16000, 0.2, 200 + 10 * i), 16000)
        rows.append({"file": f"{i}.wav", "caption": f"tone {i}", "artist": "A" if i < 12 else "B"})
    out = import_world(audio_dir, _write_csv(tmp_path / "c.csv", rows), tmp_path / "w", ImportConfig(valid_fraction=0.1))
    m = load_world(out).manifest
    assert (m["split"] == "valid").sum() == 2
    assert all((g["split"] == "train").sum() >= 2 for _, g in m.groupby("artist"))


def _expect(match: str, audio_dir: Path, captions: Path, out: Path, config: ImportConfig | None = None) -> None:
    with pytest.raises(SongtraceError, match=match):
        import_world(audio_dir, captions, out, config)


def test_row_without_file(folder, tmp_path):
    audio_dir, captions = folder
    with open(captions, "a") as f:
        f.write("missing.wav,ghost,Ann,Ghost,\n")
    _expect(r"captions\.csv line 6: file 'missing\.wav' not found", audio_dir, captions, tmp_path / "w")


def test_unlisted_audio_is_an_error_unless_skipped(folder, tmp_path):
    audio_dir, captions = folder
    sf.write(audio_dir / "extra.wav", _tone(16000, 0.5, 600), 16000)
    _expect(r"1 audio file\(s\) have no row.*\n  extra\.wav", audio_dir, captions, tmp_path / "w")
    out = import_world(audio_dir, captions, tmp_path / "w", ImportConfig(unlisted="skip"))
    assert len(load_world(out)) == 4
    assert read_json(out / "config.json")["skipped_files"] == ["extra.wav"]


def test_corrupt_audio_names_the_file(folder, tmp_path):
    audio_dir, captions = folder
    (audio_dir / "b.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    _expect(r"b\.wav: unreadable or corrupt audio", audio_dir, captions, tmp_path / "w")


def test_empty_audio_names_the_file(folder, tmp_path):
    audio_dir, captions = folder
    sf.write(audio_dir / "b.wav", np.zeros(0), 16000)
    _expect(r"b\.wav: audio has no samples", audio_dir, captions, tmp_path / "w")


def test_empty_folder(tmp_path, folder):
    _, captions = folder
    (tmp_path / "empty").mkdir()
    _expect(r"empty: no audio files found", tmp_path / "empty", captions, tmp_path / "w")
    _expect(r"audio folder not found", tmp_path / "nowhere", captions, tmp_path / "w")


def test_missing_columns_and_bad_rows(folder, tmp_path):
    audio_dir, _ = folder
    no_artist = _write_csv(tmp_path / "x.csv", [{"file": "a.wav", "caption": "c"}])
    _expect(r"x\.csv: missing column\(s\) \['artist'\]", audio_dir, no_artist, tmp_path / "w")
    rows = [
        {"file": "a.wav", "caption": "", "artist": "Ann"},
        {"file": "a.wav", "caption": "again", "artist": "Ann"},
        {"file": "b.wav", "caption": "c", "artist": ""},
    ]
    bad = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(SongtraceError) as err:
        import_world(audio_dir, bad, tmp_path / "w")
    text = str(err.value)
    assert "bad.csv line 2: empty 'caption'" in text
    assert "bad.csv line 3: file 'a.wav' already listed on line 2" in text
    assert "bad.csv line 4: empty 'artist'" in text
    _expect(r"captions CSV not found", audio_dir, tmp_path / "none.csv", tmp_path / "w")
    (tmp_path / "header.csv").write_text("file,caption,artist\n")
    _expect(r"header\.csv: no rows", audio_dir, tmp_path / "header.csv", tmp_path / "w")


def test_import_config_validates_and_round_trips():
    config = ImportConfig(sample_rate=22050, max_seconds=5.0, unlisted="skip")
    assert ImportConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(SongtraceError, match="unlisted"):
        ImportConfig(unlisted="maybe")
    with pytest.raises(SongtraceError, match="sample_rate"):
        ImportConfig(sample_rate=0)
