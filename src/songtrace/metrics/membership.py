"""Loss-based membership inference: can an attacker tell training members from never-seen items by their loss?

The attack scores an item by its diffusion loss (lower = more likely a member; Carlini et al.'s
loss attack, used for diffusion models by Matsumoto et al. and Duan et al.). Its success is the
ROC AUC of separating members from non-members: 0.5 = indistinguishable, 1 = every member has a
lower loss than every non-member. After an opt-out, the AUC of the forgotten tracks against
never-seen tracks of the same artist should fall to what a model never trained on them gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from songtrace.errors import SongtraceError


def _finite_1d(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise SongtraceError(f"membership inference: no {name}")
    if not np.all(np.isfinite(arr)):
        raise SongtraceError(f"membership inference: the {name} contain NaN or infinite values")
    return arr


def auc_lower_is_member(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray) -> float:
    """P(score of a member < score of a non-member) + ½ P(tie): the Mann-Whitney ROC AUC (exact, any sample sizes)."""
    m = _finite_1d("member scores", member_scores)
    n = _finite_1d("non-member scores", nonmember_scores)
    both = np.concatenate([m, n])
    order = np.argsort(both, kind="stable")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # average ranks of ties (1-based), largest score = highest rank
    start = 0
    while start < both.size:
        stop = start
        while stop + 1 < both.size and sorted_vals[stop + 1] == sorted_vals[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2.0 + 1.0
        start = stop + 1
    # U of the non-members (higher score = non-member) = pairs where a non-member outscores a member
    u = ranks[m.size :].sum() - n.size * (n.size + 1) / 2.0
    return float(u / (m.size * n.size))


@dataclasses.dataclass(frozen=True)
class MembershipResult:
    """A loss attack's AUC with its sample sizes and what the non-members were."""

    auc: float
    n_members: int
    n_nonmembers: int
    member_loss: float
    nonmember_loss: float
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def loss_membership(member_losses: Sequence[float] | np.ndarray, nonmember_losses: Sequence[float] | np.ndarray,
                    reference: str = "") -> MembershipResult:
    """The loss attack on members vs non-members (`reference` says which non-members, for the record)."""
    m = _finite_1d("member losses", member_losses)
    n = _finite_1d("non-member losses", nonmember_losses)
    return MembershipResult(auc_lower_is_member(m, n), int(m.size), int(n.size), float(m.mean()), float(n.mean()), reference)
