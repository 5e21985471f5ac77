"""The best unlearning configuration of a model, kept per model identity (writer: selfinfluence; readers: attribute, compare).

`songtrace selfinfluence` finds the (lr, steps, group, mask) that ranks unlearned training tracks
first for one model and saves it as `<home>/attribution/best_configs/<identity>.json`, where the
identity is `ModelTask.identity()` (the content hash of the weights). `songtrace attribute` and
`songtrace compare` start from that file for the same model only, so tuning model B never drops or
replaces model A's configuration. The single file of older versions,
`<home>/attribution/best_config.json`, is still read when it names the same model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from songtrace.artifacts import read_json, write_json
from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.errors import SongtraceError
from songtrace.home import resolve_home
from songtrace.model.task import ModelTask, model_identity

BEST_CONFIGS = ("attribution", "best_configs")
LEGACY_BEST_CONFIG = ("attribution", "best_config.json")

ModelRef = str | Path | nn.Module | ModelTask


def best_config_path(home: str | Path | None, identity: str) -> Path:
    """Where the best configuration of the model with this identity lives: `<home>/attribution/best_configs/<identity>.json`."""
    if not identity or any(c in identity for c in "/\\.") or identity.strip() != identity:
        raise SongtraceError(f"not a model identity: {identity!r} (expected the content hash ModelTask.identity() returns)")
    return resolve_home(home).joinpath(*BEST_CONFIGS, f"{identity}.json")


def identity_of(model: ModelRef) -> str:
    """The model identity of a model directory, a module or a task (`ModelTask.identity()`, the one identity)."""
    if isinstance(model, str | Path):
        from songtrace.model.registry import load_task

        return load_task(model).identity()
    return model_identity(model)


def save_best_config(home: str | Path | None, record: Mapping[str, Any], path: str | Path | None = None) -> Path:
    """Write a best-configuration record (`{"unlearn": UnlearnConfig dict, "inputs": {"model": identity, ...}, ...}`).

    The file is named by `record["inputs"]["model"]` (under `home`) unless `path` is given; returns the path written.
    """
    identity = record.get("inputs", {}).get("model")
    if not identity:
        raise SongtraceError("a best configuration must record the identity of its model (inputs.model)")
    UnlearnConfig.from_dict(record["unlearn"])  # refuse a record attribute could not read
    out = Path(path) if path is not None else best_config_path(home, str(identity))
    write_json(out, dict(record))
    return out


def find_best_config(home: str | Path | None, identity: str) -> tuple[dict[str, Any], Path] | None:
    """The saved best-configuration record of the model with this identity and its path, or None."""
    for path in (best_config_path(home, identity), resolve_home(home).joinpath(*LEGACY_BEST_CONFIG)):
        if path.exists():
            record = read_json(path)
            if record.get("inputs", {}).get("model") == identity and "unlearn" in record:
                return record, path
    return None


def default_unlearn_config(home: str | Path | None, model: ModelRef) -> tuple[UnlearnConfig, str | None]:
    """The unlearning config `attribute` and `compare` start from: the best one `songtrace selfinfluence`
    saved for this very model (same `ModelTask.identity()`), else the defaults.

    `model` is a model directory, a module or a task. Returns the config and the path it came from (None for the defaults).
    """
    found = find_best_config(home, identity_of(model))
    if found is None:
        return UnlearnConfig(), None
    record, path = found
    try:
        config = UnlearnConfig.from_dict(record["unlearn"])
    except (SongtraceError, TypeError, KeyError) as e:
        raise SongtraceError(f"{path}: not a valid unlearning configuration ({e}); rerun `songtrace selfinfluence` or delete it") from None
    return config, str(path)


def resolve_unlearn_config(home: str | Path | None, model: ModelRef, **given: Any) -> tuple[UnlearnConfig, str | None]:
    """The unlearning config of a run: the model's default (`default_unlearn_config`) with every given, non-None setting on top.

    `given` holds UnlearnConfig fields (lr, steps, group, mask, damping, damping_mode, n_timesteps, seed, ...);
    the source is the best-config path the defaults came from, or None.
    """
    fields = {f.name for f in dataclasses.fields(UnlearnConfig)}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise SongtraceError(f"unknown unlearning settings {unknown}; valid: {', '.join(sorted(fields))}")
    base, source = default_unlearn_config(home, model)
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None}), source
