"""The cost model: wall time and GPU-hours of the Fisher, one unlearning step and one query, from measured per-frame costs.

Work is counted in forward FLOPs of one (item, timestep) row of L latent frames through a DiT of P
per-token weights, width W and depth D, cross-attending to S conditioning tokens:

    F(L) = 2·P·L + 4·D·W·L² + 4·D·W·L·S        (dense layers; self-attention scores and values; cross-attention)

A *throughput* turns FLOPs into seconds on one device: forward FLOP/s (a no-grad forward), how
much a forward+backward costs relative to that forward (`backward_ratio`, the unlearning gradient),
and what the Fisher adds per row and weight for materialising one per-sample gradient and summing
its square (`square_seconds_per_weight`: memory traffic, independent of the frames).
`measure_throughput` measures it on the machine at hand with the model at hand; `GPUS` holds
assumed GPU figures (peak × utilisation, memory bandwidth; stated). The stages then cost

    Fisher            N · T_F rows × (backward_ratio forwards + P × square_seconds_per_weight)
    unlearning step   T_U rows × backward_ratio             (one query; `steps` of them)
    scoring           N · T_S rows × (2, or 1 with the base losses L(z_i, θ0) cached)
    fast index        build N · T_S rows × backward_ratio once; a query then costs one unlearning gradient
    query             steps × unlearning step + scoring

in forward-seconds, spread over G devices at a parallel efficiency e (sharding; measured 2 vs 1 here).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import grad

from songtrace.artifacts import StageConfig, check_positive
from songtrace.attribution.fisher import FisherConfig, batch_square_sums
from songtrace.attribution.groups import split_params, target_params
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.task import ModelTask, as_task, autocast, eval_mode


@dataclasses.dataclass(frozen=True)
class ModelShape(StageConfig):
    """What the cost of one row depends on: per-token weights P, latent frames L, width W, depth D, conditioning tokens S."""

    weights: float
    frames: int
    width: int
    depth: int
    cond_tokens: int = 128

    def __post_init__(self) -> None:
        for name in ("weights", "frames", "width", "depth", "cond_tokens"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SongtraceError(f"model shape: {name} must be a positive number, got {value}")

    def forward_flops(self) -> float:
        """F(L): forward FLOPs of one (item, timestep) row."""
        dense = 2.0 * self.weights * self.frames
        self_attention = 4.0 * self.depth * self.width * self.frames**2
        cross_attention = 4.0 * self.depth * self.width * self.frames * self.cond_tokens
        return dense + self_attention + cross_attention

    @classmethod
    def of(cls, model: nn.Module | ModelTask, cond_tokens: int) -> ModelShape:
        """The shape of a model at hand: its transformer weights (layer group "all"), latent frames, width and depth."""
        task = as_task(model)
        names = set(task.layer_groups()["all"])
        weights = sum(p.numel() for n, p in task.module.named_parameters() if n in names)
        config = getattr(task.module, "config", None)
        width, depth = getattr(config, "width", None), getattr(config, "depth", None)
        if width is None or depth is None:
            raise SongtraceError(f"{type(task.module).__name__} has no config.width / config.depth; give the model shape by hand")
        return cls(weights=float(weights), frames=task.latent_shape[1], width=int(width), depth=int(depth), cond_tokens=cond_tokens)


@dataclasses.dataclass(frozen=True)
class Throughput(StageConfig):
    """One device's speed: forward FLOP/s, a forward+backward relative to a forward, and the per-sample square's cost per weight."""

    name: str
    forward_flops_per_s: float
    backward_ratio: float
    square_seconds_per_weight: float
    source: str = ""
    clock: str = ""  # what the seconds are: "wall" (GPU), "cpu" (this process's CPU seconds) or "" (assumed)
    threads: int = 0  # torch threads while measuring on a CPU (1: its CPU seconds are a one-thread run's wall seconds); 0: n/a

    def __post_init__(self) -> None:
        for name in ("forward_flops_per_s", "backward_ratio", "square_seconds_per_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (value == 0 and name != "square_seconds_per_weight"):
                raise SongtraceError(f"throughput {self.name!r}: {name} must be a positive number, got {value}")
        if self.clock not in ("", "cpu", "wall") or not (isinstance(self.threads, int) and self.threads >= 0):
            raise SongtraceError(f"throughput {self.name!r}: clock must be cpu, wall or empty and threads a count >= 0, "
                                 f"got {self.clock!r}, {self.threads!r}")


# bytes moved per weight and per-sample row by the Fisher beyond its backward: write and read the float32 gradient,
# write and read its float64 square, read and write the float64 sum
SQUARE_BYTES_PER_WEIGHT = 4 + 4 + 8 + 8 + 16


def assumed_gpu(name: str, peak_flops: float, utilisation: float, bandwidth: float, backward_ratio: float = 3.0) -> Throughput:
    """A GPU from its peak FLOP/s, an assumed utilisation and its memory bandwidth (a backward ≈ 2 forwards)."""
    return Throughput(name, peak_flops * utilisation, backward_ratio, SQUARE_BYTES_PER_WEIGHT / bandwidth,
                      source=f"assumed: {peak_flops / 1e12:.0f} TFLOPS peak x {utilisation:.0%} utilisation, backward "
                             f"{backward_ratio}x a forward, per-sample square {SQUARE_BYTES_PER_WEIGHT} bytes/weight at "
                             f"{bandwidth / 1e12:.2f} TB/s")


# name -> assumed throughput (H100 SXM: dense bf16 989 TFLOPS with tensor cores, fp32 67 TFLOPS without, HBM3 3.35 TB/s;
# H200: the same compute with HBM3e 4.8 TB/s)
GPUS: dict[str, Throughput] = {
    "h100-bf16": assumed_gpu("H100 SXM, bf16 autocast", 989e12, 0.40, 3.35e12),
    "h100-fp32": assumed_gpu("H100 SXM, fp32 (no tensor cores)", 67e12, 0.50, 3.35e12),
    "h200-bf16": assumed_gpu("H200, bf16 autocast", 989e12, 0.40, 4.8e12),
}


@dataclasses.dataclass(frozen=True)
class Workload(StageConfig):
    """What is computed: N tracks; T of the Fisher, the unlearning step and the scoring; steps; cache; devices."""

    tracks: int
    fisher_timesteps: int = 16
    unlearn_timesteps: int = 2048
    unlearn_steps: int = 1
    score_timesteps: int = 32
    cached_base: bool = True
    gpus: int = 1
    parallel_efficiency: float = 0.95

    def __post_init__(self) -> None:
        for name in ("tracks", "fisher_timesteps", "unlearn_timesteps", "unlearn_steps", "score_timesteps", "gpus"):
            check_positive(name, getattr(self, name))
        if not 0 < self.parallel_efficiency <= 1:
            raise SongtraceError(f"parallel_efficiency must be in (0, 1], got {self.parallel_efficiency}")


def _job(seconds_one_device: float, devices: int, efficiency: float) -> dict[str, float]:
    """Wall seconds and device-hours of work that takes `seconds_one_device` on one device, spread over `devices`."""
    speedup = 1.0 if devices == 1 else devices * efficiency
    wall = seconds_one_device / speedup
    return {"wall_seconds": wall, "gpu_hours": wall * devices / 3600.0}


def predict(shape: ModelShape, throughput: Throughput, work: Workload) -> dict[str, Any]:
    """Predicted wall seconds and device-hours of the Fisher, one unlearning step, scoring, one query and the fast index."""
    row = shape.forward_flops() / throughput.forward_flops_per_s  # seconds of one forward row on one device
    n, g, e = work.tracks, work.gpus, work.parallel_efficiency
    passes = 1 if work.cached_base else 2
    fisher_row = row * throughput.backward_ratio + shape.weights * throughput.square_seconds_per_weight
    fisher = _job(n * work.fisher_timesteps * fisher_row, g, e)
    step = _job(work.unlearn_timesteps * row * throughput.backward_ratio, 1, 1.0)
    scoring = _job(n * work.score_timesteps * row * passes, g, e)
    base = _job(n * work.score_timesteps * row, g, e)
    index_build = _job(n * work.score_timesteps * row * throughput.backward_ratio, g, e)
    query_wall = work.unlearn_steps * step["wall_seconds"] + scoring["wall_seconds"]
    query_gpu_h = work.unlearn_steps * step["gpu_hours"] + scoring["gpu_hours"]
    return {
        "shape": shape.to_dict(),
        "throughput": throughput.to_dict(),
        "workload": work.to_dict(),
        "forward_flops_per_row": shape.forward_flops(),
        "seconds_per_forward_row": row,
        "fisher": fisher,
        "unlearn_step": step,
        "scoring": scoring,
        "base_losses_once": base,
        "query": {"wall_seconds": query_wall, "gpu_hours": query_gpu_h},
        "fast_index": {"build": index_build, "query": {"wall_seconds": work.unlearn_steps * step["wall_seconds"],
                                                       "gpu_hours": work.unlearn_steps * step["gpu_hours"]}},
    }


# --------------------------------------------------------------------------- measuring a throughput


def _best_cpu_seconds(fn: Callable[[], Any], repeats: int, clock: Callable[[], float]) -> float:
    """The fastest of `repeats` runs of `fn` (after one warm-up), timed with `clock`."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_throughput(
    model: nn.Module | ModelTask,
    batch: Batch,
    rows_timesteps: int = 4,
    repeats: int = 3,
    precision: str = "fp32",
    name: str = "this machine",
    clock: Callable[[], float] | None = None,
) -> Throughput:
    """Measure forward FLOP/s, the backward ratio and the per-sample square's cost of a model on `batch` × `rows_timesteps` rows.

    The forward is a no-grad loss; the backward the gradient of the summed loss over all transformer
    weights (what the unlearning step takes); the per-sample pass is the Fisher's `batch_square_sums`.
    `clock` defaults to this process's CPU time on a CPU (robust to other jobs on a shared machine)
    and to wall time on a GPU. On a CPU it measures with one torch thread (restored after), so the
    seconds are a one-thread run's wall seconds, whatever the thread count; `threads` records it.
    """
    task = as_task(model)
    device = task.device
    clock = clock or (time.process_time if device.type == "cpu" else time.perf_counter)
    batch = batch.to(device)
    plan = make_plan(batch.ids, rows_timesteps, task.latent_shape, 0, device=device)
    rows = len(batch) * rows_timesteps
    target, frozen = split_params(task, target_params(task, "all"))
    cond_tokens = int(batch.text.shape[1]) + 2
    shape = ModelShape.of(task, cond_tokens)

    def forward() -> None:
        with torch.no_grad(), autocast(device, precision):
            task.loss(None, batch, plan)
        _sync(device)

    def loss_sum(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return task.loss({**frozen, **params}, batch, plan).float().sum()

    def backward() -> None:
        with autocast(device, precision):
            grad(loss_sum)(target)
        _sync(device)

    fisher_config = FisherConfig(n_timesteps=rows_timesteps, sample_chunk=rows, batch_size=len(batch), precision=precision,
                                 device=device.type)

    def per_sample() -> None:
        batch_square_sums(task, target, frozen, batch, fisher_config)
        _sync(device)

    on_cpu = device.type == "cpu"
    threads = torch.get_num_threads()
    if on_cpu:  # CPU seconds sum over torch's threads: time one thread, so they are a one-thread run's wall seconds
        torch.set_num_threads(1)
    try:
        with eval_mode(task.module):
            t_fwd = _best_cpu_seconds(forward, repeats, clock)
            t_bwd = _best_cpu_seconds(backward, repeats, clock)
            t_ps = _best_cpu_seconds(per_sample, repeats, clock)
    finally:
        torch.set_num_threads(threads)
    flops = shape.forward_flops() * rows
    square = max(0.0, t_ps - t_bwd) / (rows * shape.weights)
    what = "CPU seconds of 1 torch thread (= a one-thread run's wall time)" if on_cpu else "wall seconds"
    return Throughput(name, flops / t_fwd, t_bwd / t_fwd, square,
                      source=f"measured: {rows} rows of {shape.frames} frames, {shape.weights:.3g} weights, {precision}, {device}, "
                             f"{what}, best of {repeats}", clock="cpu" if on_cpu else "wall", threads=1 if on_cpu else 0)
