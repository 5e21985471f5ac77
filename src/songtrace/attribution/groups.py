"""Target layers for unlearning: a named layer group of the model, or a regex over parameter names.

Seed 002, Table 1 compares unlearning cross-attention `to_kv` weights, the cross-attention layers,
the self-attention layers and all transformer layers; the model's task names these groups
(`ModelTask.layer_groups()`), and a user can pick any other set with a regex.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task

REGEX_PREFIX = "re:"
_REGEX_CHARS = set(".*+?[](){}|^$\\")


def is_regex(group: str) -> bool:
    """True when `group` is meant as a regex: it starts with "re:" or holds a regex metacharacter."""
    return group.startswith(REGEX_PREFIX) or any(c in _REGEX_CHARS for c in group)


def target_params(model: nn.Module | ModelTask, group_or_regex: str) -> list[str]:
    """Names of the parameters to unlearn: a layer group of the model, or a regex (searched) over parameter names.

    An unknown group, a bad regex or a regex matching no parameter raises `SongtraceError` listing
    the valid groups. Names come back in the model's parameter order.
    """
    task = as_task(model)
    names = [n for n, _ in task.module.named_parameters()]
    try:
        groups = task.layer_groups()
    except SongtraceError:
        if not is_regex(group_or_regex):
            raise
        groups = {}
    valid = ", ".join(sorted(groups)) or "(none)"
    if not is_regex(group_or_regex):
        if group_or_regex not in groups:
            raise SongtraceError(
                f"unknown layer group {group_or_regex!r}; valid groups: {valid} (or a regex over parameter names, e.g. 're:blocks\\.0\\.')"
            )
        chosen = set(groups[group_or_regex])
        unknown = chosen - set(names)
        if unknown:
            raise SongtraceError(f"layer group {group_or_regex!r} names parameters the model lacks: {sorted(unknown)[:5]}")
        if not chosen:
            raise SongtraceError(f"layer group {group_or_regex!r} is empty in this model; valid groups: {valid}")
        return [n for n in names if n in chosen]
    pattern = group_or_regex[len(REGEX_PREFIX) :] if group_or_regex.startswith(REGEX_PREFIX) else group_or_regex
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise SongtraceError(f"bad parameter regex {pattern!r} ({e}); valid groups: {valid}") from None
    matched = [n for n in names if rx.search(n)]
    if not matched:
        raise SongtraceError(f"regex {pattern!r} matches no parameter of the model; valid groups: {valid}")
    return matched


def split_params(model: nn.Module | ModelTask, names: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """θ0 split into (target, frozen) dicts of detached tensors, for `torch.func` calls."""
    chosen = set(names)
    target, frozen = {}, {}
    for n, p in as_task(model).module.named_parameters():
        (target if n in chosen else frozen)[n] = p.detach()
    return target, frozen


def param_shapes(params: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
    """Name -> shape, for checking that a Fisher or a delta fits a model."""
    return {k: list(v.shape) for k, v in params.items()}
