"""Seeded random projections of gradient vectors to k dimensions (Johnson-Lindenstrauss), as TRAK does.

Used by the fast attribution index (`attribution.index`) and the TRAK-like gradient baseline.
Two random kinds, both preserving inner products in expectation (plus `identity`, which keeps all
P coordinates: the exact reference the fast index is tested against):
- `gaussian`: R ~ N(0, 1/k) of shape [P, k], never held whole: regenerated chunk by chunk from
  per-chunk seeds, so any number of vectors projected in any batches see the same R;
- `srdct`: a subsampled randomised DCT, sqrt(P/k) · S · DCT · D (D random signs, S picks k random
  coordinates of the orthonormal DCT); O(P log P) per vector instead of O(P k), which matters
  on a CPU (for P = 1.5 M, k = 512: about 8 ms per vector against about 5 s per batch for the
  dense Gaussian).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from songtrace.errors import SongtraceError

PROJECTIONS = ("srdct", "gaussian", "identity")
CHUNK = 1 << 16


def _chunk_seed(seed: int, j: int) -> int:
    return (int(seed) * 1_000_003 + j * 7919 + 17) % (2**63 - 1)


@dataclasses.dataclass(frozen=True)
class Projector:
    """Projects `[B, P]` vectors to `[B, k]` with a fixed seeded random map."""

    kind: str
    n_params: int
    dim: int
    seed: int

    def __post_init__(self) -> None:
        if self.kind not in PROJECTIONS:
            raise SongtraceError(f"unknown projection {self.kind!r}; valid: {', '.join(PROJECTIONS)}")
        if self.dim < 1 or self.n_params < 1:
            raise SongtraceError(f"projection needs dim >= 1 and at least one parameter (dim={self.dim}, params={self.n_params})")

    @property
    def out_dim(self) -> int:
        """k (the subsampled DCT cannot keep more coordinates than it has; the identity keeps all P)."""
        if self.kind == "identity":
            return self.n_params
        return min(self.dim, self.n_params) if self.kind == "srdct" else self.dim

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """`[B, P]` -> `[B, k]` (float64)."""
        if grads.ndim != 2 or grads.shape[1] != self.n_params:
            raise SongtraceError(f"projection expects [B, {self.n_params}] vectors, got {tuple(grads.shape)}")
        if self.kind == "identity":
            return grads.double()
        return self._srdct(grads) if self.kind == "srdct" else self._gaussian(grads)

    def _gaussian(self, grads: torch.Tensor) -> torch.Tensor:
        g = grads.float()
        out = torch.zeros(g.shape[0], self.dim, dtype=torch.float64)
        for j, s in enumerate(range(0, self.n_params, CHUNK)):
            e = min(self.n_params, s + CHUNK)
            gen = torch.Generator().manual_seed(_chunk_seed(self.seed, j))
            r = torch.randn(e - s, self.dim, generator=gen)
            out += (g[:, s:e] @ r).double()
        return out / self.dim**0.5

    def _srdct(self, grads: torch.Tensor) -> torch.Tensor:
        from scipy.fft import dct

        gen = torch.Generator().manual_seed(_chunk_seed(self.seed, 0))
        signs = (torch.randint(0, 2, (self.n_params,), generator=gen) * 2 - 1).double().numpy()
        keep = torch.randperm(self.n_params, generator=gen)[: self.out_dim].numpy()
        x = grads.double().numpy() * signs[None, :]
        y = dct(x, type=2, norm="ortho", axis=1)[:, keep]
        return torch.from_numpy(np.ascontiguousarray(y)) * (self.n_params / self.out_dim) ** 0.5
