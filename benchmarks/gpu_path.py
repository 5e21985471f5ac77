"""The GPU path on a Stable-Audio-Open-sized DiT: items/s and peak memory of scoring, the unlearning step and the Fisher.

NOT YET RUN ON A GPU: written and smoke-tested on a CPU (`--size tiny --device cpu`); a session that
is lent a GPU runs it as is:

    .venv/bin/python benchmarks/gpu_path.py --device cuda --size sao      # ~1.1 B weights, 64 channels, 2584 frames

Sized to fit a short GPU lease: at the sao size about 4-5 minutes on an H100/H200 by the cost model
(fp32 ≈ 0.2 s per forward row of 2584 frames at 50 % of 67 TFLOPS; bf16 about 12x faster).

Sizes: `sao` is our DiT at Stable Audio Open's width and depth (width 1536, 24 blocks, 24 heads,
768-d conditioning, fused attention) at seed 002's 2584 latent frames (2 minutes); `demo` the demo's
DiT (width 128, 4 blocks, 8 channels, 128 frames); `tiny` a few thousand weights for a smoke test.
The weights are random (cost does not depend on them; the bf16-vs-fp32 rank agreement is measured on
a random model and a random weight change, so it is a check of the arithmetic, not of a trained model).

Every step goes through the library's own code path (`loss_pass`, `unlearn`, `batch_square_sums`,
`measure_throughput`) with `device="cuda"`: plans drawn on the device, one batch copy per batch, bf16
autocast where asked. Each step's result (or its error, e.g. out of memory) is written to the JSON as
soon as it is known, so a run cut short keeps what it measured. Output: `$OUT/gpu_path_<size>.json`
when $OUT is set (the device tool's output folder), else benchmarks/results/gpu_path_<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr

from songtrace.attribution import FisherConfig, ScoreConfig, UnlearnConfig, loss_pass, split_params, target_params, unlearn
from songtrace.attribution.cost import GPUS, ModelShape, Workload, measure_throughput, predict
from songtrace.attribution.fisher import batch_square_sums
from songtrace.data.latents import LatentSet
from songtrace.model.dit import DiT, DiTConfig
from songtrace.model.task import as_task, eval_mode

SIZES: dict[str, dict[str, Any]] = {
    "sao": {"dit": {"latent_channels": 64, "latent_length": 2584, "width": 1536, "depth": 24, "heads": 24, "text_dim": 768,
                    "cond_dim": 768, "attention": "sdpa"},
            "tokens": 128, "items": 8, "score_timesteps": 8, "batches": [(1, 8), (4, 8), (8, 8)], "unlearn_timesteps": 32,
            "unlearn_chunks": [4, 8], "fisher_chunks": [1, 2], "fisher_timesteps": 4, "agreement_items": 16, "cost_rows": (1, 2)},
    "demo": {"dit": {"latent_channels": 8, "latent_length": 128, "width": 128, "depth": 4, "heads": 4, "attention": "sdpa"},
             "tokens": 32, "items": 64, "score_timesteps": 8, "batches": [(8, 8), (32, 8), (64, 8)], "unlearn_timesteps": 256,
             "unlearn_chunks": [64, 256], "fisher_chunks": [16, 64], "fisher_timesteps": 8, "agreement_items": 64, "cost_rows": (2, 4)},
    "tiny": {"dit": {"latent_channels": 4, "latent_length": 16, "width": 16, "depth": 2, "heads": 2, "cond_dim": 16,
                     "timestep_features": 16, "timing_features": 8, "attention": "sdpa"},
             "tokens": 6, "items": 8, "score_timesteps": 4, "batches": [(2, 4), (8, 4)], "unlearn_timesteps": 16,
             "unlearn_chunks": [4, 16], "fisher_chunks": [2, 8], "fisher_timesteps": 2, "agreement_items": 8, "cost_rows": (2, 2)},
}
PRECISIONS = ("bf16", "fp32")


def random_latents(n: int, channels: int, length: int, tokens: int, text_dim: int, seed: int = 0) -> LatentSet:
    """n items of random latents and caption tokens, full length (a 2-minute track each at the sao size)."""
    g = torch.Generator().manual_seed(seed)
    return LatentSet(
        ids=[f"r{i:05d}" for i in range(n)], artists=[f"a{i % 8}" for i in range(n)], splits=["train"] * n,
        latents=torch.randn(n, channels, length, generator=g), n_frames=torch.full((n,), length, dtype=torch.long),
        text=torch.randn(n, tokens, text_dim, generator=g), text_mask=torch.ones(n, tokens, dtype=torch.bool),
        seconds_start=torch.zeros(n), seconds_total=torch.full((n,), float(length) * 2048 / 44100),
    )


class Recorder:
    """The result JSON, rewritten after every step so that a cut-short run keeps what it measured."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "steps": {}}
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")

    def step(self, name: str, fn: Callable[[], dict[str, Any]], device: torch.device) -> None:
        """Run one measurement; record its result, or the error (out of memory included), and the peak memory."""
        _reset_peak(device)
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # a benchmark keeps going after an OOM or a missing kernel, and says so
            out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}", "traceback": traceback.format_exc()[-1500:]}
            if device.type == "cuda":
                torch.cuda.empty_cache()
        out["step_wall_seconds"] = round(time.perf_counter() - start, 2)
        out["peak_memory_gib"] = _peak_gib(device)
        self.data["steps"][name] = out
        self.write()
        print(f"{name}: {json.dumps({k: v for k, v in out.items() if k != 'traceback'}, default=str)[:400]}", flush=True)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--size", default="sao", choices=sorted(SIZES))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = SIZES[args.size]
    device = torch.device("cuda", torch.cuda.current_device()) if args.device == "cuda" else torch.device("cpu")
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "results"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    config = DiTConfig(**spec["dit"])
    text_dim = config.text_dim
    started = time.perf_counter()
    with torch.device(device):
        model = DiT(config).eval()
    task = as_task(model)
    header = {
        "benchmark": "gpu_path", "size": args.size, "device": str(device), "gpu": gpu, "ran_on_gpu": device.type == "cuda",
        "note": None if device.type == "cuda" else "CPU smoke test of the script: NOT a GPU measurement",
        "torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "model": {"dit": config.to_dict(), "weights": model.num_params(), "build_seconds": round(time.perf_counter() - started, 1)},
    }
    rec = Recorder(out_dir / f"gpu_path_{args.size}.json", header)
    n, t_score = spec["items"], spec["score_timesteps"]
    data = random_latents(n, config.latent_channels, config.latent_length, spec["tokens"], text_dim)

    # scoring: base losses over n items (one forward per item and timestep), several rows-per-forward settings
    for precision in PRECISIONS:
        for batch_size, chunk in spec["batches"]:
            def score(precision: str = precision, batch_size: int = batch_size, chunk: int = chunk) -> dict[str, Any]:
                cfg = ScoreConfig(n_timesteps=t_score, batch_size=batch_size, timestep_chunk=chunk, device=args.device, precision=precision)
                loss_pass(task, [], data, cfg, False, with_base=True)  # warm-up (kernels, allocator)
                _sync(device)
                start = time.perf_counter()
                loss_pass(task, [], data, cfg, False, with_base=True)
                _sync(device)
                seconds = time.perf_counter() - start
                return {"items": n, "timesteps": t_score, "rows_per_forward": batch_size * chunk, "seconds": round(seconds, 3),
                        "items_per_second": round(n / seconds, 3), "rows_per_second": round(n * t_score / seconds, 2)}

            rec.step(f"score_{precision}_b{batch_size}_c{chunk}", score, device)

    # the unlearning step: the query gradient over T timesteps, in chunks (seconds per timestep, projected to T = 2048)
    names = target_params(task, "all")
    fisher = {k: torch.ones_like(p, device="cpu") for k, p in model.named_parameters() if k in names}
    for precision in PRECISIONS:
        for chunk in spec["unlearn_chunks"]:
            def step(precision: str = precision, chunk: int = chunk) -> dict[str, Any]:
                fields = _device_fields(UnlearnConfig, args.device, precision)
                cfg = UnlearnConfig(n_timesteps=spec["unlearn_timesteps"], timestep_chunk=chunk, **fields)
                query = data.batch([0])
                unlearn(task, fisher, query, cfg, n_train=1000)
                _sync(device)
                start = time.perf_counter()
                unlearn(task, fisher, query, cfg, n_train=1000)
                _sync(device)
                seconds = time.perf_counter() - start
                per_t = seconds / cfg.n_timesteps
                return {"timesteps": cfg.n_timesteps, "timestep_chunk": chunk, "seconds": round(seconds, 3),
                        "seconds_per_timestep": round(per_t, 5), "projected_minutes_T2048": round(per_t * 2048 / 60, 2),
                        "device_fields": fields}

            rec.step(f"unlearn_{precision}_c{chunk}", step, device)

    # the Fisher: per-sample gradients and their squares, sample_chunk rows per vmap call
    target, frozen = split_params(task, names)
    for precision in PRECISIONS:
        for chunk in spec["fisher_chunks"]:
            def fisher_rows(precision: str = precision, chunk: int = chunk) -> dict[str, Any]:
                cfg = FisherConfig(n_timesteps=spec["fisher_timesteps"], batch_size=1, sample_chunk=chunk, device=args.device,
                                   precision=precision)
                batch = data.batch([0])
                with eval_mode(model):
                    batch_square_sums(task, target, frozen, batch, cfg)
                    _sync(device)
                    start = time.perf_counter()
                    batch_square_sums(task, target, frozen, batch, cfg)
                    _sync(device)
                seconds = time.perf_counter() - start
                return {"rows": cfg.n_timesteps, "sample_chunk": chunk, "seconds": round(seconds, 3),
                        "rows_per_second": round(cfg.n_timesteps / seconds, 3)}

            rec.step(f"fisher_{precision}_s{chunk}", fisher_rows, device)

    # bf16 vs fp32: rank agreement (Spearman) of τ for a random weight change of relative size 1e-3
    def agreement() -> dict[str, Any]:
        m = spec["agreement_items"]
        items = random_latents(m, config.latent_channels, config.latent_length, spec["tokens"], text_dim, seed=1)
        g = torch.Generator().manual_seed(0)
        delta = {k: 1e-3 * p.detach().abs().mean().item() * torch.randn(p.shape, generator=g) for k, p in target.items()}
        taus = {}
        for precision in PRECISIONS:
            cfg = ScoreConfig(n_timesteps=t_score, batch_size=spec["batches"][-1][0], timestep_chunk=t_score, device=args.device,
                              precision=precision)
            base, losses = loss_pass(task, [delta], items, cfg, False, with_base=True)
            taus[precision] = (losses[0] - base).numpy()
        rho = float(spearmanr(taus["fp32"], taus["bf16"]).statistic)
        return {"items": m, "timesteps": t_score, "spearman_bf16_vs_fp32": round(rho, 4), "target": ">= 0.99"}

    rec.step("agreement_bf16_vs_fp32", agreement, device)

    # the cost model with this device's measured throughput, at seed 002's setting
    for precision in PRECISIONS:
        def cost(precision: str = precision) -> dict[str, Any]:
            items, rows_t = spec["cost_rows"]  # few rows: the per-sample pass holds a float32 gradient and its float64 square per row
            tp = measure_throughput(task, data.batch(list(range(items))), rows_timesteps=rows_t, repeats=2, precision=precision,
                                    name=f"{gpu or device} {precision}")
            shape = ModelShape.of(task, cond_tokens=spec["tokens"] + 2)
            work = Workload(tracks=115_000, fisher_timesteps=16, unlearn_timesteps=2048, score_timesteps=32, cached_base=True, gpus=8)
            p = predict(shape, tp, work)
            return {"throughput": tp.to_dict(), "assumed_for_comparison": GPUS["h100-bf16"].to_dict(),
                    "seed002_prediction": {k: p[k] for k in ("unlearn_step", "scoring", "query", "fisher", "fast_index")}}

        rec.step(f"cost_model_{precision}", cost, device)
    rec.data["wall_seconds"] = round(time.perf_counter() - started, 1)
    rec.write()


def _device_fields(config_cls: type, device: str, precision: str) -> dict[str, str]:
    """The device / precision fields a config class has (UnlearnConfig gains them with the GPU path)."""
    fields = getattr(config_cls, "__dataclass_fields__", {})
    return {k: v for k, v in (("device", device), ("precision", precision)) if k in fields}


if __name__ == "__main__":
    main()
