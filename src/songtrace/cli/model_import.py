"""CLI: `songtrace model import --diffusers DIR | --sat DIR` (a thin wrapper over `songtrace.model.importer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from songtrace.cli.options import HomeOption, JsonOption, OverwriteOption, console, name_option, print_json
from songtrace.home import stage_dir

model_app = typer.Typer(help="Real model checkpoints: import a Stable Audio model from diffusers or stable-audio-tools.",
                        no_args_is_help=True)


@model_app.command("import")
def import_(
    diffusers: Annotated[Path | None, typer.Option("--diffusers", help="A diffusers StableAudioPipeline folder (save_pretrained).")] = None,
    sat: Annotated[
        Path | None, typer.Option("--sat", help="A stable-audio-tools folder: model_config.json + model.safetensors (or model.ckpt).")
    ] = None,
    name: Annotated[str, name_option("models")] = "imported",
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Load a pickle-capable .ckpt (it can run code: only a file you trust).")
    ] = False,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Import a checkpoint as a songtrace model directory that every command takes (--model NAME).

    Example: songtrace model import --diffusers ./stable-audio-open-1.0 --name sao
    """
    from songtrace.errors import SongtraceError
    from songtrace.model.importer import import_model

    sources = {k: v for k, v in {"diffusers": diffusers, "sat": sat}.items() if v is not None}
    if len(sources) != 1:
        raise SongtraceError("give exactly one of --diffusers DIR or --sat DIR")
    (library, source), = sources.items()
    out = stage_dir(home, "models", name)
    from songtrace.artifacts import allow_pickle as allowing_pickle

    with allowing_pickle(allow_pickle, flag="--allow-pickle"):
        summary = import_model(library, source, out, overwrite=overwrite)
    if json:
        print_json(summary)
        return
    verb = "already imported" if summary["skipped"] else "imported"
    console.print(f"{verb} {summary['arch']} model ({summary['n_params']:,} weights, latents {summary['latent_shape']}) to {out}")


def register(app: typer.Typer) -> None:
    """Add the `model` group (`model import`) to the songtrace app."""
    app.add_typer(model_app, name="model")
