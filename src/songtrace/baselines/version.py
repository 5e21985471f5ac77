"""`version` (CLEWS-like): musical-identity similarity robust to key, tempo and instrumentation changes.

CLEWS (seed 002's [27]) is a contrastive embedding trained to recognise versions (covers) of the
same piece. No such model is available offline, so this baseline uses the classic cover-song
recipe it replaced, which needs no training and therefore cannot have seen the world's planted
versions:

- **instrumentation**: chroma CENS (energy normalised, quantised, smoothed pitch-class profiles)
  keep harmony and melody and drop timbre;
- **key**: the maximum over the 12 circular pitch-class shifts of the query (transposition);
- **tempo**: the whole query is time-stretched by each of several tempo ratios (0.5 to 2 in steps
  of 2^(1/6)) before windowing, so a slower or faster rendition lines up with the original;
- **position**: all-against-all windows (query hop finer than the training hop), max over pairs.

Window similarity is the Pearson correlation of the two (12 x W) chroma patches.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from songtrace.baselines.base import register_method
from songtrace.baselines.windows import AudioWindowMethod
from songtrace.data.windows import window_starts
from songtrace.errors import SongtraceError

FEATURE_SR = 11025
HOP = 512
DOWNSAMPLE = 4  # CENS frames are smoothed over ~1 s; keep one in 4 (about 5.4 frames/s)
MIN_SAMPLES = 1 << 15
TEMPO_RATIOS = tuple(round(2 ** (k / 6), 4) for k in range(-6, 7))  # 0.5 .. 2 in sixths of an octave of tempo


def feature_rate() -> float:
    """Chroma frames per second."""
    return FEATURE_SR / HOP / DOWNSAMPLE


def chroma_cens(wav: np.ndarray, sr: int) -> np.ndarray:
    """Chroma CENS `[12, F]` at `feature_rate()` frames per second."""
    import librosa

    y = np.asarray(wav, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise SongtraceError("version similarity: empty audio")
    if sr != FEATURE_SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=FEATURE_SR)
    n_real = y.size
    if y.size < MIN_SAMPLES:  # the CQT's lowest octave needs a second or so of signal
        y = np.pad(y, (0, MIN_SAMPLES - y.size))
    c = librosa.feature.chroma_cens(y=y, sr=FEATURE_SR, hop_length=HOP, win_len_smooth=21)
    n_frames = max(1, -(-n_real // (HOP * DOWNSAMPLE)))
    return np.ascontiguousarray(c[:, ::DOWNSAMPLE][:, :n_frames], dtype=np.float32)


def fit_length(patch: np.ndarray, length: int) -> np.ndarray:
    """Resample a chroma patch `[12, F]` along time to `length` frames (linear interpolation)."""
    f = patch.shape[1]
    if f == length:
        return patch
    if f == 1:
        return np.repeat(patch, length, axis=1)
    src = np.linspace(0.0, f - 1.0, length)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, f - 1)
    w = (src - lo)[None, :]
    return (1 - w) * patch[:, lo] + w * patch[:, hi]


def pad_to(patch: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad a patch shorter than `length` frames at its end (short tracks keep their own tempo)."""
    if patch.shape[1] >= length:
        return patch[:, :length]
    return np.pad(patch, ((0, 0), (0, length - patch.shape[1])))


def centred(vectors: np.ndarray) -> np.ndarray:
    """Subtract each row's mean, so the cosine of two rows is their Pearson correlation."""
    return vectors - vectors.mean(axis=-1, keepdims=True)


def item_windows(chroma: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Training-side windows `[W, 12 * window]` (centred; not yet normalised)."""
    rows = [pad_to(chroma[:, s : s + window], window).reshape(-1) for s in window_starts(chroma.shape[1], window, hop)]
    return centred(np.stack(rows))


def query_windows(chroma: np.ndarray, window: int, hop: int, tempo_ratios: tuple[float, ...]) -> np.ndarray:
    """Query-side windows at every tempo ratio and all 12 transpositions: `[R * W * 12, 12 * window]`.

    For tempo ratio r (query tempo / training tempo) the whole query is time-stretched by r, so a
    query played r times faster lines up with the training item, then windowed as the items are.
    """
    rows = []
    n = chroma.shape[1]
    seen = set()
    for ratio in tempo_ratios:
        stretched = fit_length(chroma, max(1, round(n * ratio)))
        m = stretched.shape[1]
        if m in seen:  # two ratios rounding to the same length give the same windows
            continue
        seen.add(m)
        for s in window_starts(m, window, hop):
            patch = pad_to(stretched[:, s : s + window], window)
            rows.extend(np.roll(patch, k, axis=0).reshape(-1) for k in range(12))
    return centred(np.stack(rows))


@register_method("version")
@dataclasses.dataclass
class VersionSimilarity(AudioWindowMethod):
    """CLEWS-like: key-, tempo- and timbre-robust chroma window correlation, max over window pairs."""

    window_seconds: float = 8.0
    hop_seconds: float = 1.0
    query_hop_seconds: float = 0.5
    tempo_ratios: tuple[float, ...] = TEMPO_RATIOS
    name: str = "version"

    def __post_init__(self) -> None:
        if self.window_seconds <= 0 or self.hop_seconds <= 0 or self.query_hop_seconds <= 0:
            raise SongtraceError("version: window and hop lengths must be > 0 seconds")
        if not self.tempo_ratios or min(self.tempo_ratios) <= 0:
            raise SongtraceError("version: tempo_ratios must be positive numbers")
        self.tempo_ratios = tuple(float(r) for r in self.tempo_ratios)

    def _frames(self, seconds: float) -> int:
        return max(1, round(seconds * feature_rate()))

    def item_windows(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """A training item's chroma windows (centred), every `hop_seconds`."""
        return item_windows(chroma_cens(wav, sr), self._frames(self.window_seconds), self._frames(self.hop_seconds))

    def query_windows(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """The query's chroma windows every `query_hop_seconds`, at every tempo ratio and transposition."""
        return query_windows(chroma_cens(wav, sr), self._frames(self.window_seconds), self._frames(self.query_hop_seconds),
                             self.tempo_ratios)
