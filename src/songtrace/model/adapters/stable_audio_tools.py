"""stable-audio-tools' conditioned diffusion models (`model_config.json` + weights) behind the model task.

The model is built by the library's own `create_model_from_config` (a `ConditionedDiffusionModelWrapper`
around its `DiTWrapper`) and called through the wrapper's own `forward(x, t, cond=..., mask=...)`,
so the cross-attention / global conditioning layout, the timestep features and the padding mask are
the library's. What songtrace changes is only where the conditioning tensors come from:

- the text conditioner (`t5`) is replaced by `FrozenTextConditioner`, a `Conditioner` with the same
  `proj_out` that reads the T5 `last_hidden_state` and mask cached by `songtrace encode --codec sat:DIR`
  and does what `T5Conditioner.forward` does after its encoder: `proj_out`, then zero masked tokens;
- the timing conditioners (`number`, ids `seconds_start` / `seconds_total`) are the library's own
  modules, called with tensors in the arithmetic of `NumberConditioner.forward` (clamp, normalise,
  embed), so the model runs under `torch.func` (the library's forward takes Python lists);
- the pretransform (VAE) is left out of the attribution model: the latent cache already holds its
  encodings (`songtrace.codec.external`).

The loss is the library's training loss (`DiffusionCondTrainingWrapper.training_step`, objective "v"):
`alphas, sigmas = cos, sin(πt/2)`, `x_t = α x0 + σ ε`, target `α ε − σ x0`, MSE; with `mask_padding`
the library passes the padding mask to the model (its `DiffusionTransformer` ignores it in 0.0.19)
and averages the squared error over real frames, which is our masked loss per item.

Parameter names are the checkpoint's (`model.model.transformer.layers.{i}.self_attn.to_qkv`, ...), so
an unlearned songtrace model directory is a stable-audio-tools state dict (less the pretransform).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from songtrace.data.batch import Conditioning
from songtrace.errors import SongtraceError
from songtrace.extras import import_sat, read_checkpoint, read_sat_config, sat_text_encoder_id, sat_weights_file
from songtrace.model.task import ModelTask, register_task

ARCH = "stable-audio-tools"
BLOCKS = "model.model.transformer.layers."
CONFIG_FILE = "model_config.json"
TEXT_TYPES = ("t5",)  # text conditioners whose encoder output the latent cache holds
TIMING_IDS = ("seconds_start", "seconds_total")


def conditioner_roles(model_config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the one text conditioner's config entry, the timing ids) of a model config; other conditioners are refused."""
    try:
        configs = model_config["model"]["conditioning"]["configs"]
    except (KeyError, TypeError):
        raise SongtraceError(f"{CONFIG_FILE}: no model.conditioning.configs; songtrace needs a text-conditioned model") from None
    text = [c for c in configs if c.get("type") in TEXT_TYPES]
    timing = [c["id"] for c in configs if c.get("type") == "number" and c.get("id") in TIMING_IDS]
    other = [f"{c.get('id')} ({c.get('type')})" for c in configs if c not in text and c.get("id") not in timing]
    if len(text) != 1 or other:
        raise SongtraceError(
            f"{CONFIG_FILE}: songtrace supports one text conditioner of type {'/'.join(TEXT_TYPES)} plus number conditioners "
            f"{' / '.join(TIMING_IDS)}; found {len(text)} text conditioner(s) and {other or 'no'} other(s)"
        )
    if text[0].get("config", {}).get("enable_grad"):
        raise SongtraceError(f"{CONFIG_FILE}: the text encoder is trained (enable_grad), so its output cannot be cached once")
    return text[0], timing


def _model_config_without(model_config: Mapping[str, Any], text_id: str) -> dict[str, Any]:
    """The config with the pretransform and the text conditioner removed (what attribution runs)."""
    cfg = copy.deepcopy(dict(model_config))
    cfg["model"].pop("pretransform", None)
    cond = cfg["model"]["conditioning"]
    cond["configs"] = [c for c in cond["configs"] if c["id"] != text_id]
    return cfg


