"""diffusers' `StableAudioDiTModel` (+ its `StableAudioProjectionModel`) behind songtrace's model interface.

Argument mapping (as `StableAudioPipeline` does it):

- the caption tokens `text [B, S, D]` go through `projection.text_projection` and are zeroed where
  `text_mask` is False; `seconds_start` / `seconds_total` go through the start / end number
  conditioners (the pipeline's `audio_end_in_s` is the total length when the start is 0);
- `encoder_hidden_states = [text, start, end]` tokens, `global_hidden_states = [start ‖ end]`;
- `timestep` is our t ∈ [0, 1] directly: diffusers' `CosineDPMSolverMultistepScheduler` feeds the
  model `atan(σ)·2/π` with inputs scaled to `α x0 + σ ε`, i.e. the same cosine v-objective;
- `frame_mask` becomes the self-attention `attention_mask`; rotary tables as in the pipeline.

Layer groups use diffusers' names: `transformer_blocks.{i}.attn1.*` (self-attention),
`attn2.*` (cross-attention), `attn2.to_k` / `attn2.to_v` (the to_kv group).

Needs `pip install diffusers` (the `real` extra); the text embeddings must come from the encoder the
checkpoint was trained with (T5 for Stable Audio Open), i.e. a latent cache built with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from songtrace.data.batch import Conditioning
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, register_task

PREFIX = "transformer.transformer_blocks."


def _diffusers() -> Any:
    try:
        import diffusers
        from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    except ImportError:
        raise SongtraceError("the diffusers adapter needs diffusers (pip install 'songtrace[real]' or pip install diffusers)") from None
    return diffusers.StableAudioDiTModel, StableAudioProjectionModel


class DiffusersStableAudioDiT(nn.Module):
    """A `StableAudioDiTModel` and its projection model as a songtrace `DiffusionModel`."""

    def __init__(self, transformer: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.projection = projection
        self.latent_shape = (int(transformer.config.in_channels), int(transformer.config.sample_size))

    @classmethod
    def from_configs(cls, transformer_config: Mapping[str, Any], projection_config: Mapping[str, Any]) -> DiffusersStableAudioDiT:
        """A randomly initialised model from the two diffusers configs (dicts as in their config.json)."""
        dit_cls, proj_cls = _diffusers()
        return cls(dit_cls.from_config(dict(transformer_config)), proj_cls.from_config(dict(projection_config)))

    @classmethod
    def from_pretrained(cls, pipeline_dir: str) -> DiffusersStableAudioDiT:
        """Load `transformer/` and `projection_model/` of a diffusers Stable Audio pipeline folder."""
        dit_cls, proj_cls = _diffusers()
        return cls(dit_cls.from_pretrained(pipeline_dir, subfolder="transformer"),
                   proj_cls.from_pretrained(pipeline_dir, subfolder="projection_model"))

    def configs(self) -> dict[str, dict[str, Any]]:
        """The diffusers configs, for a songtrace `ModelConfig` record."""
        return {"transformer": dict(self.transformer.config), "projection": dict(self.projection.config)}

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """v `[B, C, L]`, mapping songtrace's arguments onto `StableAudioDiTModel.forward`."""
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        proj = self.projection(text_hidden_states=cond.text, start_seconds=cond.seconds_start, end_seconds=cond.seconds_total)
        tokens = proj.text_hidden_states * cond.text_mask[..., None].to(proj.text_hidden_states.dtype)
        start, end = proj.seconds_start_hidden_states, proj.seconds_end_hidden_states
        context = torch.cat([tokens, start, end], dim=1)
        global_states = torch.cat([start, end], dim=2)
        rotary = get_1d_rotary_pos_embed(
            self.transformer.config.attention_head_dim // 2, x_t.shape[2] + 1, use_real=True, repeat_interleave_real=False
        )
        return self.transformer(
            x_t, t, encoder_hidden_states=context, global_hidden_states=global_states, rotary_embedding=rotary,
            attention_mask=frame_mask.bool() if frame_mask is not None else None, return_dict=False,
        )[0]


@register_task("DiffusersStableAudioDiT")
class DiffusersStableAudioTask(ModelTask):
    """diffusers' Stable Audio DiT: groups, blocks and last layer in diffusers' names.

    Each `transformer_blocks.{i}` outputs the prepended global token and the frame tokens `[B, 1 + L, W]`;
    the last layer is `proj_out` (width -> channels per frame), followed in diffusers by a residual
    1x1 `postprocess_conv`, so for representer points v is only approximately linear in its input.
    """

    kind = "diffusers-stable-audio"

    def layer_groups(self) -> dict[str, list[str]]:
        """The attribution groups in diffusers' names (attn1 = self-attention, attn2 = cross-attention)."""
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


def build_from_record(config: Mapping[str, Any]) -> nn.Module:
    """Builder for `songtrace.model.registry`: `{"arch": "diffusers-stable-audio", "diffusers": {transformer, projection}}`."""
    try:
        cfgs = config["diffusers"]
        return DiffusersStableAudioDiT.from_configs(cfgs["transformer"], cfgs["projection"])
    except KeyError as e:
        raise SongtraceError(f"diffusers-stable-audio model config lacks {e}") from None
