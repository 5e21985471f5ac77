"""`world import` is untrusted input: it never reads outside its folder, refuses symlinks that leave it, checks sizes and headers
before reading, and refuses truncated or too short audio (issue 15, part 3). Property-based tests on the CSV reader."""

import os
import string

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from songtrace.errors import SongtraceError
from songtrace.world.config import ImportConfig
from songtrace.world.importer import MAX_CAPTIONS_BYTES, import_world, path_problem, read_captions


def _folder(root, n=2, rows=None):
    music = root / "music"
    music.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(str(music / f"t{i}.wav"), (0.1 * np.sin(np.arange(16000) * (0.02 + 0.01 * i))).astype(np.float32), 16000)
    rows = rows if rows is not None else [(f"t{i}.wav", f"tone {i}", f"artist{i}") for i in range(n)]
    (music / "captions.csv").write_text("file,caption,artist\n" + "".join(",".join(r) + "\n" for r in rows))
    (root / "outside.wav").write_bytes((music / "t0.wav").read_bytes())
    return music


def _import(music, root):
    return import_world(music, music / "captions.csv", root / "world", ImportConfig(max_seconds=2.0))


@pytest.mark.parametrize(("entry", "message"), [
    ("/etc/passwd", "absolute path"),
    ("OUTSIDE", "absolute path"),
    ("../outside.wav", r"'\.\.' part"),
    ("sub/../../outside.wav", r"'\.\.' part"),
    ("link.wav", "symlinks? that leaves? the folder"),
])
def test_captions_naming_files_outside_the_folder_are_refused(tmp_path, entry, message):
    music = _folder(tmp_path)
    if entry == "link.wav":
        (music / "link.wav").symlink_to(tmp_path / "outside.wav")
    entry = str(tmp_path / "outside.wav") if entry == "OUTSIDE" else entry
    (music / "captions.csv").write_text(f"file,caption,artist\nt0.wav,a,x\n{entry},b,y\n")
    with pytest.raises(SongtraceError, match=message):
        _import(music, tmp_path)
    assert not (tmp_path / "world" / "manifest.parquet").exists()


def test_a_symlinked_folder_leaving_the_import_folder_is_refused(tmp_path):
    music = _folder(tmp_path, rows=[("t0.wav", "a", "x"), ("t1.wav", "b", "y"), ("sub/secret.wav", "c", "z")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.wav").write_bytes((music / "t0.wav").read_bytes())
    (music / "sub").symlink_to(elsewhere)
    with pytest.raises(SongtraceError, match=r"sub/secret\.wav' is a symlink that leaves the folder"):
        _import(music, tmp_path)


def test_truncated_and_too_short_audio_is_refused_naming_the_file(tmp_path):
    music = _folder(tmp_path)
    data = (music / "t1.wav").read_bytes()
    (music / "t1.wav").write_bytes(data[:200])
    with pytest.raises(SongtraceError, match=r"t1\.wav: unreadable or corrupt audio \(a truncated WAV"):
        _import(music, tmp_path)
    sf.write(str(music / "t1.wav"), np.zeros(40, dtype=np.float32), 16000)
    with pytest.raises(SongtraceError, match=r"t1\.wav: 0\.0025 s of audio is shorter than 0\.1 s"):
        _import(music, tmp_path)


def test_a_huge_captions_file_is_refused_before_it_is_read(tmp_path):
    music = _folder(tmp_path)
    with open(music / "captions.csv", "r+b") as f:  # sparse: no disk used
        f.seek(MAX_CAPTIONS_BYTES + 1)
        f.write(b"\n")
    with pytest.raises(SongtraceError, match="larger than the 256 MiB limit"):
        read_captions(music / "captions.csv", music)


def test_a_valid_folder_imports(tmp_path):
    music = _folder(tmp_path)
    out = _import(music, tmp_path)
    assert (out / "manifest.parquet").exists()


SAFE = st.text(alphabet=string.ascii_letters + string.digits + "_- ", min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(parts=st.lists(st.one_of(SAFE, st.sampled_from(["..", ".", "", "/", "\\", "C:", "\x00"])), min_size=1, max_size=5),
       absolute=st.booleans())
def test_any_csv_path_is_inside_the_folder_or_refused(tmp_path_factory, parts, absolute):
    root = tmp_path_factory.mktemp("root")
    folder = root / "music"
    folder.mkdir(exist_ok=True)
    entry = ("/" if absolute else "") + "/".join(parts)
    problem = path_problem(entry, folder)
    if problem is None:
        resolved = os.path.realpath(os.path.join(folder, entry))
        assert resolved.startswith(str(folder.resolve()) + os.sep) or resolved == str(folder.resolve())
        assert "\x00" not in entry and not entry.startswith("/")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400))
def test_the_csv_reader_refuses_any_malformed_text_in_one_error(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("csv")
    (root / "a.wav").write_bytes(b"")
    csv = root / "captions.csv"
    csv.write_text(text, encoding="utf-8", errors="surrogatepass") if "\ud800" not in text else csv.write_bytes(b"\xff")
    try:
        df = read_captions(csv, root)
    except SongtraceError as e:
        assert str(csv) in str(e) or "captions" in str(e)
        return
    assert {"file", "caption", "artist"} <= set(df.columns) and len(df) > 0
    for f in df["file"]:
        assert path_problem(f, root) is None and (root / f).is_file()
