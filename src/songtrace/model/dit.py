"""The demo DiT: a Stable-Audio-like diffusion transformer over latent frames.

Latent frames are the tokens (patch size 1). Each of the `depth` blocks is pre-norm self-attention
(rotary positions), cross-attention to the caption + timing tokens, and a GLU feed-forward, with
the module names of stable-audio-tools' `ContinuousTransformer` (`layers.{i}.self_attn.to_qkv`,
`layers.{i}.cross_attn.to_q|to_kv|to_out`, `layers.{i}.ff.ff.0.proj`, ...), so attribution targets
the same layer groups as on a real Stable Audio checkpoint. Conditioning (timestep, timing, null
caption) is described in `songtrace.model.conditioning`.

Attention is written out (matmul + softmax, masks via `torch.where`) with no in-place ops and no
data-dependent control flow, so the model runs under `torch.func.vmap(torch.func.grad(...))` for
per-sample gradients and under `functional_call`; `attention="sdpa"` uses torch's fused
`scaled_dot_product_attention` instead (memory linear in the frames on a GPU, for 2-minute tracks).
Every tensor a forward pass creates is made on the input's device, and layer norms run in float32
under bf16 autocast (as CUDA's autocast policy does), so the model runs on any device and precision.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from songtrace.artifacts import StageConfig, check_choice, check_positive
from songtrace.codec.text import TEXT_DIM
from songtrace.data.batch import Conditioning
from songtrace.errors import SongtraceError
from songtrace.model.conditioning import FourierFeatures, NumberEmbedder
from songtrace.model.task import ModelTask, register_task


@dataclasses.dataclass(frozen=True)
class DiTConfig(StageConfig):
    """Architecture of the DiT; `latent_channels` and `latent_length` come from the latent cache."""

    latent_channels: int = 8
    latent_length: int = 128
    width: int = 128
    depth: int = 4
    heads: int = 4
    text_dim: int = TEXT_DIM
    cond_dim: int = TEXT_DIM  # width of the cross-attention context before `to_cond_embed`
    ff_mult: int = 4
    max_seconds: float = 64.0  # timing conditioning normalises seconds by this (clamped above)
    timestep_features: int = 256
    timing_features: int = 64
    rotary_base: float = 10000.0
    attention: str = "math"  # "math" (written out, the reference) or "sdpa" (torch's fused kernel)

    def __post_init__(self) -> None:
        """Validate every size, naming the bad one."""
        super().__post_init__()
        for name in ("latent_channels", "latent_length", "width", "depth", "heads", "text_dim", "cond_dim", "ff_mult",
                     "max_seconds", "timestep_features", "timing_features", "rotary_base"):
            check_positive(name, getattr(self, name))
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise SongtraceError(f"width ({self.width}) must split into {self.heads} heads of an even size")
        for name in ("timestep_features", "timing_features"):
            if getattr(self, name) % 2:
                raise SongtraceError(f"{name} must be even, got {getattr(self, name)}")
        check_choice("attention", self.attention, ATTENTION)

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(channels, frames) the model expects."""
        return self.latent_channels, self.latent_length


# --------------------------------------------------------------------------- pieces


