"""Robustness of an opt-out: sequential opt-outs (do earlier artists come back?) and relearning on retain data.

`sequential_optout` forgets several sets one after another, each step starting from the previous
checkpoint (as a model serving opt-out requests over time would). `forgetting_matrix` scores every
step's model on every forget set: entry [k][j] is set j's loss change from the original minus the
retain set's, after step k (0 = set j is fitted like the rest; an entry that shrinks for k > j
means set j is coming back). `relearn` (in `figures`) fine-tunes on retain data only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask
from songtrace.optout.figures import per_item_losses
from songtrace.optout.forget import ForgetSpec
from songtrace.optout.run import OptoutResult, optout


def sequential_optout(
    model_dir: str | Path,
    latents_dir: str | Path,
    specs: Sequence[ForgetSpec],
    method_name: str,
    out_root: str | Path,
    settings: Mapping[str, Any] | None = None,
    home: str | Path | None = None,
    world_dir: str | Path | None = None,
    overwrite: bool = False,
) -> list[OptoutResult]:
    """Forget `specs` one after another with one method: step k unlearns from step k−1's checkpoint (`<out_root>/step<k>`)."""
    if not specs:
        raise SongtraceError("sequential opt-out: no forget sets given")
    results: list[OptoutResult] = []
    current = Path(model_dir)
    for k, spec in enumerate(specs, 1):
        result = optout(current, latents_dir, spec, method_name, Path(out_root) / f"step{k}", settings=dict(settings or {}),
                        home=home, world_dir=world_dir, overwrite=overwrite)
        results.append(result)
        current = result.out_dir
    return results


def forgetting_matrix(original: ModelTask, steps: Sequence[ModelTask], latents: LatentSet, forget_sets: Sequence[Sequence[str]],
                      retain_ids: Sequence[str], n_timesteps: int, seed: int, mask: bool = True) -> list[list[float]]:
    """[k][j] = (L(set j) − L0(set j)) − (L(retain) − L0(retain)) after step k, on a fixed plan (common random numbers)."""
    row = {item: i for i, item in enumerate(latents.ids)}

    def losses(task: ModelTask, ids: Sequence[str]) -> np.ndarray:
        return per_item_losses(task, latents.take([row[i] for i in ids]), n_timesteps, seed, mask)

    base_sets = [losses(original, ids) for ids in forget_sets]
    base_retain = losses(original, retain_ids)
    out = []
    for task in steps:
        retain_change = float((losses(task, retain_ids) - base_retain).mean())
        out.append([float((losses(task, ids) - base).mean()) - retain_change for ids, base in zip(forget_sets, base_sets, strict=True)])
    return out


def comeback(matrix: Sequence[Sequence[float]]) -> list[float | None]:
    """For each set j: the share of its forgetting margin right after its own step that is lost by the last step
    (1 − M[last][j] / M[j][j]; 0 = it stayed forgotten, 1 = fully back, < 0 = forgotten further); None when M[j][j] ≤ 0."""
    last = matrix[-1]
    return [None if matrix[j][j] <= 0 else 1.0 - last[j] / matrix[j][j] for j in range(len(matrix))]
