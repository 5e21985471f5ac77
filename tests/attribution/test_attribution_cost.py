"""The cost model: the FLOP count by hand, how predictions scale, and a throughput measured on a tiny DiT."""

import dataclasses

import pytest
import torch

from fixtures_model import synthetic_latent_set, tiny_dit
from songtrace.attribution.cost import GPUS, ModelShape, Throughput, Workload, measure_throughput, predict
from songtrace.errors import SongtraceError


def test_forward_flops_count_dense_layers_self_and_cross_attention():
    shape = ModelShape(weights=1000.0, frames=10, width=4, depth=2, cond_tokens=3)
    assert shape.forward_flops() == 2 * 1000 * 10 + 4 * 2 * 4 * 10**2 + 4 * 2 * 4 * 10 * 3
    assert ModelShape.from_dict(shape.to_dict()) == shape
    with pytest.raises(SongtraceError, match="frames must be a positive number"):
        ModelShape(weights=1.0, frames=0, width=1, depth=1)


def test_predictions_scale_with_tracks_timesteps_devices_and_the_base_cache():
    shape = ModelShape(weights=1e9, frames=2584, width=1536, depth=24, cond_tokens=130)
    gpu = GPUS["h100-bf16"]
    work = Workload(tracks=1000, score_timesteps=8, gpus=1)
    p = predict(shape, gpu, work)
    row = shape.forward_flops() / gpu.forward_flops_per_s
    assert p["scoring"]["wall_seconds"] == pytest.approx(1000 * 8 * row)
    assert predict(shape, gpu, dataclasses.replace(work, cached_base=False))["scoring"]["wall_seconds"] == pytest.approx(2 * 1000 * 8 * row)
    assert p["unlearn_step"]["wall_seconds"] == pytest.approx(2048 * row * gpu.backward_ratio)
    two = predict(shape, gpu, dataclasses.replace(work, tracks=2000))
    assert two["fisher"]["wall_seconds"] == pytest.approx(2 * p["fisher"]["wall_seconds"])
    eight = predict(shape, gpu, dataclasses.replace(work, gpus=8, parallel_efficiency=0.5))
    assert eight["scoring"]["wall_seconds"] == pytest.approx(p["scoring"]["wall_seconds"] / 4)
    assert eight["scoring"]["gpu_hours"] == pytest.approx(2 * p["scoring"]["gpu_hours"])
    assert p["query"]["wall_seconds"] == pytest.approx(p["unlearn_step"]["wall_seconds"] + p["scoring"]["wall_seconds"])
    with pytest.raises(SongtraceError, match="parallel_efficiency"):
        Workload(tracks=1, parallel_efficiency=1.5)
    with pytest.raises(SongtraceError, match="backward_ratio"):
        Throughput("x", 1.0, float("nan"), 0.0)


def test_measure_throughput_on_a_tiny_dit_gives_a_usable_throughput():
    model = tiny_dit()
    data = synthetic_latent_set()
    tp = measure_throughput(model, data.batch([0, 1]), rows_timesteps=2, repeats=1)
    assert tp.forward_flops_per_s > 0 and tp.backward_ratio > 1 and tp.square_seconds_per_weight >= 0
    assert "measured" in tp.source and Throughput.from_dict(tp.to_dict()) == tp
    shape = ModelShape.of(model, cond_tokens=int(data.text.shape[1]) + 2)
    assert shape.frames == 16 and shape.width == 16 and shape.depth == 2
    assert predict(shape, tp, Workload(tracks=10))["scoring"]["wall_seconds"] > 0


def test_a_cpu_measurement_is_of_one_thread_and_says_so():
    """CPU seconds sum over torch's threads: the measurement runs on one thread (restored after) and records it."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        tp = measure_throughput(tiny_dit(), synthetic_latent_set().batch([0, 1]), rows_timesteps=2, repeats=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert tp.clock == "cpu" and tp.threads == 1 and "1 torch thread" in tp.source
    assert Throughput.from_dict(tp.to_dict()) == tp and tp.to_dict()["threads"] == 1
    assert GPUS["h100-fp32"].clock == "" and GPUS["h100-fp32"].threads == 0
    with pytest.raises(SongtraceError, match="clock"):
        dataclasses.replace(tp, clock="sundial")
