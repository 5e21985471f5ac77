"""Audio and images for the report page: embedded as data URIs, or written beside the page in an assets folder.

Either way the page needs no network: `embed` gives one self-contained HTML file (larger), `assets`
writes `<page stem>_assets/` next to it and links the files relatively (the page and the folder move
together). Audio is read once with soundfile; a window of a query is cut out and written as its own WAV.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np

from songtrace.artifacts import atomic_path, sha256_bytes
from songtrace.errors import SongtraceError

MEDIA_MODES = ("embed", "assets")
MARKER = ".songtrace-report"  # in an assets folder this module wrote, so a rerun may replace it
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}


def read_audio(path: str | Path, what: str) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) of an audio file, with an error naming the file and what it is."""
    import soundfile as sf

    from songtrace.data.audio import to_mono

    path = Path(path)
    if not path.is_file():
        raise SongtraceError(f"{path}: audio of {what} not found")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except Exception as e:  # libsndfile raises several types for unreadable files
        raise SongtraceError(f"{path}: audio of {what} is not readable ({e})") from None
    wav = to_mono(wav, str(path))
    if wav.size == 0:
        raise SongtraceError(f"{path}: audio of {what} is empty")
    return np.asarray(wav, dtype=np.float32), int(sr)


def wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV bytes of mono samples."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


class MediaStore:
    """Hands out `src` strings for the page's audio and images, embedding them or writing them to the assets folder."""

    def __init__(self, page: Path, mode: str = "assets") -> None:
        if mode not in MEDIA_MODES:
            raise SongtraceError(f"unknown media mode {mode!r}; valid: {', '.join(MEDIA_MODES)}")
        self.mode = mode
        self.page = Path(page)
        self.assets = self.page.parent / f"{self.page.stem}_assets"
        self.written: dict[str, str] = {}  # content hash -> src (each file stored once)

    def prepare(self) -> None:
        """Start from an empty assets folder (assets mode), so no stale file from an earlier report survives.

        Only a folder an earlier report wrote (it holds the marker file) is replaced; any other is refused.
        """
        if self.mode != "assets":
            return
        if self.assets.exists():
            if not (self.assets / MARKER).is_file():
                raise SongtraceError(f"{self.assets}: exists and was not written by songtrace report; move it or choose another --out")
            shutil.rmtree(self.assets)
        self.assets.mkdir(parents=True)
        (self.assets / MARKER).write_text("written by songtrace report; replaced when the report is rebuilt\n")

    def _store(self, data: bytes, mime: str, suffix: str, name: str) -> str:
        key = sha256_bytes(data)
        if key in self.written:
            return self.written[key]
        if self.mode == "embed":
            src = f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
        else:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60] or "media"
            file_name = f"{safe}-{key[:8]}{suffix}"
            with atomic_path(self.assets / file_name) as tmp:
                tmp.write_bytes(data)
            src = f"{self.assets.name}/{file_name}"
        self.written[key] = src
        return src

    def audio_file(self, path: str | Path, name: str) -> str:
        """The `src` of an audio file as it is (WAV, FLAC, OGG, MP3)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in AUDIO_TYPES:
            raise SongtraceError(f"{path}: the report plays {', '.join(AUDIO_TYPES)} audio, not {suffix or 'this file'}")
        if not path.is_file():
            raise SongtraceError(f"{path}: audio not found")
        return self._store(path.read_bytes(), AUDIO_TYPES[suffix], suffix, name)

    def audio_clip(self, wav: np.ndarray, sample_rate: int, name: str) -> str:
        """The `src` of samples written as a 16-bit WAV (a window of a query)."""
        return self._store(wav_bytes(wav, sample_rate), "audio/wav", ".wav", name)
