"""CLI: `songtrace codec train` and `songtrace encode` (thin wrappers over the library)."""

from __future__ import annotations

from typing import Annotated

import typer

from songtrace.cli.options import (
    CodecOption,
    HomeOption,
    JsonOption,
    OverwriteOption,
    SeedOption,
    WorldOption,
    artifact_dir,
    console,
    name_option,
    print_json,
)
from songtrace.home import stage_dir

codec_app = typer.Typer(help="Train the audio <-> latent codec.", no_args_is_help=True)


@codec_app.command("train")
def train(
    world: WorldOption = "demo",
    name: Annotated[str, name_option("codecs")] = "demo",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (default: the config's).")] = None,
    seed: SeedOption = 0,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Train the codec on a world's train split and report reconstruction quality on its valid split (resumes if interrupted).

    Example: songtrace codec train --world demo --name demo
    """
    from songtrace.codec.config import CodecConfig
    from songtrace.codec.train import train_codec

    config = CodecConfig(seed=seed) if steps is None else CodecConfig(steps=steps, seed=seed)
    out = stage_dir(home, "codecs", name)
    metrics = train_codec(config, artifact_dir(home, "world", world), out, overwrite=overwrite)
    if json:
        print_json({"codec_dir": str(out), **metrics})
        return
    console.print(f"codec written to {out}")
    console.print(
        f"{metrics['eval_split']} log-mel L1 {metrics['mel_l1']:.3f} (mean-mel baseline {metrics['baseline_mel_l1']:.3f}), "
        f"mel spectral convergence {metrics['mel_sc']:.3f} (baseline {metrics['baseline_mel_sc']:.3f}), "
        f"Griffin-Lim waveform SC {metrics['wave_sc']:.3f} (from the true mel {metrics['oracle_wave_sc']:.3f})"
    )


def encode(
    world: WorldOption = "demo",
    codec: CodecOption = "demo",
    name: Annotated[str, name_option("latents")] = "demo",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Tracks encoded at once.")] = 16,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Encode every track of a world into the latent cache that training, Fisher and scoring read.

    Example: songtrace encode --world demo --codec demo --name demo
    """
    from songtrace.codec.config import EncodeConfig
    from songtrace.codec.encode import encode_world
    from songtrace.codec.external import is_external, load_external_codec, looks_external

    if looks_external(codec) and not is_external(codec):
        load_external_codec(codec)  # refused, listing the valid kinds
    out = stage_dir(home, "latents", name)
    latents = encode_world(
        artifact_dir(home, "world", world),
        codec if is_external(codec) else artifact_dir(home, "codec", codec),
        out,
        overwrite=overwrite,
        config=EncodeConfig(batch_size=batch_size),
    )
    summary = {
        "latents_dir": str(out),
        "n_items": len(latents),
        "latent_shape": list(latents.latent_shape),
        "content_hash": latents.content_hash(),
    }
    if json:
        print_json(summary)
        return
    console.print(f"encoded {len(latents)} tracks to {out} (latent shape {latents.latent_shape})")


def register(app: typer.Typer) -> None:
    """Add `codec train` and `encode` to the songtrace app."""
    app.add_typer(codec_app, name="codec")
    app.command("encode")(encode)
