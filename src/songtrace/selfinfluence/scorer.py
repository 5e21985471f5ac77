"""Unlearning and scoring one grid cell for one target track, reusing work across cells.

This runs the attribution engine's own Eq. 6 iteration (`songtrace.attribution.unlearn.unlearn_iterates`,
the loop `unlearn` runs) and scoring (`base_losses`, `score_many`), and produces exactly what
`unlearn` + `influence` would, faster:

- the query gradient at θ0 depends only on (target, M_U): it is computed once over the union of all
  target groups (`first_query_gradient`) and handed to the iteration as its first gradient (equivalence is tested);
- cells differing only in steps share one trajectory θ0 → θ1 → ... (kept for the current target);
- L(z_i, θ0) depends only on (T, seed, M_L): computed once per mask and cached on disk;
- the Fisher is computed once, for all weights.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from songtrace.attribution.fisher import Fisher, check_fits
from songtrace.attribution.groups import target_params
from songtrace.attribution.query import QueryContext, resolve_query
from songtrace.attribution.score import ScoreConfig, base_losses, score_many
from songtrace.attribution.shard import SINGLE, Job
from songtrace.attribution.unlearn import MAX_STEPS, UnlearnConfig, first_query_gradient, mask_setting, unlearn_iterates
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task
from songtrace.selfinfluence.grid import Cell
from songtrace.selfinfluence.metrics import target_metrics

Params = dict[str, torch.Tensor]


def _on_cpu(params: Mapping[str, torch.Tensor]) -> Params:
    """The tensors on the CPU (gradients and deltas computed on a GPU), so the grid's bookkeeping is device independent."""
    return {k: v.cpu() for k, v in params.items()}


def params_norm(params: Mapping[str, torch.Tensor]) -> float:
    """‖θ‖₂ over a set of tensors."""
    return float(sum(float(p.double().square().sum()) for p in params.values()) ** 0.5)


