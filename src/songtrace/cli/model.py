"""CLI: `songtrace train` (resumes an interrupted run) and `songtrace generate` (thin wrappers over the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from songtrace.cli.options import (
    CodecOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OverwriteOption,
    SeedOption,
    artifact_dir,
    console,
    name_option,
    out_file_option,
    print_json,
)
from songtrace.home import resolve_home, stage_dir


def train(
    latents: LatentsOption = "demo",
    name: Annotated[str, name_option("models")] = "demo",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (default: the config's).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Items per step.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak AdamW learning rate.")] = None,
    width: Annotated[int | None, typer.Option("--width", help="Transformer width.")] = None,
    depth: Annotated[int | None, typer.Option("--depth", help="Number of transformer blocks.")] = None,
    heads: Annotated[int | None, typer.Option("--heads", help="Attention heads.")] = None,
    mask_padding: Annotated[bool, typer.Option("--mask-padding", help="Exclude padded frames from the loss and attention.")] = False,
    seed: SeedOption = 0,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Train the DiT on a latent cache's train split; an interrupted run resumes from its last checkpoint.

    The seed draws the initial weights, the batches and the noise.

    Example: songtrace train --latents demo --name demo --steps 3000
    """
    from songtrace.model.train import TrainConfig, train_model

    fields = {"steps": steps, "batch_size": batch_size, "lr": lr}
    train_cfg = TrainConfig(seed=seed, mask_padding=mask_padding, **{k: v for k, v in fields.items() if v is not None})
    dit = {k: v for k, v in {"width": width, "depth": depth, "heads": heads}.items() if v is not None}
    out = stage_dir(home, "models", name)
    metrics = train_model(train_cfg, dit, artifact_dir(home, "latents", latents), out, overwrite=overwrite)
    if json:
        print_json({"model_dir": str(out), **{k: v for k, v in metrics.items() if not k.endswith("curve")}})
        return
    console.print(f"model written to {out} ({metrics['params']:,} weights)")
    if metrics.get("valid_loss") is not None:
        console.print(
            f"validation loss {metrics['valid_loss']:.4f} (untrained {metrics['valid_loss_init']:.4f}, "
            f"captions dropped {metrics['valid_loss_null_text']:.4f})"
        )


def generate(
    prompt: Annotated[str, typer.Option("--prompt", help="Text prompt.")],
    model: ModelOption = "demo",
    codec: CodecOption = "demo",
    seconds: Annotated[float, typer.Option("--seconds", help="Length of the track in seconds.")] = 8.0,
    seed: SeedOption = 0,
    steps: Annotated[int | None, typer.Option("--steps", help="Sampler steps.")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Classifier-free guidance scale (1 = no guidance).")] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="dpmpp-2m or ddim.")] = "dpmpp-2m",
    out: Annotated[Path | None, out_file_option("WAV to write (default <home>/generations/<model>-seed<seed>.wav).")] = None,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Generate a track from a prompt; saves the WAV, its latent (a ready attribution query) and a JSON record.

    The seed draws the initial noise. The latent beside the WAV (x.latent.safetensors) is a query for `songtrace attribute`.
    --out must end in .wav, lie outside any songtrace artifact folder, and name no existing file unless --overwrite.

    Example: songtrace generate --prompt "a chorale for four voices" --seconds 8 --seed 0 --out x.wav
    """
    from songtrace.diffusion.sampler import DEFAULT_CFG_SCALE, DEFAULT_STEPS
    from songtrace.model.generate import check_generation_out, query_paths, save_generated
    from songtrace.model.generate import generate as generate_track

    out = out or resolve_home(home) / "generations" / f"{Path(model).name}-seed{seed}.wav"
    check_generation_out(out, overwrite)
    track = generate_track(
        artifact_dir(home, "model", model), artifact_dir(home, "codec", codec), prompt, seconds, seed,
        steps=DEFAULT_STEPS if steps is None else steps, cfg_scale=DEFAULT_CFG_SCALE if cfg is None else cfg, sampler=sampler,
    )
    record = save_generated(track, out)
    wav_path, latent_path, json_path = query_paths(out)
    if json:
        print_json({**record, "wav": str(wav_path), "latent": str(latent_path), "record": str(json_path)})
        return
    console.print(f"wrote {wav_path} ({track.seconds:g} s) and its latent {latent_path}")


def register(app: typer.Typer) -> None:
    """Add `train` and `generate` to the songtrace app."""
    app.command("train")(train)
    app.command("generate")(generate)
