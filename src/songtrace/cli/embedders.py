"""CLI: `songtrace embedder train|embed` (the songclap embedder, embedding a world) and `songtrace fd`."""

from __future__ import annotations

from typing import Annotated

import typer

from songtrace.cli.options import (
    EmbedderOption,
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


def train(
    world: WorldOption = "demo",
    name: Annotated[str, name_option("embedders")] = "songclap",
    steps: Annotated[int | None, typer.Option("--steps", help="Training steps (default: the config's).")] = None,
    window: Annotated[float | None, typer.Option("--window", help="Window seconds (default: scaled to the world).")] = None,
    hop: Annotated[float | None, typer.Option("--hop", help="Hop in seconds (default: scaled to the world; 1 s).")] = None,
    seed: SeedOption = 0,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Train songclap, the contrastive audio-text embedder, on a world; report held-out retrieval vs random.

    The seed draws the initial weights, the crops and the gains.

    Example: songtrace embedder train --world demo --name songclap
    """
    from songtrace.embedders.songclap_train import config_for_world, train_songclap
    from songtrace.home import stage_dir

    overrides = {k: v for k, v in {"steps": steps, "window_seconds": window, "hop_seconds": hop}.items() if v is not None}
    world_dir = artifact_dir(home, "world", world)
    config = config_for_world(world_dir, seed=seed, **overrides)
    out = stage_dir(home, "embedders", name)
    metrics = train_songclap(config, world_dir, out, overwrite=overwrite)
    if json:
        print_json({"embedder_dir": str(out), **metrics})
        return
    ours, rnd = metrics["songclap"], metrics["random"]
    console.print(f"songclap trained in {metrics['training']['train_seconds']:.1f} s, written to {out}")
    console.print(f"held-out ({metrics['eval_split']}, {metrics['n_query']} tracks)   songclap   random")
    for key in ("text_to_audio_recall@1", "text_to_audio_recall@5", "text_to_audio_recall@10", "artist_nn_accuracy"):
        console.print(f"  {key:<26} {ours[key]:8.3f} {rnd[key]:8.3f}")
    console.print(f"  {'artist_nn_accuracy (dsp)':<26} {metrics['dsp']['artist_nn_accuracy']:8.3f}")


def embed(
    world: WorldOption = "demo",
    embedder: EmbedderOption = "songclap",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Embed every track of a world (windows and pooled vectors) into <home>/embeddings/<world>-<embedder>.

    Example: songtrace embedder embed --world demo --embedder songclap --json
    """
    from songtrace.embedders.registry import resolve_embedder
    from songtrace.embedders.world import embed_world
    from songtrace.home import stage_dir

    model = resolve_embedder(embedder, home)
    world_dir = artifact_dir(home, "world", world)
    out = stage_dir(home, "embeddings", f"{world_dir.name}-{model.name}")
    summary = embed_world(world_dir, model, out, overwrite=overwrite)
    if json:
        print_json(summary)
        return
    console.print(f"embedded {summary['tracks']} tracks ({summary['windows']} windows, {summary['dim']}-d) with {model.name} "
                  f"in {summary['seconds']:.1f} s ({summary['realtime_factor']}x real time) -> {out}")


def fd(
    reference: Annotated[str, typer.Argument(help="Reference set: a folder of audio, or world:NAME[:SPLIT][:artist=A][:half=0|1].")],
    evaluated: Annotated[str, typer.Argument(help="Evaluated set, in the same forms.")],
    embedder: EmbedderOption = "dsp",
    per: Annotated[str, typer.Option("--per", help="window (every window's vector, as fadtk) or track (one pooled vector).")] = "window",
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Frechet distance between two audio sets under an embedder, with the fadtk FD-infinity extrapolation.

    Example: songtrace fd world:demo:train:half=0 world:demo:train:half=1 --embedder songclap --json
    """
    from songtrace.embedders.registry import resolve_embedder
    from songtrace.metrics.fd import fd_between
    from songtrace.world.tracks import parse_source

    model = resolve_embedder(embedder, home)
    a, b = parse_source(reference, home), parse_source(evaluated, home)
    result = fd_between(model, a.waves, b.waves, a.sr, per=per, sr_b=b.sr)
    if json:
        print_json({"reference": reference, "evaluated": evaluated, **result.to_dict()})
        return
    fd_inf = "n/a" if result.fd_inf is None else f"{result.fd_inf:.4f}"
    console.print(f"FD_{model.name} = {result.fd:.4f}  (FD-inf {fd_inf}; n = {result.n_a} vs {result.n_b} {per}s, {result.dim}-d)")
    if result.note:
        console.print(f"note: {result.note}")


def register(app: typer.Typer) -> None:
    """Add `embedder train|embed` and `fd` to the songtrace app."""
    embedder_app = typer.Typer(help="Audio-text embedders: train songclap, embed a world.", no_args_is_help=True)
    embedder_app.command("train")(train)
    embedder_app.command("embed")(embed)
    app.add_typer(embedder_app, name="embedder")
    app.command("fd")(fd)
