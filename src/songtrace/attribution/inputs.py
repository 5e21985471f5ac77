"""What an attribution run reads: the model and the latent cache, fingerprinted so results name their inputs.

A Fisher, a base-loss cache and a score table are only valid for the exact weights and data they
were computed on, so each records `params_hash(model)` and `LatentSet.content_hash()`, and every
consumer refuses a mismatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from songtrace.artifacts import hash_tensors
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.home import stage_dir


def params_hash(model: nn.Module) -> str:
    """Content hash of a model's weights and buffers (names, dtypes, shapes, bytes)."""
    return hash_tensors(dict(model.state_dict()))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put the model in eval mode (no dropout) for the block and restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def load_model(model_dir: str | Path) -> nn.Module:
    """Load a trained diffusion model from its artifact directory (`songtrace.model.registry.load_model`)."""
    from songtrace.model.registry import load_model as registry_load

    return registry_load(Path(model_dir))


def load_latents(latents_dir: str | Path) -> LatentSet:
    """Load a latent cache directory."""
    return LatentSet.load(Path(latents_dir))


def resolve_artifact(home: str | Path | None, stage: str, name_or_path: str | Path) -> Path:
    """An artifact directory from a name under `<home>/<stage>/` or from a path to an existing directory."""
    p = Path(name_or_path)
    if p.is_dir() and (p / "config.json").exists():
        return p
    return stage_dir(home, stage, str(name_or_path))


def check_latent_shape(model: nn.Module, latents: LatentSet) -> None:
    """Refuse data whose latent shape differs from the model's."""
    shape = getattr(model, "latent_shape", None)
    if shape is not None and tuple(shape) != tuple(latents.latent_shape):
        raise SongtraceError(f"the latent cache holds latents of shape {latents.latent_shape} but the model expects {tuple(shape)}")


def model_latent_shape(model: nn.Module, latents: LatentSet | None = None) -> tuple[int, int]:
    """(channels, frames) the model works on: its `latent_shape`, else the data's."""
    shape = getattr(model, "latent_shape", None)
    if shape is not None:
        return int(shape[0]), int(shape[1])
    if latents is None:
        raise SongtraceError(f"{type(model).__name__} has no latent_shape attribute")
    return latents.latent_shape

