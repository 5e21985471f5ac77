"""The unlearning objectives, as small pure functions of losses and weights (minimised by the loop).

Notation: L_f = the forget set's diffusion loss, L_r = the retain set's, θ0 the original weights,
δ = θ − θ0, F the diagonal Fisher, N the number of training items.

- gradient ascent (GA, seed 000):       −L_f
- gradient difference (GradDiff):       −L_f + α L_r
- EWC (seed 002 Eq. 5 on a set S):      −Σ_{z∈S} L(z, θ) + (N/2) δᵀ (F + λ) δ
- random labels (RL, seed 000; SalUn):  L(forget audio, another track's caption) [+ α L_r]
- bounded mirrored ascent (MUCS):       L_r − λ · mean_i min(L_f,i, L_null)

The SalUn saliency mask keeps the `fraction` of weights with the largest |∂L_f/∂θ| at θ0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from songtrace.data.batch import Batch
from songtrace.errors import SongtraceError

Params = dict[str, torch.Tensor]


def ascent_objective(forget_loss: torch.Tensor) -> torch.Tensor:
    """GA: maximise the forget loss (minimise its negative)."""
    return -forget_loss


def graddiff_objective(forget_loss: torch.Tensor, retain_loss: torch.Tensor, alpha: float) -> torch.Tensor:
    """GradDiff: ascend on the forget set and descend on the retain set, weighted by α."""
    return -forget_loss + alpha * retain_loss


def ewc_penalty(delta: Mapping[str, torch.Tensor], fisher: Mapping[str, torch.Tensor], n_train: int, damping: float) -> torch.Tensor:
    """(N/2) δᵀ (F + λ) δ for a diagonal F: the quadratic approximation of the training loss change (seed 002 Eq. 4-5)."""
    total = sum(((fisher[k] + damping) * d.square()).sum() for k, d in delta.items())
    return 0.5 * n_train * torch.as_tensor(total)


def ewc_objective(forget_loss: torch.Tensor, n_forget: int, penalty: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 5 for a set: −Σ_{z∈S} L(z) (estimated as |S| × the batch mean) + weight × the Fisher penalty (weight 1 = Eq. 5)."""
    return -n_forget * forget_loss + weight * penalty


def bounded_objective(forget_losses: torch.Tensor, retain_loss: torch.Tensor, null_loss: float, lam: float) -> torch.Tensor:
    """MUCS-style mirrored ascent: L_r − λ · mean_i min(L_f,i, L_null); an item at the null loss gets no more ascent."""
    capped = torch.minimum(forget_losses, torch.full_like(forget_losses, float(null_loss)))
    return retain_loss - lam * capped.mean()


def relabel(forget: Batch, donors: Batch) -> Batch:
    """The forget audio with the donors' captions (random labelling); the timing of each forget item is kept."""
    if len(forget) != len(donors):
        raise SongtraceError(f"random labels: {len(forget)} forget items but {len(donors)} donor captions")
    cond = forget.cond._replace(text=donors.text, text_mask=donors.text_mask)
    return forget.with_cond(cond)


def saliency_mask(grads: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """SalUn: True on the `fraction` of weights (over all target parameters) with the largest |gradient|.

    Ties at the threshold are broken by position so that exactly round(fraction × n) weights are kept.
    """
    if not 0 < fraction <= 1:
        raise SongtraceError(f"saliency fraction must be in (0, 1], got {fraction}")
    names = sorted(grads)
    flat = torch.cat([grads[k].detach().abs().reshape(-1).to(torch.float64) for k in names])
    keep = max(1, round(fraction * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, keep, sorted=False).indices] = True
    out, start = {}, 0
    for k in names:
        n = grads[k].numel()
        out[k] = chosen[start : start + n].reshape(grads[k].shape)
        start += n
    return out


def masked_grads(grads: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> Params:
    """Gradients zeroed outside the mask (only salient weights move)."""
    return {k: g * mask[k].to(g.dtype) if k in mask else g for k, g in grads.items()}
