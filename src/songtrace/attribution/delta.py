"""The unlearned weight delta δ = θ' − θ0 of one query as an artifact, so a score can be recomputed and audited later.

A delta file is safetensors: one tensor per target parameter (its δ), and string metadata naming
what it is the delta of: the query id and the hash of its latent, the unlearning config (and the
run's config hash), the model identity (`ModelTask.identity()`), the Fisher's and latent cache's
content hashes, N, and the content hash of the tensors themselves (checked on load). With the model
and the latent cache, `τ = L(z_i, θ0 + δ) − L(z_i, θ0)` can then be recomputed bit for bit
(`songtrace.attribution.run.recompute_scores`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from songtrace.artifacts import hash_tensors, save_safetensors
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task

DELTA_FORMAT = "songtrace-unlearned-delta/1"
# metadata keys every delta file carries (all strings in the safetensors header)
DELTA_KEYS = ("format", "query_id", "query_hash", "unlearn_config", "config_hash", "model", "fisher", "latents", "n_fisher_items",
              "delta_hash")


@dataclasses.dataclass
class UnlearnedDelta:
    """δ per target parameter and what it is the delta of (query, config, model identity, Fisher, latents)."""

    delta: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def query_id(self) -> str:
        return str(self.meta["query_id"])

    def unlearn_config(self) -> dict[str, Any]:
        """The UnlearnConfig dict the delta was made with."""
        return dict(self.meta["unlearn_config"])

    def check_model(self, model: nn.Module | ModelTask, source: str = "the model") -> None:
        """Refuse a model other than the one the delta was computed from (identities differ)."""
        identity = as_task(model).identity()
        if identity != self.meta["model"]:
            raise SongtraceError(
                f"{source} is not the model this delta was unlearned from (identity {identity[:12]}…, the delta names "
                f"{str(self.meta['model'])[:12]}…)")


def delta_metadata(query_id: str, query_hash: str, unlearn_config: Mapping[str, Any], config_hash: str, model: str, fisher: str,
                   latents: str, n_fisher_items: int, delta: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The metadata record of a delta (JSON-able; strings in the file)."""
    return {"format": DELTA_FORMAT, "query_id": query_id, "query_hash": query_hash, "unlearn_config": dict(unlearn_config),
            "config_hash": config_hash, "model": model, "fisher": fisher, "latents": latents, "n_fisher_items": int(n_fisher_items),
            "delta_hash": hash_tensors(dict(delta))}


def save_delta(path: str | Path, delta: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    """Write δ and its metadata (atomically) to `path`; returns the tensors' content hash."""
    missing = [k for k in DELTA_KEYS if k not in meta]
    if missing:
        raise SongtraceError(f"delta metadata lacks {missing}")
    if meta["delta_hash"] != hash_tensors(dict(delta)):
        raise SongtraceError("delta metadata names other tensors (delta_hash differs)")
    header = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in meta.items()}
    save_safetensors(path, dict(delta), metadata=header)
    return str(meta["delta_hash"])


def load_delta(path: str | Path) -> UnlearnedDelta:
    """Read a delta file back, checking its format and that the tensors are the ones its metadata names."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise SongtraceError(f"{path}: no delta file here")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            delta = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for corrupt files
        raise SongtraceError(f"{path}: not a readable safetensors file ({e})") from None
    if header.get("format") != DELTA_FORMAT:
        raise SongtraceError(f"{path}: not a songtrace delta file (format {header.get('format')!r}, expected {DELTA_FORMAT!r})")
    missing = [k for k in DELTA_KEYS if k not in header]
    if missing:
        raise SongtraceError(f"{path}: delta metadata lacks {missing}")
    meta: dict[str, Any] = dict(header)
    meta["unlearn_config"] = json.loads(header["unlearn_config"])
    meta["n_fisher_items"] = int(header["n_fisher_items"])
    if hash_tensors(delta) != meta["delta_hash"]:
        raise SongtraceError(f"{path}: the tensors do not match the delta_hash in its metadata (file changed or corrupt)")
    return UnlearnedDelta(delta, meta)
