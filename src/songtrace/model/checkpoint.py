"""The resumable training state: raw weights, EMA weights, AdamW moments, step and logged curves.

One file, `<out>/state/checkpoint.safetensors`, written atomically, so a run killed at any moment
resumes from the last checkpoint. The random draws of step k are seeded by (seed, k) alone, so no
generator state is needed: the resumed run repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from songtrace.artifacts import load_safetensors, save_safetensors
from songtrace.errors import SongtraceError

STATE_FILE = Path("state") / "checkpoint.safetensors"


@dataclasses.dataclass
class TrainState:
    """Everything a training run needs to continue: model, optimiser, EMA, step, logs."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: dict[str, torch.Tensor]
    step: int = 0
    log: dict[str, Any] = dataclasses.field(default_factory=dict)


def save_state(path: str | Path, state: TrainState) -> None:
    """Write the training state (tensors in safetensors, logs as JSON metadata) atomically."""
    names = [n for n, _ in state.model.named_parameters()]
    params = dict(state.model.named_parameters())
    tensors: dict[str, torch.Tensor] = {"step": torch.tensor([state.step], dtype=torch.int64)}
    for name in names:
        tensors[f"param/{name}"] = params[name]
        tensors[f"ema/{name}"] = state.ema[name]
        opt_state = state.optimizer.state.get(params[name], {})
        for key in ("step", "exp_avg", "exp_avg_sq"):
            if key in opt_state:
                value = opt_state[key]
                tensors[f"adam_{key}/{name}"] = value if torch.is_tensor(value) else torch.tensor(float(value))
    save_safetensors(path, tensors, metadata={"log": json.dumps(state.log)})


def load_state(path: str | Path, state: TrainState) -> TrainState:
    """Restore a state saved by `save_state` into the given model/optimiser (same architecture)."""
    from safetensors import safe_open

    path = Path(path)
    tensors = load_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        log = json.loads((f.metadata() or {}).get("log", "{}"))
    params = dict(state.model.named_parameters())
    try:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[f"param/{name}"])
        ema = {name: tensors[f"ema/{name}"].clone() for name in params}
    except KeyError as e:
        raise SongtraceError(f"{path}: training checkpoint lacks {e}; delete it to restart training") from None
    order = {id(p): i for i, p in enumerate(state.optimizer.param_groups[0]["params"])}
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, p in params.items():
        if f"adam_exp_avg/{name}" in tensors:
            opt_state[order[id(p)]] = {key: tensors[f"adam_{key}/{name}"] for key in ("step", "exp_avg", "exp_avg_sq")}
    saved = state.optimizer.state_dict()
    state.optimizer.load_state_dict({"state": opt_state, "param_groups": saved["param_groups"]})
    return TrainState(state.model, state.optimizer, ema, int(tensors["step"][0]), log)
