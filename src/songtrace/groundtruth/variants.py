"""The attribution methods scored against the ground truth: registry label -> (method name, options).

Unlearning enters at the self-influence search's best configuration (`best`) and at variants of
it (learning rate ×10 and ÷10, two steps, each target group, each mask); Attribute-by-Unlearning
(to_kv, one step), MUCS, the fast index at several k, and every non-counterfactual baseline. Every
method comes from the baselines registry (`songtrace.baselines.build_method`), so a new method is
one entry here and needs no retraining.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from songtrace.attribution.unlearn import UnlearnConfig
from songtrace.errors import SongtraceError

Variant = Callable[[UnlearnConfig], tuple[str, dict[str, Any]]]

SIMILARITY_BASELINES = ("embedding", "version", "activations", "representer", "gradient")


def _unlearning(**change: Any) -> Variant:
    def make(best: UnlearnConfig) -> tuple[str, dict[str, Any]]:
        fields = {k: (v(best) if callable(v) else v) for k, v in change.items()}
        return "unlearning", {"unlearn_config": dataclasses.replace(best, **fields)}

    return make


def _fast(k: int) -> Variant:
    def make(best: UnlearnConfig) -> tuple[str, dict[str, Any]]:
        return "fast", {"unlearn_config": dataclasses.replace(best, steps=1), "dim": k}

    return make


def _plain(name: str, **options: Any) -> Variant:
    return lambda best: (name, dict(options))


VARIANTS: dict[str, Variant] = {
    "unlearning": _unlearning(),
    "unlearning lr×10": _unlearning(lr=lambda b: b.lr * 10),
    "unlearning lr÷10": _unlearning(lr=lambda b: b.lr / 10),
    "unlearning 2 steps": _unlearning(steps=2),
    "unlearning to_kv": _unlearning(group="to_kv"),
    "unlearning cross_attn": _unlearning(group="cross_attn"),
    "unlearning self_attn": _unlearning(group="self_attn"),
    "unlearning all": _unlearning(group="all"),
    "unlearning mask none": _unlearning(mask="none"),
    "unlearning mask both": _unlearning(mask="both"),
    "unlearning mask M_L": _unlearning(mask="M_L"),
    "unlearning mask mixed": _unlearning(mask="mixed"),
    "attribute_by_unlearning": lambda best: ("attribute_by_unlearning", {"unlearn_config": best}),
    "mucs": _plain("mucs"),
    "fast k=64": _fast(64),
    "fast k=256": _fast(256),
    "fast k=1024": _fast(1024),
    "fast k=4096": _fast(4096),
    "embedding": _plain("embedding"),
    "version": _plain("version"),
    "activations": _plain("activations"),
    "representer": _plain("representer"),
    "gradient": _plain("gradient"),
}

DEFAULT_VARIANTS = tuple(VARIANTS)


def variant(label: str, best: UnlearnConfig) -> tuple[str, dict[str, Any]]:
    """(registered method name, its options) of a label, with an error listing the labels."""
    if label not in VARIANTS:
        raise SongtraceError(f"unknown method variant {label!r}; valid: {', '.join(VARIANTS)}")
    return VARIANTS[label](best)
