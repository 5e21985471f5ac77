"""The audio helpers every stage shares: one way to read an audio file, to make mono float audio and to resample it.

Files come as `[S]`, `[S, ch]` (soundfile's layout) or `[ch, S]` (librosa's and torch's); a
2-D array whose smaller side has at most 8 entries is read as channels on that side. Resampling
is soxr's high quality mode (deterministic), a no-op when the rates match. `read_audio` checks a
file's header before reading it (a WAV whose header promises more samples than the file holds is
truncated, not short; a streaming WAV, whose header leaves the data size open, is read to the end of
the file) and reads at most the seconds asked for, so a huge file never fills memory.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path

import numpy as np

from songtrace.errors import SongtraceError

MAX_CHANNELS = 8


def to_mono(wave: np.ndarray, source: str = "audio") -> np.ndarray:
    """Mono float32 audio `[S]` from `[S]`, `[S, ch]` or `[ch, S]`; refuses NaN/inf samples and other shapes."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:
        small = int(np.argmin(wave.shape))
        if wave.shape[small] > MAX_CHANNELS:
            raise SongtraceError(f"{source}: a 2-D array of shape {wave.shape} is not (samples, channels) audio")
        wave = wave.mean(axis=small).astype(np.float32)
    if wave.ndim != 1:
        raise SongtraceError(f"{source}: audio must be [samples] or [samples, channels], got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise SongtraceError(f"{source}: audio contains NaN or infinite samples")
    return wave


def resample(wave: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample mono float audio from `sr_from` to `sr_to` Hz (soxr high quality); identity when the rates match."""
    if sr_from <= 0 or sr_to <= 0:
        raise SongtraceError(f"sample rates must be > 0, got {sr_from} -> {sr_to}")
    if sr_from == sr_to:
        return np.asarray(wave, dtype=np.float32)
    import librosa

    return librosa.resample(np.asarray(wave, dtype=np.float32), orig_sr=sr_from, target_sr=sr_to, res_type="soxr_hq").astype(np.float32)


# a RIFF data chunk size meaning "to the end of the file": written by encoders that stream to a pipe (ffmpeg, sox)
STREAMING_SIZES = (0, 0xFFFFFFFF)
# bytes per sample of the PCM/float WAV subtypes a streaming WAV is read as raw samples with
_SAMPLE_BYTES = {"PCM_U8": 1, "PCM_S8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


def check_wav_header(path: str | Path) -> int | None:
    """Refuse a RIFF/WAVE file whose chunks run past its end (truncated) or that has no sample data; other formats pass.

    Returns the byte offset of the samples of a streaming WAV (a RIFF data chunk declaring 0 or 0xFFFFFFFF bytes, as a
    pipe-writing encoder leaves it: its samples run to the end of the file), else None."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk, declared = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                if declared in STREAMING_SIZES and head[:4] == b"RF64":
                    return None  # RF64 keeps the real size in its ds64 chunk
                if declared in STREAMING_SIZES:
                    if size <= pos + 8:
                        raise SongtraceError(f"{path}: audio has no samples (the WAV's data chunk is empty)")
                    return pos + 8
                if pos + 8 + declared > size:
                    raise SongtraceError(f"{path}: unreadable or corrupt audio (a truncated WAV: its header declares {declared} "
                                         f"bytes of samples, the file holds {size - pos - 8})")
                return None
            pos += 8 + declared + (declared & 1)
    raise SongtraceError(f"{path}: unreadable or corrupt audio (a truncated or malformed WAV: no complete 'data' chunk)")


def _read_streaming_wav(path: Path, offset: int, max_seconds: float | None) -> tuple[np.ndarray, int]:
    """The samples of a streaming WAV, from `offset` to the end of the file (at most `max_seconds`), read as raw samples in the
    format its header gives (libsndfile would read a data size of 0 as no samples)."""
    import soundfile as sf

    info = sf.info(str(path))
    width = _SAMPLE_BYTES.get(info.subtype)
    if width is None:
        raise SongtraceError(f"{path}: a streaming WAV (no data size in its header) of {info.subtype} samples is not supported; "
                             "convert it to PCM or float WAV")
    frame_bytes = width * info.channels
    frames = (path.stat().st_size - offset) // frame_bytes
    if max_seconds is not None:
        frames = min(frames, math.ceil(max_seconds * info.samplerate) + 1)
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(frames * frame_bytes)
    if not raw:
        raise SongtraceError(f"{path}: audio has no samples")
    data, sr = sf.read(io.BytesIO(raw), format="RAW", subtype=info.subtype, samplerate=info.samplerate, channels=info.channels,
                       endian="LITTLE", dtype="float32", always_2d=True)
    return data, int(sr)


def read_audio(path: str | Path, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """`(samples [S, channels] float32, sample rate)` of an audio file, at most `max_seconds` of it.

    Refused with a message naming the file: unreadable or malformed, truncated, no samples.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise SongtraceError(f"{path}: audio file not found")
    streaming = check_wav_header(path)
    if streaming is not None:
        return _read_streaming_wav(path, streaming, max_seconds)
    try:
        info = sf.info(str(path))
        keep = info.frames if max_seconds is None else min(info.frames, math.ceil(max_seconds * info.samplerate) + 1)
        data, sr = sf.read(str(path), frames=max(int(keep), 0), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types for unreadable files
        raise SongtraceError(f"{path}: unreadable or corrupt audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if data.shape[0] == 0:
        raise SongtraceError(f"{path}: audio has no samples")
    if 0 < keep and data.shape[0] < keep:
        raise SongtraceError(f"{path}: truncated audio: its header promises {keep} samples, {data.shape[0]} could be read")
    return data, int(sr)
