"""The model task: the one interface through which every stage reaches a model.

Like kronfluence's `Task` or dattri's `AttributionTask`, a `ModelTask` holds everything
model-specific, so Fisher, unlearning, scoring, training, generation and the white-box baselines
never look inside a model:

- `predict_v(params, x_t, t, cond, frame_mask)`: the v prediction with weights `params` (any
  subset of the module's parameters; the rest are the module's own), via `functional_call`;
- `loss(params, batch, plan, mask)` `[B, T]` and `sample_loss(params, row)` (one unbatched
  (item, timestep) row, the form `vmap(grad(...))` takes): the v-objective of `diffusion.loss`;
- `layer_groups()`: group name (`to_kv`, `cross_attn`, `self_attn`, `all`) -> parameter names;
- `layer_outputs(...)`: every transformer block's frame tokens `[B, L, W]` (LPIPS-like baseline);
- `last_layer_features(...)`: the last layer's input per frame and the prediction (representer points);
- `identity()`: the content hash of the weights, the one model identity every artifact records.

Devices and precision (the GPU path): `task.device` is where the module's weights live; `on_device`
moves a module for a block and back, `runtime_device` turns a config's device name ("cpu", "cuda",
"meta") into this process's device (under torchrun, the rank's own GPU), and `autocast` runs a
block in a config's precision ("fp32", or "bf16" autocast; the loss is still summed in float32+).

A module satisfies the forward convention `module(x_t [B, C, L], t [B], cond: Conditioning,
frame_mask [B, L] | None) -> v [B, C, L]` and has a `latent_shape` (C, L). Subclasses say where
the blocks and the last layer are; `task_for` picks the subclass for a module, and `as_task`
lets every public function take either a module or a task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from songtrace.artifacts import hash_tensors
from songtrace.data.batch import Batch, Conditioning
from songtrace.diffusion.loss import FrameMask, NoisePlan, Predict, Samples, samples_loss, v_objective_loss
from songtrace.errors import SongtraceError

GROUPS = ("to_kv", "cross_attn", "self_attn", "all")

# precision name -> the autocast dtype of the block (None: plain float32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
# device names a config may hold; "cuda" is this process's GPU (the rank's own under torchrun), "meta" runs shapes only
DEVICES = ("cpu", "cuda", "meta")

Params = Mapping[str, torch.Tensor]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put the module in eval mode (no dropout) for the block and restore its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def check_device(name: str) -> None:
    """Refuse a device name a config cannot hold, listing the valid ones."""
    if name not in DEVICES:
        raise SongtraceError(f"unknown device {name!r}; valid: {', '.join(DEVICES)} (under torchrun each rank uses its own GPU)")


def check_precision(name: str) -> None:
    """Refuse an unknown precision, listing the valid ones."""
    if name not in PRECISIONS:
        raise SongtraceError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}")


def runtime_device(name: str) -> torch.device:
    """The device a config's device name means in this process: "cuda" is the current GPU (set per rank by torchrun's launch)."""
    check_device(name)
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SongtraceError("device 'cuda' asked for, but this torch build or machine has no CUDA GPU; use --device cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


@contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Run the block in `precision`: bf16 autocast on the device's type, or plain float32 ("fp32"; also always on "meta")."""
    check_precision(precision)
    dtype, kind = PRECISIONS[precision], torch.device(device).type
    if dtype is None or kind == "meta":
        yield
        return
    with torch.autocast(device_type=kind, dtype=dtype):
        yield


@contextmanager
def on_device(module: nn.Module, device: torch.device | str) -> Iterator[nn.Module]:
    """Move the module's weights to `device` for the block and back after (nothing to do when they are there already)."""
    device = torch.device(device)
    params = list(module.parameters())
    before = params[0].device if params else device
    if before == device:
        yield module
        return
    module.to(device)
    try:
        yield module
    finally:
        module.to(before)


def _first_tensor(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple | list) else out  # type: ignore[return-value]