def rotary_tables(
    n: int, dim_head: int, base: float, dtype: torch.dtype, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables `[n, dim_head]` of rotary position embeddings for positions 0..n-1 (made on `device`)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim_head, 2, dtype=torch.float32, device=device) / dim_head))
    freqs = torch.arange(n, dtype=torch.float32, device=device)[:, None] * inv_freq[None, :]
    freqs = torch.cat([freqs, freqs], dim=-1)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x [..., n, dim_head]` by position (the rotate-half form)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention `[B, H, N, D]` x `[B, H, M, D]`; `key_mask [B, M]` (True = attend) excludes keys."""
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5)
    if key_mask is not None:
        scores = torch.where(key_mask[:, None, None, :], scores, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) @ v


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """The same with torch's `scaled_dot_product_attention` (flash / memory-efficient kernels where the device has them).

    Every query here has at least one key to attend (the timing tokens, the global token), so no row is fully masked.
    """
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# attention implementation name -> function
ATTENTION = {"math": attention, "sdpa": fused_attention}


class LayerNorm(nn.LayerNorm):
    """A LayerNorm computed in float32 whatever the input dtype (a no-op cast in fp32).

    Under CPU bf16 autocast a bf16 input meets float32 weights, and vmap's layer-norm backward refuses
    the mixed dtypes; CUDA's autocast runs layer norms in float32 anyway, so this is that policy everywhere.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class Attention(nn.Module):
    """Multi-head attention with stable-audio-tools' names: `to_qkv` (self) or `to_q` + `to_kv` (cross), `to_out`."""

    def __init__(self, dim: int, heads: int, dim_context: int | None = None, impl: str = "math") -> None:
        super().__init__()
        self.heads = heads
        self.attend = ATTENTION[impl]
        self.cross = dim_context is not None
        if self.cross:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(dim_context, 2 * dim, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if self.cross:
            q = self.to_q(x)
            k, v = self.to_kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = self._split(q), self._split(k), self._split(v)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        out = self.attend(q, k, v, key_mask)
        b, _, n, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GLU(nn.Module):
    """Gated linear unit with SiLU gate: `proj` gives value and gate."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * nn.functional.silu(gate)


class FeedForward(nn.Module):
    """GLU feed-forward, named `ff.0.proj` / `ff.2` like stable-audio-tools."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        inner = dim * mult
        self.ff = nn.Sequential(GLU(dim, inner), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention and feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, ff_mult: int, attention_impl: str = "math") -> None:
        super().__init__()
        self.pre_norm = LayerNorm(dim, bias=False)
        self.self_attn = Attention(dim, heads, impl=attention_impl)
        self.cross_attend_norm = LayerNorm(dim, bias=False)
        self.cross_attn = Attention(dim, heads, dim_context=dim, impl=attention_impl)
        self.ff_norm = LayerNorm(dim, bias=False)
        self.ff = FeedForward(dim, ff_mult)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        key_mask: torch.Tensor | None,
        rotary: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        x = x + self.self_attn(self.pre_norm(x), key_mask=key_mask, rotary=rotary)
        x = x + self.cross_attn(self.cross_attend_norm(x), context=context, key_mask=context_mask)
        return x + self.ff(self.ff_norm(x))


def _mlp(dim_in: int, dim_out: int, bias: bool = True) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_out, bias=bias), nn.SiLU(), nn.Linear(dim_out, dim_out, bias=bias))


# --------------------------------------------------------------------------- the model


class DiT(nn.Module):
    """v-prediction DiT: `forward(x_t, t, cond, frame_mask) -> v` (the `ModelTask` convention)."""

    def __init__(self, config: DiTConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.latent_shape = config.latent_shape
        c = config
        with torch.random.fork_rng(devices=[]):  # deterministic init without touching the global RNG
            torch.manual_seed(seed)
            self.timestep_features = FourierFeatures(c.timestep_features)
            self.to_timestep_embed = _mlp(c.timestep_features, c.width)
            self.seconds_start = NumberEmbedder(c.cond_dim, c.max_seconds, c.timing_features)
            self.seconds_total = NumberEmbedder(c.cond_dim, c.max_seconds, c.timing_features)
            self.text_proj = nn.Identity() if c.text_dim == c.cond_dim else nn.Linear(c.text_dim, c.cond_dim, bias=False)
            self.to_cond_embed = _mlp(c.cond_dim, c.width, bias=False)
            self.to_global_embed = _mlp(2 * c.cond_dim, c.width, bias=False)
            self.project_in = nn.Linear(c.latent_channels, c.width, bias=False)
            self.layers = nn.ModuleList(TransformerBlock(c.width, c.heads, c.ff_mult, c.attention) for _ in range(c.depth))
            self.project_out = nn.Linear(c.width, c.latent_channels, bias=False)

    def condition(self, t: torch.Tensor, cond: Conditioning) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-attention context `[B, S+2, W]`, its mask `[B, S+2]` and the global token `[B, W]`."""
        start = self.seconds_start(cond.seconds_start)
        total = self.seconds_total(cond.seconds_total)
        tokens = torch.cat([self.text_proj(cond.text), start[:, None], total[:, None]], dim=1)
        timing_mask = torch.ones(cond.text_mask.shape[0], 2, dtype=torch.bool, device=cond.text_mask.device)
        context_mask = torch.cat([cond.text_mask.bool(), timing_mask], dim=1)
        global_embed = self.to_global_embed(torch.cat([start, total], dim=-1))
        global_embed = global_embed + self.to_timestep_embed(self.timestep_features(t.to(global_embed.dtype)))
        return self.to_cond_embed(tokens), context_mask, global_embed

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict v `[B, C, L]` for noisy latents `x_t [B, C, L]` at times `t [B]` under conditioning `cond`.

        The global token is prepended to the frame tokens; each block's output is `[B, 1 + L, W]`.
        """
        context, context_mask, global_embed = self.condition(t, cond)
        x = self.project_in(x_t.transpose(1, 2))
        x = torch.cat([global_embed[:, None], x], dim=1)
        key_mask = None
        if frame_mask is not None:
            prepend = torch.ones(frame_mask.shape[0], 1, dtype=torch.bool, device=frame_mask.device)
            key_mask = torch.cat([prepend, frame_mask.bool()], dim=1)
        rotary = rotary_tables(x.shape[1], self.config.width // self.config.heads, self.config.rotary_base, x.dtype, x.device)
        for layer in self.layers:
            x = layer(x, context, context_mask, key_mask, rotary)
        return self.project_out(x[:, 1:]).transpose(1, 2)

    def num_params(self) -> int:
        """Number of weights."""
        return sum(p.numel() for p in self.parameters())


@register_task("DiT")
class DiTTask(ModelTask):
    """The demo DiT: stable-audio-tools' block names, so its groups are those of a real Stable Audio checkpoint."""

    kind = "dit"

    def layer_groups(self) -> dict[str, list[str]]:
        """to_kv / cross_attn / self_attn / all over the transformer blocks `layers.{i}` (seed 002, Table 1)."""
        names = [n for n, _ in self.module.named_parameters()]
        return {
            "to_kv": [n for n in names if n.startswith("layers.") and ".cross_attn.to_kv." in n],
            "cross_attn": [n for n in names if n.startswith("layers.") and ".cross_attn." in n],
            "self_attn": [n for n in names if n.startswith("layers.") and ".self_attn." in n],
            "all": [n for n in names if n.startswith("layers.")],
        }

    def block_names(self) -> list[str]:
        """`layers.0` .. `layers.{depth-1}` (each outputs the global token and the frame tokens)."""
        return [f"layers.{i}" for i in range(len(self.module.layers))]

    def last_layer_name(self) -> str:
        """`project_out`: width -> latent channels, per frame."""
        return "project_out"


def tiny_dit(latent_channels: int = 4, latent_length: int = 16, seed: int = 0, **overrides: object) -> DiT:
    """A DiT of a few thousand weights for unit tests (width 16, depth 2, heads 2)."""
    fields = {"width": 16, "depth": 2, "heads": 2, "cond_dim": 16, "timestep_features": 16, "timing_features": 8, "max_seconds": 8.0}
    fields.update(overrides)
    cfg = DiTConfig(latent_channels=latent_channels, latent_length=latent_length, **fields)  # type: ignore[arg-type]
    return DiT(cfg, seed=seed).eval()
