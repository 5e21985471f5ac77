"""The device and precision plumbing of Fisher and scoring (the GPU path), checked on the CPU, meta and bf16 autocast."""

import pytest
import torch
from scipy.stats import spearmanr
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from fixtures_model import synthetic_latent_set, tiny_dit
from songtrace.attribution import (
    FisherConfig,
    ScoreConfig,
    UnlearnConfig,
    compute_fisher,
    score_many,
    split_params,
    target_params,
    unlearn,
)
from songtrace.attribution.fisher import batch_square_sums
from songtrace.attribution.score import item_losses
from songtrace.attribution.unlearn import query_gradient, query_plan
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.dit import DiT, DiTConfig
from songtrace.model.task import as_task, autocast, on_device, runtime_device


def test_configs_hold_a_device_and_a_precision_and_refuse_unknown_ones():
    for cls in (FisherConfig, ScoreConfig, UnlearnConfig):
        c = cls(device="meta", precision="bf16")
        assert cls.from_dict(c.to_dict()) == c and cls().device == "cpu" and cls().precision == "fp32"
        with pytest.raises(SongtraceError, match="unknown device 'gpu'"):
            cls(device="gpu")
        with pytest.raises(SongtraceError, match="unknown precision 'fp16'"):
            cls(precision="fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(SongtraceError, match="no CUDA GPU"):
        runtime_device("cuda")


def test_plans_are_drawn_on_the_device_and_cpu_draws_are_unchanged():
    ids = ["a", "b"]
    cpu = make_plan(ids, 3, (2, 5), 7)
    again = make_plan(ids, 3, (2, 5), 7, device="cpu")
    assert torch.equal(cpu.t, again.t) and torch.equal(cpu.noise, again.noise)
    meta = make_plan(ids, 3, (2, 5), 7, device="meta")
    assert meta.noise.device.type == "meta" and meta.noise.shape == cpu.noise.shape and meta.t.shape == cpu.t.shape


class HostTraffic(TorchDispatchMode):
    """Records every op that touches a tensor off `device` (a host tensor in a device op, a copy between devices) or reads a scalar back.

    On a GPU each of these is a host-device copy or a synchronisation. The meta device alone does not catch
    them all (`meta @ cpu` and indexing with a CPU index run silently), so every op is inspected; 0-d
    tensors (Python scalars) are allowed, as a CUDA kernel takes them by value.
    """

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.events: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if func is torch.ops.aten._local_scalar_dense.default or any(t.device != self.device and t.dim() > 0 for t in tensors):
            self.events.append(str(func))
        return out


def test_the_inner_loops_make_no_host_device_traffic():
    # Fisher per-sample squares, scoring losses and the query gradient on meta, every op watched
    model = tiny_dit().to("meta")
    task = as_task(model)
    batch = synthetic_latent_set().batch([0, 1, 2]).to("meta")
    query = batch.select([0])
    target, frozen = split_params(model, target_params(model, "all"))
    plan = make_plan(batch.ids, 4, task.latent_shape, 0, device="meta")
    qplan = query_plan(query, UnlearnConfig(n_timesteps=4), device="meta")
    with HostTraffic("meta") as watch:
        sums = batch_square_sums(task, target, frozen, batch, FisherConfig(n_timesteps=3, sample_chunk=4, mask=True))
        with torch.no_grad():
            losses = item_losses(task, None, batch, plan, True, 2)
        grads = query_gradient(task, target, frozen, query, qplan, True, chunk=2)
    assert watch.ops > 1000 and watch.events == []
    assert all(v.device.type == "meta" and v.dtype == torch.float64 and v.shape == target[k].shape for k, v in sums.items())
    assert losses.shape == (3,) and losses.device.type == "meta"
    assert all(g.device.type == "meta" and g.shape == target[k].shape for k, g in grads.items())


def test_the_traffic_watch_catches_what_meta_lets_through():
    x = torch.empty(3, 4, device="meta")
    with HostTraffic("meta") as watch:
        x @ torch.ones(4, 2)  # runs silently on meta, a host-to-device copy on a GPU
        x[torch.tensor([0, 1])]  # a CPU index tensor
        x * 2.0  # a scalar: fine
    assert watch.events.count("aten.mm.default") == 1 and "aten.index.Tensor" in watch.events and "aten.mul.Tensor" not in watch.events


def test_a_stable_audio_sized_dit_builds_on_meta_and_runs_a_two_minute_forward():
    config = DiTConfig(latent_channels=64, latent_length=2584, width=1536, depth=24, heads=24, text_dim=768, cond_dim=768,
                       attention="sdpa")
    with torch.device("meta"):
        model = DiT(config)
    assert 1.0e9 < model.num_params() < 1.3e9
    task = as_task(model)
    data = synthetic_latent_set(n=2, channels=64, length=2584)
    batch = data.batch([0, 1]).to("meta")
    batch.text = torch.empty(2, batch.text.shape[1], 768, device="meta")
    plan = make_plan(batch.ids, 2, task.latent_shape, 0, device="meta")
    with torch.no_grad():
        assert task.loss(None, batch, plan, mask=True).shape == (2, 2)


def test_on_device_leaves_a_module_that_is_already_there_untouched():
    model = tiny_dit()
    before = [p.data_ptr() for p in model.parameters()]
    with on_device(model, "cpu"):
        assert as_task(model).device.type == "cpu"
    assert [p.data_ptr() for p in model.parameters()] == before


def test_bf16_autocast_fisher_keeps_float_sums_and_stays_close_to_fp32():
    model = tiny_dit()
    data = synthetic_latent_set()
    fp32 = compute_fisher(model, data, FisherConfig(n_timesteps=2, batch_size=3))
    bf16 = compute_fisher(model, data, FisherConfig(n_timesteps=2, batch_size=3, precision="bf16"))
    for k, f in fp32.diag.items():
        assert bf16.diag[k].dtype == torch.float32 and bf16.diag[k].shape == f.shape
        assert not torch.equal(bf16.diag[k], f)  # autocast did run in bf16
        assert float((bf16.diag[k] - f).norm() / f.norm()) < 0.1


def test_bf16_autocast_unlearning_gives_nearly_the_fp32_step():
    model = tiny_dit()
    data = synthetic_latent_set()
    fisher = compute_fisher(model, data, FisherConfig(n_timesteps=2, batch_size=3))
    query = data.batch([1])
    fp32 = unlearn(model, fisher, query, UnlearnConfig(lr=1e-3, n_timesteps=8, timestep_chunk=4))
    bf16 = unlearn(model, fisher, query, UnlearnConfig(lr=1e-3, n_timesteps=8, timestep_chunk=4, precision="bf16"))
    a = torch.cat([v.flatten() for v in fp32.values()])
    b = torch.cat([bf16[k].flatten() for k in fp32])
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) > 0.99


def test_bf16_autocast_scores_rank_like_fp32():
    model = tiny_dit()
    data = synthetic_latent_set(n=24)
    g = torch.Generator().manual_seed(0)
    target, _ = split_params(model, target_params(model, "all"))
    delta = {k: 3e-2 * torch.randn(v.shape, generator=g) for k, v in target.items()}
    fp32 = score_many(model, [delta], data, ScoreConfig(n_timesteps=8, batch_size=6), False)[0]
    bf16 = score_many(model, [delta], data, ScoreConfig(n_timesteps=8, batch_size=6, precision="bf16"), False)[0]
    assert bf16.dtype == torch.float64 and not torch.equal(bf16, fp32)
    assert spearmanr(fp32.numpy(), bf16.numpy()).statistic > 0.9


def test_autocast_is_a_no_op_in_fp32_and_on_meta():
    x = torch.randn(3, 4)
    w = torch.randn(4, 2)
    with autocast("cpu", "fp32"):
        assert (x @ w).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert torch.nn.functional.linear(x, w.T).dtype == torch.bfloat16
    with autocast("meta", "bf16"):
        assert (x @ w).dtype == torch.float32
