"""diffusers' Stable Audio (`StableAudioDiTModel` + `StableAudioProjectionModel`) behind the model task.

Conventions, checked against `StableAudioPipeline` and `CosineDPMSolverMultistepScheduler`:

- noise: the scheduler works in EDM terms, `x = x0 + σ ε`, feeds the model `c_in · x` with
  `c_in = 1 / sqrt(σ² + σ_data²)` and the timestep `atan(σ) · 2/π`, and reads the output as v
  (`x0 = c_skip · x + c_out · v`, `c_out = −σ σ_data / sqrt(σ² + σ_data²)`). With `σ_data = 1` and
  `σ = tan(πt/2)` that is exactly our cosine v-objective: model input `α_t x0 + σ_t ε`, timestep t,
  target `v = α_t ε − σ_t x0` (`scheduler_matches` refuses any other scheduler setting);
- text: the cache holds the T5 encoder's `last_hidden_state` and the tokenizer's attention mask
  (padded to `model_max_length`, as the pipeline tokenizes); like `encode_prompt`, the tokens go
  through `projection.text_projection` and are then multiplied by the mask. The pipeline passes no
  `encoder_attention_mask`: padded tokens stay in cross-attention as zero vectors, so we do the same
  (passing the mask would change every prediction; tests/model/test_diffusers_import.py shows it);
- timing: `seconds_start` / `seconds_total` through the projection's number conditioners;
  `encoder_hidden_states = [text, start, end]`, `global_hidden_states = [start ‖ end]`;
- padding: the pipeline gives the transformer no `attention_mask`, and Stable Audio models are
  trained attending to padded frames, so by default `frame_mask` only masks the loss
  (`attend_padding=True`); `attend_padding=False` also hides padded frames as attention keys.

Layer groups in diffusers' names: `transformer_blocks.{i}.attn1` (self-attention),
`attn2` (cross-attention; `attn2.to_k` / `attn2.to_v` = to_kv), and `all` = every block including `ff`.
Needs diffusers (the `diffusers` extra).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from songtrace.data.batch import Conditioning
from songtrace.errors import SongtraceError
from songtrace.extras import check_pipeline_dir, diffusers_text_encoder_id, import_diffusers, pretrained_options
from songtrace.model.task import ModelTask, register_task

PREFIX = "transformer.transformer_blocks."
ARCH = "diffusers-stable-audio"


def _diffusers() -> Any:
    lib = import_diffusers()
    return lib.StableAudioDiTModel, lib.StableAudioProjectionModel


class DiffusersStableAudioDiT(nn.Module):
    """A `StableAudioDiTModel` and its projection model with songtrace's forward `(x_t, t, cond, frame_mask) -> v`."""

    def __init__(self, transformer: nn.Module, projection: nn.Module, attend_padding: bool = True) -> None:
        super().__init__()
        self.transformer = transformer
        self.projection = projection
        self.attend_padding = attend_padding
        self.latent_shape = (int(transformer.config.in_channels), int(transformer.config.sample_size))
        self.text_dim = int(projection.config.text_encoder_dim)
        self.text_encoder: str | None = None  # identity of the text encoder the cache must come from (set on import)

    @classmethod
    def from_configs(cls, transformer_config: Mapping[str, Any], projection_config: Mapping[str, Any],
                     attend_padding: bool = True) -> DiffusersStableAudioDiT:
        """A randomly initialised model from the two diffusers configs (dicts as in their config.json)."""
        dit_cls, proj_cls = _diffusers()
        return cls(dit_cls.from_config(dict(transformer_config)), proj_cls.from_config(dict(projection_config)), attend_padding)

    @classmethod
    def from_pipeline(cls, pipeline_dir: str | Path, attend_padding: bool = True) -> DiffusersStableAudioDiT:
        """Load `transformer/` and `projection_model/` of a diffusers Stable Audio pipeline folder."""
        dit_cls, proj_cls = _diffusers()
        return cls(dit_cls.from_pretrained(str(pipeline_dir), subfolder="transformer", **pretrained_options()),
                   proj_cls.from_pretrained(str(pipeline_dir), subfolder="projection_model", **pretrained_options()), attend_padding)

    def context(self, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor]:
        """(`encoder_hidden_states` [B, S+2, D], `global_hidden_states` [B, 1, 2D]) exactly as the pipeline builds them."""
        proj = self.projection(text_hidden_states=cond.text, start_seconds=cond.seconds_start, end_seconds=cond.seconds_total)
        tokens = proj.text_hidden_states * cond.text_mask[..., None].to(proj.text_hidden_states.dtype)
        start, end = proj.seconds_start_hidden_states, proj.seconds_end_hidden_states
        return torch.cat([tokens, start, end], dim=1), torch.cat([start, end], dim=2)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """v `[B, C, L]`: songtrace's arguments mapped onto `StableAudioDiTModel.forward` (see the module docstring)."""
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        context, global_states = self.context(cond)
        rotary = get_1d_rotary_pos_embed(
            self.transformer.config.attention_head_dim // 2, x_t.shape[2] + global_states.shape[1], use_real=True,
            repeat_interleave_real=False,
        )
        attention_mask = None if self.attend_padding or frame_mask is None else frame_mask.bool()
        return self.transformer(
            x_t, t, encoder_hidden_states=context, global_hidden_states=global_states, rotary_embedding=rotary,
            attention_mask=attention_mask, return_dict=False,
        )[0]