class ModelTask:
    """Everything songtrace needs from one diffusion model; subclasses name its blocks and last layer."""

    #: a short name of the model family, recorded in results
    kind = "module"

    def __init__(self, module: nn.Module) -> None:
        if not hasattr(module, "latent_shape"):
            raise SongtraceError(f"{type(module).__name__} has no latent_shape (channels, frames); songtrace needs it to plan noise")
        self.module = module

    # ----------------------------------------------------------------- model-specific

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(channels, frames) of the latents the model works on."""
        c, length = self.module.latent_shape  # type: ignore[misc]
        return int(c), int(length)

    def layer_groups(self) -> dict[str, list[str]]:
        """Group name -> parameter names that unlearning, the Fisher and the gradient baseline can target."""
        own = getattr(self.module, "named_layer_groups", None)
        if own is None:
            raise SongtraceError(f"{type(self.module).__name__} names no layer groups; pass a regex over parameter names (re:...)")
        return {k: list(v) for k, v in own().items()}

    def block_names(self) -> list[str]:
        """Module names of the transformer blocks, in order (their outputs are the layer outputs)."""
        own = getattr(self.module, "block_names", None)
        if own is None:
            raise SongtraceError(f"{type(self.module).__name__} does not say where its transformer blocks are (no block_names())")
        return list(own())

    def last_layer_name(self) -> str:
        """Module name of the final per-frame linear projection features -> v."""
        own = getattr(self.module, "last_layer_name", None)
        if own is None:
            raise SongtraceError(f"{type(self.module).__name__} does not say which module is its last layer (no last_layer_name)")
        return str(own() if callable(own) else own)

    def frame_tokens(self, tokens: torch.Tensor, length: int) -> torch.Tensor:
        """The `length` frame tokens `[B, L, W]` of a block's output (prepended conditioning tokens dropped)."""
        if tokens.shape[1] < length and tokens.shape[-1] >= length:  # a [B, W, L] layout
            tokens = tokens.transpose(1, 2)
        return tokens[:, -length:]

    # ----------------------------------------------------------------- the same for every model

    @property
    def device(self) -> torch.device:
        """Where the module's weights are (cpu for a module without parameters)."""
        first = next(iter(self.module.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    def params(self) -> dict[str, torch.Tensor]:
        """θ: the module's parameters, detached (a dict for `torch.func`)."""
        return {k: v.detach() for k, v in self.module.named_parameters()}

    def identity(self) -> str:
        """Content hash of the weights and buffers (names, dtypes, shapes, bytes): the model's identity.

        Hashing a billion weights takes seconds, so the hash is kept until a tensor changes: the key is
        each tensor's storage and autograd version counter, which every in-place update bumps.
        """
        state = self.module.state_dict()
        key = tuple((k, v.data_ptr(), v._version, v.dtype, tuple(v.shape)) for k, v in state.items())
        cached = getattr(self, "_identity", None)
        if cached is None or cached[0] != key:
            self._identity = (key, hash_tensors(dict(state)))
        return self._identity[1]

    def predict_v(
        self, params: Params | None, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """v `[B, C, L]` with weights `params` (None: the module's own; a subset overrides only those)."""
        args = (x_t, t, cond, frame_mask)
        if params is None:
            return self.module(*args)
        return functional_call(self.module, dict(params), args, strict=False)

    def predictor(self, params: Params | None = None) -> Predict:
        """`predict(x_t, t, cond, frame_mask)` with these weights bound: what losses and samplers call."""
        return functools.partial(self.predict_v, params)

    def loss(self, params: Params | None, batch: Batch, plan: NoisePlan, mask: FrameMask = False) -> torch.Tensor:
        """L_t(z_i, θ) for every item and timestep of the plan: `[B, T]` (`mask`: every, real, or the given frames)."""
        return v_objective_loss(self.predictor(params), batch, plan, mask)

    def sample_loss(self, params: Params, row: Samples) -> torch.Tensor:
        """L_t of one unbatched (item, timestep) row, a scalar: the function `vmap(grad(...))` differentiates."""
        return samples_loss(self.predictor(params), row.unsqueeze())[0]

    def named_module(self, name: str) -> nn.Module:
        """A submodule by name, with an error naming the model."""
        modules = dict(self.module.named_modules())
        if name not in modules:
            raise SongtraceError(f"{type(self.module).__name__} has no module {name!r}")
        return modules[name]

    def layer_outputs(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None
                      ) -> list[torch.Tensor]:
        """The frame tokens `[B, L, W]` after every transformer block, for the module's own weights."""
        blocks = [self.named_module(n) for n in self.block_names()]
        captured: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda _m, _i, out: captured.append(_first_tensor(out))) for b in blocks]
        try:
            self.module(x_t, t, cond, frame_mask)
        finally:
            for h in hooks:
                h.remove()
        if len(captured) != len(blocks):
            raise SongtraceError(f"{type(self.module).__name__}: {len(blocks)} blocks but {len(captured)} outputs in one forward pass")
        return [self.frame_tokens(h, x_t.shape[-1]) for h in captured]

    def last_layer_features(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, frame_mask: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the last layer's input per frame `[B, L, D]`, the prediction v `[B, C, L]`), for the module's own weights."""
        layer = self.named_module(self.last_layer_name())
        seen: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            v = self.module(x_t, t, cond, frame_mask)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise SongtraceError(f"the last layer {self.last_layer_name()!r} ran {len(seen)} times in one forward pass, expected once")
        return self.frame_tokens(seen[0], x_t.shape[-1]), v

    def last_layer(self) -> nn.Linear:
        """The last layer itself (a per-frame `nn.Linear`)."""
        layer = self.named_module(self.last_layer_name())
        if not isinstance(layer, nn.Linear):
            raise SongtraceError(f"the last layer must be a Linear (per-frame projection), got {type(layer).__name__}")
        return layer


# --------------------------------------------------------------------------- which task for which module

# module class name -> factory of its task; adapters register theirs when imported
TASKS: dict[str, Callable[[nn.Module], ModelTask]] = {}


def register_task(module_class: str) -> Callable[[type[ModelTask]], type[ModelTask]]:
    """Class decorator: the task class for modules of class `module_class`."""

    def deco(cls: type[ModelTask]) -> type[ModelTask]:
        TASKS[module_class] = cls
        return cls

    return deco


def task_for(module: nn.Module) -> ModelTask:
    """The task of a module: the registered one for its class, else the generic `ModelTask`.

    A module of another family works when it follows the forward convention and offers
    `named_layer_groups()` (plus `block_names()` and `last_layer_name` for the white-box baselines).
    """
    import songtrace.model.dit  # noqa: F401  (registers DiTTask)

    for cls in type(module).__mro__:
        if cls.__name__ in TASKS:
            return TASKS[cls.__name__](module)
    return ModelTask(module)


def as_task(model: nn.Module | ModelTask) -> ModelTask:
    """A task from a task or a module, so public functions take either."""
    if isinstance(model, ModelTask):
        return model
    if isinstance(model, nn.Module):
        return task_for(model)
    raise SongtraceError(f"expected a model (nn.Module) or a ModelTask, got {type(model).__name__}")


def model_identity(model: nn.Module | ModelTask) -> str:
    """The identity (weights content hash) of a model or task: what Fisher, caches, runs and best configs record."""
    return as_task(model).identity()


def check_latents_fit(model: nn.Module | ModelTask, latents: Any, latents_name: str | Path | None = None) -> None:
    """Refuse a latent cache (or batch source) whose latent shape differs from the model's, naming both."""
    task = as_task(model)
    model_shape = task.latent_shape
    data_shape = tuple(int(x) for x in latents.latent_shape)
    if model_shape != data_shape:
        where = getattr(task.module, "source_dir", "the model")
        cache = latents_name if latents_name is not None else "the latent cache"
        raise SongtraceError(
            f"checkpoint {where} expects latents {model_shape[0]}×{model_shape[1]} (channels×frames), "
            f"{cache} has {data_shape[0]}×{data_shape[1]}; train the model on this cache or encode with the model's codec"
        )
    wanted, made_by = getattr(task.module, "text_encoder", None), getattr(latents, "text_encoder", None)
    if wanted is not None and made_by is not None and wanted != made_by:
        where = getattr(task.module, "source_dir", "the model")
        cache = latents_name if latents_name is not None else "the latent cache"
        raise SongtraceError(
            f"checkpoint {where} reads caption tokens of the text encoder {wanted!r}, {cache} holds those of {made_by!r}; "
            "encode the cache with the model's own codec (songtrace encode --codec diffusers:DIR | sat:DIR)"
        )


def describe(task: ModelTask) -> dict[str, Any]:
    """A short record of a model for results: its family, size and identity."""
    return {"kind": task.kind, "n_params": sum(int(p.numel()) for p in task.module.parameters()), "identity": task.identity()}