def text_encoder_dim(text_config: Mapping[str, Any]) -> int:
    """Width of the T5 encoder's output for the text conditioner (the library's own table)."""
    sat = import_sat()
    name = text_config.get("config", {}).get("t5_model_name", "t5-base")
    if name not in sat.T5Conditioner.T5_MODEL_DIMS:
        known = sorted(sat.T5Conditioner.T5_MODEL_DIMS)
        raise SongtraceError(f"{CONFIG_FILE}: unknown T5 model {name!r}; stable-audio-tools knows {known}")
    return int(sat.T5Conditioner.T5_MODEL_DIMS[name])


def text_max_length(text_config: Mapping[str, Any]) -> int:
    """Tokens per caption of the text conditioner (`T5Conditioner`'s `max_length`, default 128)."""
    return int(text_config.get("config", {}).get("max_length", 128))


def make_frozen_text_conditioner(dim: int, output_dim: int, project_out: bool) -> nn.Module:
    """A library `Conditioner` that applies the text conditioner's `proj_out` and mask to cached encoder outputs."""
    sat = import_sat()

    class FrozenTextConditioner(sat.Conditioner):
        """`T5Conditioner.forward` after its encoder: `proj_out(tokens) * mask` (the encoder output comes from the cache)."""

        def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            mask = mask.bool()
            if not isinstance(self.proj_out, nn.Identity):
                tokens = tokens.to(next(self.proj_out.parameters()).dtype)
            return self.proj_out(tokens) * mask.unsqueeze(-1).float(), mask

    return FrozenTextConditioner(dim, output_dim, project_out=project_out)


