"""CLI: `songtrace cost measure` (this machine's throughput on a model) and `songtrace cost predict` (wall time and GPU-hours)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from songtrace.cli.options import DeviceOption, HomeOption, JsonOption, LatentsOption, ModelOption, artifact_dir, console, print_json

cost_app = typer.Typer(help="The cost model: measure a throughput here, predict the Fisher, unlearning and a query at any scale.",
                       no_args_is_help=True)


@cost_app.command("measure")
def measure(
    model: ModelOption = "demo",
    latents: LatentsOption = "demo",
    items: Annotated[int, typer.Option("--items", help="Training items per measured batch.")] = 8,
    timesteps: Annotated[int, typer.Option("--timesteps", help="Timesteps per item (rows per pass = items × timesteps).")] = 8,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed repeats of each pass (the fastest counts).")] = 3,
    device: DeviceOption = "cpu",
    precision: Annotated[str, typer.Option("--precision", help="fp32, or bf16 autocast.")] = "fp32",
    out: Annotated[Path | None, typer.Option("--out", help="JSON to write (default: <home>/cost/DEVICE-PRECISION.json).")] = None,
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Measure forward FLOP/s, the backward ratio and the Fisher's per-sample cost of a model on this machine.

    On a CPU the times are this process's CPU seconds with one torch thread (robust on a shared machine; the wall
    time of a one-thread run; recorded as clock "cpu", threads 1); on a GPU, wall seconds.
    `songtrace cost predict --throughput FILE` then scales them to any model size, data set and number of devices.

    Example: songtrace cost measure --model demo --latents demo --json
    """
    from songtrace.artifacts import write_json
    from songtrace.attribution.cost import measure_throughput
    from songtrace.data.latents import LatentSet
    from songtrace.errors import SongtraceError
    from songtrace.home import resolve_home
    from songtrace.model.registry import load_task
    from songtrace.model.task import on_device, runtime_device

    task = load_task(artifact_dir(home, "model", model))
    data = LatentSet.load(artifact_dir(home, "latents", latents)).subset("train")
    if items < 1 or timesteps < 1 or repeats < 1:
        raise SongtraceError("--items, --timesteps and --repeats must be >= 1")
    batch = data.batch(list(range(min(items, len(data)))))
    with on_device(task.module, runtime_device(device)):
        tp = measure_throughput(task, batch, rows_timesteps=timesteps, repeats=repeats, precision=precision,
                                name=f"{runtime_device(device)} {precision}")
    path = out if out is not None else resolve_home(home) / "cost" / f"{device}-{precision}.json"
    write_json(path, tp.to_dict())
    if json:
        print_json({"throughput": tp.to_dict(), "file": str(path)})
        return
    console.print(f"{tp.forward_flops_per_s / 1e9:.1f} GFLOP/s forward, backward {tp.backward_ratio:.2f}x a forward, "
                  f"per-sample square {tp.square_seconds_per_weight:.2e} s per weight and row ({tp.source}); written to {path}")


@cost_app.command("predict")
def predict_cmd(
    weights: Annotated[float, typer.Option("--weights", help="Transformer weights P (per-token; e.g. 1.13e9).")] = 1.13e9,
    frames: Annotated[int, typer.Option("--frames", help="Latent frames L per track (2584 = 2 minutes at Stable Audio's rate).")] = 2584,
    width: Annotated[int, typer.Option("--width", help="Transformer width W.")] = 1536,
    depth: Annotated[int, typer.Option("--depth", help="Transformer blocks D.")] = 24,
    cond_tokens: Annotated[int, typer.Option("--cond-tokens", help="Conditioning tokens S of the cross-attention.")] = 130,
    tracks: Annotated[int, typer.Option("--tracks", help="Training tracks N.")] = 115_000,
    fisher_timesteps: Annotated[int, typer.Option("--fisher-timesteps", help="T of the Fisher per track.")] = 16,
    unlearn_timesteps: Annotated[int, typer.Option("--unlearn-timesteps", help="T of the unlearning step (paper: 2048).")] = 2048,
    steps: Annotated[int, typer.Option("--steps", help="Unlearning steps per query.")] = 1,
    score_timesteps: Annotated[int, typer.Option("--score-timesteps", help="T per track when scoring.")] = 32,
    cached_base: Annotated[bool, typer.Option("--cached-base/--recompute-base", help="Base losses L(z_i, θ0) cached.")] = True,
    gpus: Annotated[int, typer.Option("--gpus", help="Devices the Fisher, the scoring and the index are sharded over.")] = 8,
    efficiency: Annotated[float, typer.Option("--efficiency", help="Parallel efficiency of the sharding (0-1].")] = 0.95,
    gpu: Annotated[str, typer.Option("--gpu", help="An assumed device: h100-bf16, h100-fp32, h200-bf16.")] = "h100-bf16",
    throughput: Annotated[Path | None, typer.Option("--throughput", help="A throughput JSON of `cost measure` (not --gpu).")] = None,
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Predict wall time and GPU-hours of the Fisher, one unlearning step, scoring, one query and the fast index.

    The defaults are seed 002's setting (≈1.1 B weights, 2584 frames, 115 k tracks, T = 2048 for the unlearning step).
    --home is not read (predictions need no artifact); it is accepted like every command's.

    Example: songtrace cost predict --weights 1.13e9 --frames 2584 --tracks 115000 --gpus 8 --gpu h100-bf16 --json
    """
    from songtrace.artifacts import check_choice, read_json
    from songtrace.attribution.cost import GPUS, ModelShape, Throughput, Workload, predict

    if throughput is not None:
        tp = Throughput.from_dict(read_json(throughput))
    else:
        check_choice("--gpu", gpu, GPUS)
        tp = GPUS[gpu]
    shape = ModelShape(weights=weights, frames=frames, width=width, depth=depth, cond_tokens=cond_tokens)
    work = Workload(tracks=tracks, fisher_timesteps=fisher_timesteps, unlearn_timesteps=unlearn_timesteps, unlearn_steps=steps,
                    score_timesteps=score_timesteps, cached_base=cached_base, gpus=gpus, parallel_efficiency=efficiency)
    result = predict(shape, tp, work)
    if json:
        print_json({**result, "throughput": tp.to_dict()})
        return
    console.print(f"{tp.name} ({tp.source})", markup=False, highlight=False)
    if tp.clock == "cpu":
        console.print(f"wall times below are of {tp.threads} CPU thread(s) per device, as measured", markup=False)
    for name in ("fisher", "unlearn_step", "scoring", "query", "base_losses_once"):
        console.print(_line(name, result[name], gpus if name != "unlearn_step" else 1), markup=False)
    console.print(_line("fast index build", result["fast_index"]["build"], gpus), markup=False)
    console.print(_line("fast index query", result["fast_index"]["query"], 1), markup=False)


def _line(name: str, job: dict[str, Any], devices: int) -> str:
    hours = job["wall_seconds"] / 3600
    return f"{name:>18}: {hours:10.3f} h wall on {devices} device(s), {job['gpu_hours']:10.2f} device-hours"


def register(app: typer.Typer) -> None:
    """Add the `cost` group (measure, predict) to the songtrace app."""
    app.add_typer(cost_app, name="cost")