@register_task("DiffusersStableAudioDiT")
class DiffusersStableAudioTask(ModelTask):
    """diffusers' Stable Audio DiT: groups, blocks and last layer in diffusers' names.

    Each `transformer_blocks.{i}` outputs the prepended global token and the frame tokens `[B, 1 + L, W]`;
    the last layer is `proj_out` (width -> channels per frame), followed in diffusers by a residual
    1x1 `postprocess_conv`, so for representer points v is only approximately linear in its input.
    """

    kind = ARCH

    def layer_groups(self) -> dict[str, list[str]]:
        """The attribution groups in diffusers' names (attn1 = self-attention, attn2 = cross-attention, ff in `all`)."""
        names = [n for n, _ in self.module.named_parameters() if n.startswith(PREFIX)]
        return {
            "to_kv": [n for n in names if ".attn2.to_k." in n or ".attn2.to_v." in n],
            "cross_attn": [n for n in names if ".attn2." in n],
            "self_attn": [n for n in names if ".attn1." in n],
            "all": names,
        }

    def block_names(self) -> list[str]:
        """`transformer.transformer_blocks.{i}`, in order."""
        return [f"{PREFIX}{i}" for i in range(len(self.module.transformer.transformer_blocks))]

    def last_layer_name(self) -> str:
        """`transformer.proj_out`."""
        return "transformer.proj_out"


# --------------------------------------------------------------------------- a pipeline folder


def scheduler_matches(config: Mapping[str, Any]) -> None:
    """Refuse a scheduler whose noise/prediction convention is not the cosine v-objective our loss uses."""
    name = str(config.get("_class_name", "?"))
    if config.get("prediction_type", "v_prediction") != "v_prediction":
        raise SongtraceError(f"scheduler {name}: prediction_type {config.get('prediction_type')!r}; songtrace's loss needs v_prediction")
    if float(config.get("sigma_data", 1.0)) != 1.0:
        raise SongtraceError(f"scheduler {name}: sigma_data {config.get('sigma_data')}; the cosine v-objective needs sigma_data = 1")


def import_pipeline(pipeline_dir: str | Path, attend_padding: bool = True) -> tuple[DiffusersStableAudioDiT, dict[str, Any]]:
    """Load the DiT of a `StableAudioPipeline` folder: (module, spec for the model record)."""
    pipeline_dir = Path(pipeline_dir)
    check_pipeline_dir(pipeline_dir)
    from songtrace.artifacts import read_json

    scheduler = read_json(pipeline_dir / "scheduler" / "scheduler_config.json")
    scheduler_matches(scheduler)
    try:
        module = DiffusersStableAudioDiT.from_pipeline(pipeline_dir, attend_padding)
    except (OSError, ValueError) as e:
        raise SongtraceError(f"{pipeline_dir}: diffusers could not load the transformer / projection model ({e})") from None
    spec = {
        "transformer": _plain_config(module.transformer.config),
        "projection": _plain_config(module.projection.config),
        "scheduler": {k: v for k, v in scheduler.items() if not k.startswith("_")},
        "attend_padding": attend_padding,
        "text_encoder": diffusers_text_encoder_id(pipeline_dir),
    }
    module.text_encoder = spec["text_encoder"]
    return module.eval(), spec


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config as plain JSON (its private `_` keys dropped)."""
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


def build_from_record(config: Mapping[str, Any]) -> nn.Module:
    """Builder for `songtrace.model.registry`: `{"arch": "diffusers-stable-audio", "spec": {transformer, projection, ...}}`.

    `"diffusers"` in place of `"spec"` (the first record format) is read the same way.
    """
    try:
        spec = config["spec"] if "spec" in config else config["diffusers"]
        module = DiffusersStableAudioDiT.from_configs(spec["transformer"], spec["projection"], bool(spec.get("attend_padding", True)))
    except KeyError as e:
        raise SongtraceError(f"{ARCH} model config lacks {e}") from None
    module.text_encoder = spec.get("text_encoder")  # None: the record does not say (then no cache is refused for it)
    return module
