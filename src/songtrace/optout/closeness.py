"""How close generations are to the forgotten tracks: embedding similarity and an artist classifier (pure numpy).

- `set_similarity`: mean cosine of each generation to the centroid of the forget tracks, the mean of
  its best cosine to any forget track, and the share of generations whose nearest training track is
  a forget track;
- `ArtistClassifier`: a multinomial logistic regression on the world's track embeddings (every
  artist, both splits); `probability(emb, artists)` is the probability it gives the forgotten artists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from songtrace.embedders.base import l2_normalise
from songtrace.errors import SongtraceError


def _rows(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise SongtraceError(f"{name}: expected a non-empty [N, D] array of embeddings, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise SongtraceError(f"{name}: embeddings contain NaN or infinite values")
    return x


def set_similarity(generated: np.ndarray, training: np.ndarray, in_set: np.ndarray) -> dict[str, float]:
    """Closeness of generations `[G, D]` to the training tracks `[N, D]` marked by `in_set [N]` (embeddings L2-normalised)."""
    gen = l2_normalise(_rows("generations", generated))
    train = l2_normalise(_rows("training tracks", training))
    in_set = np.asarray(in_set, dtype=bool)
    if in_set.shape != (train.shape[0],) or not in_set.any():
        raise SongtraceError("similarity: the forget set marks no training track")
    sims = gen @ train.T
    centroid = l2_normalise(train[in_set].mean(axis=0))
    return {
        "centroid_cosine": float((gen @ centroid).mean()),
        "best_cosine": float(sims[:, in_set].max(axis=1).mean()),
        "nearest_is_forget": float(in_set[sims.argmax(axis=1)].mean()),
    }


@dataclasses.dataclass
class ArtistClassifier:
    """Logistic regression: track embedding -> artist, fitted on the world's audio."""

    model: object
    artists: list[str]
    train_accuracy: float

    @classmethod
    def fit(cls, embeddings: np.ndarray, artists: Sequence[str], seed: int = 0, c: float = 10.0) -> ArtistClassifier:
        """Fit on `[N, D]` embeddings labelled by artist (at least two artists)."""
        from sklearn.linear_model import LogisticRegression

        x = l2_normalise(_rows("classifier training embeddings", embeddings))
        labels = np.asarray([str(a) for a in artists])
        if labels.shape[0] != x.shape[0]:
            raise SongtraceError(f"artist classifier: {x.shape[0]} embeddings but {labels.shape[0]} labels")
        if len(set(labels)) < 2:
            raise SongtraceError("artist classifier: needs tracks of at least two artists")
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, labels)
        return cls(model, [str(a) for a in model.classes_], float(model.score(x, labels)))

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """P(artist | embedding) `[G, A]`, columns in `self.artists` order."""
        return np.asarray(self.model.predict_proba(l2_normalise(_rows("generations", embeddings))))  # type: ignore[attr-defined]

    def probability(self, embeddings: np.ndarray, artists: Sequence[str]) -> np.ndarray:
        """The probability `[G]` the classifier gives any of `artists` (the forgotten ones)."""
        unknown = sorted(set(artists) - set(self.artists))
        if unknown:
            raise SongtraceError(f"artist classifier: never saw {unknown}; it knows {', '.join(self.artists)}")
        cols = [self.artists.index(a) for a in artists]
        return self.probabilities(embeddings)[:, cols].sum(axis=1)
