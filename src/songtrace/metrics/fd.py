"""Frechet distance between two sets of embeddings, with fadtk's extrapolation to infinite samples.

FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}). It is biased upward for finite
samples, and the bias shrinks roughly like 1/n, so FDs are only comparable at equal sample counts.
fadtk (Gui et al., "Adapting Frechet Audio Distance for Generative Music Evaluation") therefore
fits FD against 1/n over subsamples of the evaluated set and reports the intercept, FD-infinity.
Seed 002 reports FD on openl3 embeddings (FD_openl3) to show unlearning leaves quality alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError
from songtrace.progress import progress

PER = ("window", "track")


def embedding_stats(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean `[D]` and covariance `[D, D]` (unbiased, float64) of embeddings `[N, D]`."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise SongtraceError(f"FD needs at least 2 embeddings as an [N, D] array, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise SongtraceError("FD: embeddings contain NaN or infinite values")
    return emb.mean(axis=0), np.atleast_2d(np.cov(emb, rowvar=False))


def psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative round-off eigenvalues set to 0)."""
    vals, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """FD between two Gaussians. tr((S_a S_b)^{1/2}) is computed as the sum of square roots of the
    eigenvalues of the symmetric PSD matrix S_a^{1/2} S_b S_a^{1/2}: real and stable even when the
    covariances are singular (fewer samples than dimensions), unlike `scipy.linalg.sqrtm(S_a S_b)`."""
    if mu_a.shape != mu_b.shape:
        raise SongtraceError(f"FD: embedding dimensions differ ({mu_a.shape[0]} vs {mu_b.shape[0]})")
    root_a = psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_cross = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu_a - mu_b
    fd = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_cross)
    return max(fd, 0.0)  # tiny negative values are round-off


def frechet_distance(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """FD between two sets of embeddings `[N_a, D]`, `[N_b, D]` (float64 throughout)."""
    return frechet_from_stats(*embedding_stats(emb_a), *embedding_stats(emb_b))


def fd_infinity(emb_a: np.ndarray, emb_b: np.ndarray, min_n: int | None = None, steps: int = 10, repeats: int = 3,
                seed: int = 0) -> tuple[float, float, list[tuple[int, float]]]:
    """fadtk's FD-infinity: FD(a, subsample of b) at `steps` sizes, fit against 1/n, take the intercept.

    Returns (intercept, r^2 of the fit, [(n, mean FD)]). Subsamples are drawn without replacement,
    `repeats` per size, seeded.
    """
    emb_b = np.asarray(emb_b, dtype=np.float64)
    n_b = emb_b.shape[0]
    min_n = max(2, min_n if min_n is not None else n_b // 4)
    if n_b < 4 or min_n >= n_b:
        raise SongtraceError(f"FD-infinity needs several subsample sizes; got {n_b} embeddings (min_n {min_n})")
    stats_a = embedding_stats(emb_a)
    rng = np.random.default_rng(seed)
    sizes = sorted(set(np.linspace(min_n, n_b, steps).astype(int).tolist()))
    curve = []
    for n in sizes:
        draws = 1 if n == n_b else repeats
        fds = [frechet_from_stats(*stats_a, *embedding_stats(emb_b[rng.choice(n_b, n, replace=False)])) for _ in range(draws)]
        curve.append((n, float(np.mean(fds))))
    xs = 1.0 / np.array([n for n, _ in curve], dtype=np.float64)
    ys = np.array([f for _, f in curve])
    slope, intercept = np.polyfit(xs, ys, 1)
    fitted = slope * xs + intercept
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float(((ys - fitted) ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return float(intercept), r2, curve


@dataclasses.dataclass(frozen=True)
class FDResult:
    """An FD, its extrapolation to infinite samples, the sample counts and the embedder that made them."""

    fd: float
    fd_inf: float | None
    fd_inf_r2: float | None
    n_a: int
    n_b: int
    dim: int
    per: str
    embedder: str
    embedder_hash: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fd_result(emb_a: np.ndarray, emb_b: np.ndarray, embedder: str = "", embedder_hash: str = "", per: str = "window",
              extrapolate: bool = True, seed: int = 0) -> FDResult:
    """FD (and FD-infinity when there are enough samples) between two embedding sets, with caveats noted."""
    emb_a, emb_b = np.asarray(emb_a, np.float64), np.asarray(emb_b, np.float64)
    fd = frechet_distance(emb_a, emb_b)
    fd_inf = r2 = None
    notes = []
    if extrapolate and emb_b.shape[0] >= 8:
        fd_inf, r2, _ = fd_infinity(emb_a, emb_b, seed=seed)
    elif extrapolate:
        notes.append("too few samples to extrapolate FD-infinity")
    dim = emb_a.shape[1]
    if min(emb_a.shape[0], emb_b.shape[0]) <= dim:
        notes.append(f"fewer samples than dimensions ({min(emb_a.shape[0], emb_b.shape[0])} <= {dim}): "
                     "covariances are rank-deficient and FD is biased upward; compare FDs only at equal sample counts")
    return FDResult(fd, fd_inf, r2, int(emb_a.shape[0]), int(emb_b.shape[0]), int(dim), per, embedder, embedder_hash, "; ".join(notes))


def embed_set(embedder: Embedder, waves: Sequence[np.ndarray], sr: int, per: str = "window") -> np.ndarray:
    """Embeddings of a set of tracks for FD: every window's raw vector (as fadtk), or one pooled vector per track."""
    if per not in PER:
        raise SongtraceError(f"unknown FD unit {per!r}; valid: {', '.join(PER)}")
    if not waves:
        raise SongtraceError("FD: an audio set is empty")
    tracks = progress(waves, total=len(waves), desc=f"embedding for FD ({embedder.name})", unit="track")
    if per == "track":
        return np.concatenate([embedder.embed_audio([w], sr) for w in tracks])
    return np.concatenate([embedder.embed_windows(w, sr, normalise=False) for w in tracks])


def fd_between(embedder: Embedder, waves_a: Sequence[np.ndarray], waves_b: Sequence[np.ndarray], sr: int,
               per: str = "window", extrapolate: bool = True, seed: int = 0, sr_b: int | None = None) -> FDResult:
    """FD between two audio sets (a: the reference, b: the evaluated set, at `sr_b` if it differs) under one embedder."""
    emb_a = embed_set(embedder, waves_a, sr, per)
    emb_b = embed_set(embedder, waves_b, sr_b or sr, per)
    return fd_result(emb_a, emb_b, embedder.name, embedder.content_hash, per, extrapolate, seed)