def number_condition(conditioner: nn.Module, seconds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `NumberConditioner.forward` returns, computed from a tensor: (embedding [B, 1, D], ones [B, 1])."""
    floats = seconds.float().clamp(conditioner.min_val, conditioner.max_val)
    normalized = (floats - conditioner.min_val) / (conditioner.max_val - conditioner.min_val)
    normalized = normalized.to(next(conditioner.embedder.parameters()).dtype)
    embeds = conditioner.embedder(normalized).unsqueeze(1)
    return embeds, torch.ones(embeds.shape[0], 1, dtype=embeds.dtype, device=embeds.device)


class StableAudioToolsDiT(nn.Module):
    """A stable-audio-tools `ConditionedDiffusionModelWrapper` with songtrace's forward `(x_t, t, cond, frame_mask) -> v`.

    `model` and `conditioner` are the wrapper's own submodules (so names match the checkpoint); the
    wrapper itself is kept unregistered and called for every forward.
    """

    def __init__(self, model_config: Mapping[str, Any]) -> None:
        super().__init__()
        sat = import_sat()
        text_config, timing = conditioner_roles(model_config)
        self.text_id = str(text_config["id"])
        self.timing_ids = timing
        try:
            wrapper = sat.create_model_from_config(_model_config_without(model_config, self.text_id))
        except (AssertionError, KeyError, TypeError, ValueError, NotImplementedError) as e:
            raise SongtraceError(f"{CONFIG_FILE}: stable-audio-tools cannot build this model ({type(e).__name__}: {e})") from None
        if not isinstance(wrapper, sat.ConditionedDiffusionModelWrapper) or wrapper.diffusion_objective != "v":
            raise SongtraceError(f"{CONFIG_FILE}: songtrace needs a diffusion_cond model with diffusion_objective 'v'")
        cond_dim = int(model_config["model"]["conditioning"]["cond_dim"])
        project_out = bool(text_config.get("config", {}).get("project_out", False))
        wrapper.conditioner.conditioners[self.text_id] = make_frozen_text_conditioner(text_encoder_dim(text_config), cond_dim, project_out)
        self.model = wrapper.model
        self.conditioner = wrapper.conditioner
        self.__dict__["wrapper"] = wrapper  # not a submodule: its modules are `model` and `conditioner` above
        pre = model_config["model"].get("pretransform")
        ratio = int(pre["config"].get("downsampling_ratio", 1)) if pre else 1
        self.latent_shape = (int(model_config["model"]["io_channels"]), int(model_config["sample_size"]) // ratio)
        self.text_shape = (text_max_length(text_config), text_encoder_dim(text_config))
        self.text_encoder = sat_text_encoder_id(text_config)  # the identity the latent cache must record

    def conditioning_tensors(self, cond: Conditioning) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The dict `MultiConditioner` would return for these items, from the cached encoder outputs."""
        if tuple(cond.text.shape[1:]) != self.text_shape:
            raise SongtraceError(
                f"caption tokens are {tuple(cond.text.shape[1:])} (tokens × width), this model's text conditioner expects "
                f"{self.text_shape}; encode the latent cache with `songtrace encode --codec sat:DIR`"
            )
        conditioners = self.conditioner.conditioners
        out = {self.text_id: conditioners[self.text_id](cond.text, cond.text_mask)}
        values = {"seconds_start": cond.seconds_start, "seconds_total": cond.seconds_total}
        for key in self.timing_ids:
            out[key] = number_condition(conditioners[key], values[key])
        return out

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """v `[B, C, L]` through the library wrapper's own forward (padding mask passed as its `mask`)."""
        extra = {} if frame_mask is None else {"mask": frame_mask.bool()}
        # activation checkpointing (the library's default) changes memory, not values, and torch.func cannot run it
        return self.__dict__["wrapper"](x_t, t, cond=self.conditioning_tensors(cond), use_checkpointing=False, **extra)


@register_task("StableAudioToolsDiT")
class StableAudioToolsTask(ModelTask):
    """A stable-audio-tools DiT: the same block names as the demo DiT under `model.model.transformer.`."""

    kind = ARCH

    def layer_groups(self) -> dict[str, list[str]]:
        """to_kv / cross_attn / self_attn / all over `model.model.transformer.layers.{i}` (seed 002, Table 1)."""
        names = [n for n, _ in self.module.named_parameters() if n.startswith(BLOCKS)]
        return {
            "to_kv": [n for n in names if ".cross_attn.to_kv." in n],
            "cross_attn": [n for n in names if ".cross_attn." in n],
            "self_attn": [n for n in names if ".self_attn." in n],
            "all": names,
        }

    def block_names(self) -> list[str]:
        """`model.model.transformer.layers.{i}` (each outputs the prepended global token and the frame tokens)."""
        return [f"{BLOCKS}{i}" for i in range(len(self.module.model.model.transformer.layers))]

    def last_layer_name(self) -> str:
        """`model.model.transformer.project_out` (followed by the library's residual 1x1 `postprocess_conv`)."""
        return "model.model.transformer.project_out"


# --------------------------------------------------------------------------- a checkpoint folder


def import_checkpoint(sat_dir: str | Path) -> tuple[StableAudioToolsDiT, dict[str, Any]]:
    """Build and load a stable-audio-tools folder: (module in eval mode, spec for the model record)."""
    sat_dir = Path(sat_dir)
    config = read_sat_config(sat_dir)
    module = StableAudioToolsDiT(config)
    path = sat_weights_file(sat_dir)
    state = {k: v for k, v in read_checkpoint(path).items() if not k.startswith("pretransform.")}
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise SongtraceError(f"{path}: weights do not match {CONFIG_FILE} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise SongtraceError(f"{path}: {name} has shape {tuple(state[name].shape)}, {CONFIG_FILE} says {tuple(tensor.shape)}")
    module.load_state_dict(state, strict=True)
    spec = {"model_config": config, "weights_file": path.name, "library_version": import_sat().version, "text_encoder": module.text_encoder}
    return module.eval(), spec


def build_from_record(config: Mapping[str, Any]) -> nn.Module:
    """Builder for `songtrace.model.registry`: `{"arch": "stable-audio-tools", "spec": {"model_config": {...}}}`."""
    try:
        return StableAudioToolsDiT(config["spec"]["model_config"])
    except KeyError as e:
        raise SongtraceError(f"{ARCH} model config lacks {e}") from None
