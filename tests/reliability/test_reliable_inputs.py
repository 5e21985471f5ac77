"""Bad queries, latents and audio are refused before any work, with one line naming the file and what is wrong (issue 15, part 1).

Property-based tests (hypothesis) on the query loaders: any latent file is either refused with a
`SongtraceError` or resolves to a query the model can take (right shape, finite, 1 <= n_frames <= L).
"""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from songtrace.attribution.query import QueryContext, resolve_query
from songtrace.data.audio import check_wav_header, read_audio
from songtrace.data.batch import check_items
from songtrace.data.latent_file import read_latent_file
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError

C, L, S, D = 4, 16, 8, 384


def _cache() -> LatentSet:
    from fixtures_model import synthetic_latent_set

    return synthetic_latent_set(n=6, channels=C, length=L, n_tokens=S - 2)


CACHE = _cache()


def _latent(path, **over):
    t = {"latents": torch.randn(1, C, 10), "n_frames": torch.tensor([10]), "text": torch.randn(1, 5, D),
         "text_mask": torch.ones(1, 5, dtype=torch.uint8), "seconds_start": torch.zeros(1), "seconds_total": torch.tensor([1.0])}
    for k, v in over.items():
        if v is None:
            t.pop(k)
        else:
            t[k] = v
    save_file({k: v.contiguous() for k, v in t.items()}, str(path))
    return str(path)


def _resolve(spec):
    return resolve_query(spec, QueryContext(CACHE))


def _nan_at(shape, i=0):
    t = torch.randn(*shape)
    t.view(-1)[i] = math.nan
    return t


BAD_LATENTS = {
    "NaN/inf": {"latents": _nan_at((1, C, 10), 7)},
    "inf": {"latents": torch.full((1, C, 10), math.inf)},
    "n_frames must be a whole number >= 1, got -5": {"n_frames": torch.tensor([-5])},
    "n_frames must be a whole number >= 1, got 0": {"n_frames": torch.tensor([0])},
    "n_frames must hold one value": {"n_frames": torch.zeros(0, dtype=torch.long)},
    "no frames": {"latents": torch.zeros(1, C, 0), "n_frames": None},
    "channels": {"latents": torch.randn(1, C + 1, 10)},
    "longer than the model": {"latents": torch.randn(1, C, L + 1), "n_frames": None},
    "tokens are 100 wide": {"text": torch.randn(1, 5, 100)},
    "caption tokens must be": {"text_mask": torch.ones(1, 3, dtype=torch.uint8)},
    "text has": {"text": _nan_at((1, 5, D))},
    "seconds_total must be a finite|seconds_total has": {"seconds_total": torch.tensor([math.nan])},
    "seconds_total must be > 0": {"seconds_total": torch.tensor([-3.0])},
    "seconds_start has": {"seconds_start": torch.tensor([math.inf])},
    "seconds_total must hold one value": {"seconds_total": torch.zeros(2)},
}


@pytest.mark.parametrize("message", list(BAD_LATENTS))
def test_a_bad_latent_query_is_refused_naming_the_file(tmp_path, message):
    spec = _latent(tmp_path / "q.latent.safetensors", **BAD_LATENTS[message])
    with pytest.raises(SongtraceError, match=message) as e:
        _resolve(spec)
    assert "q.latent.safetensors" in str(e.value) and "\n" not in str(e.value)


def test_a_good_latent_query_resolves_and_an_empty_prompt_is_refused(tmp_path):
    q = _resolve(_latent(tmp_path / "q.latent.safetensors"))
    assert q.batch.latents.shape == (1, C, L) and int(q.batch.n_frames[0]) == 10
    for spec in ("prompt:@0", "prompt: @0", "prompt:   \t@3"):
        with pytest.raises(SongtraceError, match="prompt"):
            _resolve(spec)


def test_a_bare_latent_lasts_its_frames_at_the_datas_frame_rate(tmp_path):
    from songtrace.data.latents import frame_rate

    rate = frame_rate(CACHE.seconds_total, CACHE.n_frames)
    q = _resolve(_latent(tmp_path / "bare.latent.safetensors", seconds_total=None, n_frames=torch.tensor([7])))
    assert float(q.batch.seconds_total[0]) == pytest.approx(7 / rate) and q.meta["seconds_from"] == "frames"
    assert float(q.batch.seconds_total[0]) != 7.0  # not the frame count taken as seconds
    q = _resolve(_latent(tmp_path / "timed.latent.safetensors", seconds_total=torch.tensor([0.7])))
    assert float(q.batch.seconds_total[0]) == pytest.approx(0.7) and q.meta["seconds_from"] == "file"


def test_the_generated_latent_reader_uses_the_same_check(tmp_path):
    with pytest.raises(SongtraceError, match="NaN/inf"):
        read_latent_file(_latent(tmp_path / "g.latent.safetensors", latents=_nan_at((1, C, 10)))).batch()
    with pytest.raises(SongtraceError, match="n_frames"):
        read_latent_file(_latent(tmp_path / "h.latent.safetensors", n_frames=torch.tensor([0]))).batch()


