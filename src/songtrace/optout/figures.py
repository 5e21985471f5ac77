"""The figures of an opt-out evaluation, one function each, computed for one model at a time.

Losses use a fixed plan (timesteps and noise seeded per item id), so every model is scored on the
same draws (common random numbers) and a difference between two models is the effect of their
weights, not of sampling. Generations use the same seeds for every model for the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from copy import deepcopy as copy_module
from typing import Any

import numpy as np
import torch

from songtrace.attribution import AttributeConfig, FisherConfig, Query, ScoreConfig, UnlearnConfig, attribute_queries, compute_fisher
from songtrace.attribution.score import item_losses
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.loss import make_plan
from songtrace.embedders.base import Embedder
from songtrace.metrics.alignment import text_audio_alignment
from songtrace.metrics.fd import embed_set, fd_result
from songtrace.metrics.membership import loss_membership
from songtrace.model.task import ModelTask, as_task, eval_mode
from songtrace.model.train import TrainConfig, draw_step, step_loss
from songtrace.optout.closeness import ArtistClassifier, set_similarity


def per_item_losses(task: ModelTask, data: LatentSet, n_timesteps: int, seed: int, mask: bool, batch_size: int = 16) -> np.ndarray:
    """L(z_i, θ) `[N]` on a fixed plan seeded per item id (the same for every model)."""
    out = []
    with torch.no_grad(), eval_mode(task.module):
        for start in range(0, len(data), batch_size):
            batch = data.batch(range(start, min(len(data), start + batch_size)))
            plan = make_plan(batch.ids, n_timesteps, task.latent_shape, seed)
            out.append(item_losses(task, None, batch, plan, mask, n_timesteps).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def loss_figures(losses: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None) -> dict[str, float | None]:
    """Mean loss per set and, against the reference (original) model's losses on the same items, the change."""
    out: dict[str, float | None] = {}
    for name, values in losses.items():
        out[name] = float(values.mean()) if values.size else None
        if reference is not None:
            out[f"delta_{name}"] = float((values - reference[name]).mean()) if values.size else None
    if reference is not None and out.get("delta_forget") is not None and out.get("delta_retain") is not None:
        out["forget_minus_retain"] = float(out["delta_forget"]) - float(out["delta_retain"])  # type: ignore[arg-type]
    return out


def membership_figure(member_losses: np.ndarray, nonmember_losses: np.ndarray | None, reference: str) -> dict[str, Any] | None:
    """The loss attack's AUC, forget tracks (members) against never-seen tracks; None without non-members."""
    if nonmember_losses is None or nonmember_losses.size == 0:
        return None
    return loss_membership(member_losses, nonmember_losses, reference).to_dict()


def closeness_figures(generated: np.ndarray, kinds: Sequence[str], training: np.ndarray, in_forget: np.ndarray,
                      classifier: ArtistClassifier | None, artists: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per prompt kind: similarity of the generations to the forget tracks and the classifier's P(forgotten artist)."""
    out: dict[str, dict[str, float]] = {}
    kinds_arr = np.asarray(kinds)
    for kind in dict.fromkeys(kinds):
        emb = generated[kinds_arr == kind]
        row = set_similarity(emb, training, in_forget)
        if classifier is not None and artists:
            row["artist_probability"] = float(classifier.probability(emb, artists).mean())
        out[kind] = row
    return out


def quality_figures(embedder: Embedder, waves: Sequence[np.ndarray], prompts: Sequence[str], original_waves: Sequence[np.ndarray],
                    sr: int) -> dict[str, Any]:
    """Retain-prompt quality: FD against the original model's generations of the same prompts and seeds, text-audio alignment."""
    out: dict[str, Any] = {}
    own, ref = embed_set(embedder, list(waves), sr), embed_set(embedder, list(original_waves), sr)
    if min(len(own), len(ref)) < 2:
        out["fd_vs_original"], out["fd_note"] = None, f"too few embedding windows for an FD ({len(own)}); generate more retain prompts"
    else:
        fd = fd_result(ref, own, embedder.name, embedder.content_hash, extrapolate=False)
        out["fd_vs_original"], out["fd_note"] = fd.fd, fd.note
    out["alignment"] = text_audio_alignment(embedder, prompts, waves, sr).mean if embedder.has_text else None
    return out


def figure_at(figures: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path ("closeness.caption.artist_probability") of a nested figure dict; None where it is missing."""
    node: Any = figures
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def credit_figures(task: ModelTask, latents: LatentSet, queries: Sequence[tuple[str, Batch]], forget_ids: Sequence[str],
                   artists: Sequence[str], fisher_timesteps: int, unlearn: UnlearnConfig, score: ScoreConfig) -> dict[str, Any]:
    """Attribution by unlearning (seed 002) of the model's forget-prompt generations over the whole train split:
    the forgotten artists' credit share and the forget items' share of the positive τ, averaged over queries."""
    fisher = compute_fisher(task, latents, FisherConfig(n_timesteps=fisher_timesteps, seed=score.seed, group=unlearn.group))
    qs = [Query(qid, "generated", batch) for qid, batch in queries]
    results = attribute_queries(task, fisher, latents, qs, AttributeConfig(unlearn=unlearn, score=score))
    data = latents.subset(score.split)
    forget = np.isin(np.asarray(data.ids), np.asarray(list(forget_ids)))
    artist_shares, item_shares = [], []
    for r in results:
        credits = r.credits.set_index("artist")["share"]
        artist_shares.append(float(sum(float(credits.get(a, 0.0)) for a in artists)))
        pos = r.scores.clamp_min(0).numpy()
        item_shares.append(float(pos[forget].sum() / pos.sum()) if pos.sum() > 0 else 0.0)
    return {"artist_share": float(np.mean(artist_shares)) if artist_shares else None,
            "forget_items_share": float(np.mean(item_shares)) if item_shares else None,
            "n_queries": len(results), "chance_items_share": float(forget.mean())}


def relearn(task: ModelTask, retain: LatentSet, steps: int, lr: float, batch_size: int, seed: int, mask: bool) -> ModelTask:
    """A copy of the model fine-tuned `steps` Adam steps on retain data only, with training's own step draws and loss."""
    copy = as_task(copy_module(task.module))
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, warmup=1, mask_padding=mask)
    optimizer = torch.optim.Adam(copy.module.parameters(), lr=lr)
    with eval_mode(copy.module):
        for step in range(steps):
            draws = draw_step(len(retain), cfg, step, copy.latent_shape)
            loss = step_loss(copy, retain.batch(draws.rows.tolist()), draws, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return copy