class CellScorer:
    """Unlearns a training track under a grid cell's settings and scores every training item (τ, Eq. 2)."""

    def __init__(
        self,
        model: nn.Module | ModelTask,
        fisher: Fisher,
        latents: LatentSet,
        groups: Sequence[str],
        score: ScoreConfig,
        unlearn_timesteps: int,
        damping: float,
        damping_mode: str,
        seed: int,
        cache_dir: str | Path | None = None,
        model_hash: str | None = None,
        grad_cache_bytes: int = 512 << 20,
        job: Job = SINGLE,
    ) -> None:
        self.model = as_task(model)
        self.fisher = fisher
        self.latents = latents
        self.items = latents.subset(score.split)
        self.score = score
        self.unlearn_timesteps = unlearn_timesteps
        self.damping = damping
        self.damping_mode = damping_mode
        self.seed = seed
        self.cache_dir = cache_dir
        self.model_hash = model_hash
        self.job = job  # torchrun: every scoring pass is sharded over the ranks (each rank runs the same protocol)
        self.group_params = {g: target_params(self.model, g) for g in groups}
        union = {n for names in self.group_params.values() for n in names}
        self.theta0 = self.model.params()
        self.union = [n for n in self.theta0 if n in union]
        check_fits(fisher, {n: self.theta0[n] for n in self.union})
        self.theta_norm = {g: params_norm({n: self.theta0[n] for n in names}) for g, names in self.group_params.items()}
        self._grads: OrderedDict[tuple[str, bool], Params] = OrderedDict()
        self._grad_bytes = sum(self.theta0[n].numel() * 4 for n in self.union)
        self._grad_slots = max(1, grad_cache_bytes // max(1, self._grad_bytes))
        self._trajectory: tuple[tuple[str, float, str, bool], Iterator[Params], list[Params]] | None = None
        self._base: dict[bool, torch.Tensor] = {}
        self._queries: dict[str, Any] = {}
        self.row = {item: i for i, item in enumerate(self.items.ids)}

    # ----------------------------------------------------------------- pieces

    def unlearn_config(self, cell: Cell) -> UnlearnConfig:
        """The attribution engine's config equivalent to a cell (what `songtrace attribute` would run)."""
        return UnlearnConfig(lr=cell.lr, steps=cell.steps, group=cell.group, damping=self.damping, damping_mode=self.damping_mode,
                             n_timesteps=self.unlearn_timesteps, seed=self.seed, mask=cell.mask, device=self.score.device)

    def query(self, target_id: str) -> Batch:
        """The target as an attribution query `train:ID` (its noise plan seeded by that id, as `songtrace attribute` does)."""
        if target_id not in self._queries:
            self._queries[target_id] = resolve_query(f"train:{target_id}", QueryContext(latents=self.latents)).batch
        return self._queries[target_id]

    def gradient0(self, target_id: str, mask_unlearn: bool) -> Params:
        """∇θ L(z_tar, θ0) over all grouped weights (`first_query_gradient`), cached per (target, M_U) in a bounded LRU."""
        key = (target_id, mask_unlearn)
        if key in self._grads:
            self._grads.move_to_end(key)
            return self._grads[key]
        config = self.unlearn_config(Cell(1.0, 1, next(iter(self.group_params)), "mixed" if mask_unlearn else "none"))
        g = _on_cpu(first_query_gradient(self.model, self.query(target_id), config, names=self.union))
        self._grads[key] = g
        while len(self._grads) > self._grad_slots:
            self._grads.popitem(last=False)
        return g

    def delta(self, cell: Cell, target_id: str) -> Params:
        """δ = θ' − θ0 on the cell's group after `cell.steps` updates of Eq. 6 (`unlearn_iterates`, the iteration `unlearn` runs).

        Cells that differ only in steps walk one trajectory θ0 → θ1 → ..., kept for the current (target, lr, group, M_U).
        """
        if cell.steps > MAX_STEPS:
            raise SongtraceError(f"steps must be between 1 and {MAX_STEPS}, got {cell.steps}")
        mask_unlearn = mask_setting(cell.mask)[0]
        key = (target_id, cell.lr, cell.group, mask_unlearn)
        if self._trajectory is None or self._trajectory[0] != key:
            config = dataclasses.replace(self.unlearn_config(cell), steps=MAX_STEPS)
            steps = unlearn_iterates(self.model, self.fisher, self.query(target_id), config, grad0=self.gradient0(target_id, mask_unlearn))
            self._trajectory = (key, steps, [])
        _, steps, path = self._trajectory
        while len(path) < cell.steps:
            path.append(_on_cpu(next(steps)))
        return path[cell.steps - 1]

    def base(self, mask_loss: bool) -> torch.Tensor:
        """L(z_i, θ0) for every scored item, once per M_L (on disk when a cache dir is given)."""
        if mask_loss not in self._base:
            self._base[mask_loss] = base_losses(self.model, self.latents, self.score, mask_loss, cache_dir=self.cache_dir,
                                                model_hash=self.model_hash, job=self.job)
        return self._base[mask_loss]

    def scores(self, cell: Cell, target_id: str) -> tuple[np.ndarray, Params]:
        """τ(z_tar, z_i) for every scored item under the cell, and the delta."""
        delta = self.delta(cell, target_id)
        mask_loss = mask_setting(cell.mask)[1]
        tau = score_many(self.model, [delta], self.latents, self.score, mask_loss, base=self.base(mask_loss), job=self.job)[0]
        return tau.numpy(), delta

    def rel_update(self, delta: Mapping[str, torch.Tensor], group: str) -> float:
        """‖δ‖ / ‖θ0‖ on the group's weights: the size of the unlearning step relative to the model."""
        return params_norm(delta) / max(self.theta_norm[group], 1e-30)

    def evaluate(
        self,
        cell: Cell,
        target_id: str,
        unit_embeddings: np.ndarray,
        version_groups: Sequence[str],
        short: Sequence[bool],
        k: int,
        version_top: int,
    ) -> dict[str, Any]:
        """All per-target metrics of one (cell, target), as stored in the grid's per-target log."""
        start = time.perf_counter()
        tau, delta = self.scores(cell, target_id)
        row = self.row[target_id]
        if not np.all(np.isfinite(tau)):  # the update diverged: the worst possible result, recorded as such
            return {"rank": len(tau), "embed_topk": float("nan"), "embed_botk": float("nan"), "artist_precision": float("nan"),
                    "artist_chance": float("nan"), "version_hit": float("nan"), "top_ids": [], "short": bool(short[row]),
                    "n_frames": int(self.items.n_frames[row]), "target_score": float("nan"), "best_other_score": float("nan"),
                    "rel_update": self.rel_update(delta, cell.group), "diverged": True, "seconds": round(time.perf_counter() - start, 3)}
        m = target_metrics(tau, row, unit_embeddings, self.items.artists, version_groups, k, version_top)
        top = m.pop("top_rows")
        others = np.delete(tau, row)
        return {
            **m,
            "top_ids": [self.items.ids[r] for r in top],
            "short": bool(short[row]),
            "n_frames": int(self.items.n_frames[row]),
            "target_score": float(tau[row]),
            "best_other_score": float(others.max()) if others.size else float("nan"),
            "rel_update": self.rel_update(delta, cell.group),
            "diverged": False,
            "seconds": round(time.perf_counter() - start, 3),
        }