def test_the_latent_cache_loader_refuses_nan_zero_frames_and_torn_tables(tmp_path):
    good = _cache()
    bad = LatentSet(**{**good.__dict__, "latents": good.latents.clone()})
    bad.latents[2, 1, 3] = math.nan
    bad.save(tmp_path / "nan")
    with pytest.raises(SongtraceError, match="latents has 1 NaN/inf"):
        LatentSet.load(tmp_path / "nan")
    zero = LatentSet(**{**good.__dict__, "n_frames": good.n_frames.clone()})
    zero.n_frames[1] = 0
    zero.save(tmp_path / "zero")
    with pytest.raises(SongtraceError, match="n_frames must be between 1"):
        LatentSet.load(tmp_path / "zero")
    good.save(tmp_path / "torn")
    items = tmp_path / "torn" / "items.parquet"
    items.write_bytes(items.read_bytes()[: items.stat().st_size // 2])
    with pytest.raises(SongtraceError, match=r"items\.parquet: not a readable Parquet file"):
        LatentSet.load(tmp_path / "torn")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    channels=st.integers(0, C + 1), frames=st.integers(0, L + 2), n_frames=st.one_of(st.none(), st.integers(-3, L + 3)),
    width=st.sampled_from([D, D - 1, 16]), tokens=st.integers(0, S + 2), poison=st.sampled_from(["", "latents", "text", "seconds"]),
    seconds=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_any_latent_file_is_refused_or_gives_a_query_the_model_can_take(tmp_path_factory, channels, frames, n_frames, width, tokens,
                                                                        poison, seconds):
    path = tmp_path_factory.mktemp("q") / "q.latent.safetensors"
    over = {"latents": torch.randn(1, channels, frames), "text": torch.randn(1, tokens, width),
            "text_mask": torch.ones(1, tokens, dtype=torch.uint8), "seconds_total": torch.tensor([seconds]),
            "n_frames": None if n_frames is None else torch.tensor([n_frames])}
    if poison == "latents" and channels * frames:
        over["latents"].view(-1)[0] = math.nan
    if poison == "text" and tokens:
        over["text"].view(-1)[0] = math.inf
    try:
        q = _resolve(_latent(path, **over))
    except SongtraceError as e:
        assert "\n" not in str(e)
        return
    b = q.batch
    assert b.latents.shape == (1, C, L) and b.text.shape == (1, S, D)
    assert 1 <= int(b.n_frames[0]) <= L and bool(torch.isfinite(b.latents).all()) and bool(torch.isfinite(b.text).all())
    assert math.isfinite(float(b.seconds_total[0])) and float(b.seconds_total[0]) > 0


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=300))
def test_any_bytes_as_a_latent_file_are_refused_cleanly(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("b") / "q.latent.safetensors"
    path.write_bytes(data)
    with pytest.raises(SongtraceError):
        _resolve(str(path))


def test_check_items_refuses_batches_of_the_wrong_shape():
    t = CACHE.tensors()
    check_items(t, "cache", latent_shape=(C, L), text_dim=D)
    with pytest.raises(SongtraceError, match="model's are"):
        check_items(t, "cache", latent_shape=(C, L + 1))
    with pytest.raises(SongtraceError, match="one value per item"):
        check_items({**t, "n_frames": t["n_frames"][:2]}, "cache")


# --------------------------------------------------------------------------- audio files


def _wav(path, seconds=1.0, sr=16000, value=None):
    x = (0.1 * np.sin(np.arange(int(seconds * sr)) * 0.05)).astype(np.float32) if value is None else value
    sf.write(str(path), x, sr, subtype="PCM_16" if np.isfinite(x).all() else "FLOAT")
    return path


def test_a_truncated_wav_is_refused_not_read_as_a_short_track(tmp_path):
    path = _wav(tmp_path / "a.wav")
    check_wav_header(path)
    data, sr = read_audio(path)
    assert data.shape == (16000, 1) and sr == 16000
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SongtraceError, match="a truncated WAV: its header declares 32000 bytes"):
        read_audio(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(SongtraceError, match="a truncated or malformed WAV"):
        read_audio(path)


def test_read_audio_reads_at_most_what_is_asked_and_refuses_empty_or_foreign_files(tmp_path):
    data, _ = read_audio(_wav(tmp_path / "long.wav", seconds=3.0), max_seconds=0.5)
    assert len(data) == 8001
    with pytest.raises(SongtraceError, match="no samples"):
        read_audio(_wav(tmp_path / "empty.wav", value=np.zeros(0, dtype=np.float32)))
    (tmp_path / "text.wav").write_text("not audio at all " * 20)
    with pytest.raises(SongtraceError, match="unreadable or corrupt audio"):
        read_audio(tmp_path / "text.wav")


@pytest.mark.parametrize("declared", [0xFFFFFFFF, 0])
def test_a_streaming_wav_is_read_to_the_end_of_the_file(tmp_path, declared):
    """Review #5: a WAV whose RIFF data size is left open (0xFFFFFFFF or 0, as ffmpeg/sox write to a pipe) is read to the end of
    the file, not refused as truncated or empty; an open data chunk with nothing after it has no samples."""
    import struct

    path = _wav(tmp_path / "a.wav", seconds=1.0)
    want, _ = read_audio(path)
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[at + 4: at + 8] = struct.pack("<I", declared)
    raw[4:8] = struct.pack("<I", declared)
    path.write_bytes(bytes(raw))
    data, sr = read_audio(path)
    assert sr == 16000 and np.array_equal(data, want)
    assert len(read_audio(path, max_seconds=0.25)[0]) == 4001
    path.write_bytes(bytes(raw[: at + 8]))
    with pytest.raises(SongtraceError, match="no samples"):
        read_audio(path)
