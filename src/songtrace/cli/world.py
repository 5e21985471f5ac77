"""CLI: `songtrace world build | import | info` (thin wrappers over the library)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from songtrace.cli.options import HomeOption, JsonOption, OverwriteOption, SeedOption, artifact_dir, console, name_option, print_json
from songtrace.home import stage_dir

world_app = typer.Typer(help="Build the offline demo world, or import your own audio with captions.", no_args_is_help=True)

NameOption = Annotated[str, name_option("worlds")]
RateOption = Annotated[int, typer.Option("--sample-rate", help="Sample rate of the world's audio (Hz).")]
CAPTIONS_HELP = "CSV with columns file, caption, artist (optional: title, genre, instruments, bpm, key, meter, version_group)."
MaxSecondsOption = Annotated[float, typer.Option("--max-seconds", help="Longest track, in seconds (longer audio is cropped).")]


def _print_summary(summary: dict, seconds: float | None = None) -> None:
    """Human-readable world summary on stderr."""
    d = summary["duration"]
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    console.print(f"world {summary['dir']}{took}: {summary['tracks']} tracks, {len(summary['artists'])} artists, "
                  f"{summary['splits']['train']} train / {summary['splits']['valid']} valid, {summary['versions']} planted versions")
    console.print(f"durations {d['min']:.2f}-{d['max']:.2f} s (median {d['median']:.2f} s, total {d['total'] / 60:.1f} min), "
                  f"{100 * d['short_fraction']:.0f}% shorter than a third of {d['max_seconds']:g} s")
    width = max(len(a["artist"]) for a in summary["artists"])
    for a in sorted(summary["artists"], key=lambda a: -a["tracks"]):
        console.print(f"  {a['artist']:<{width}}  {a['tracks']:>4} tracks  {a['genre']}", highlight=False)


@world_app.command("build")
def build(
    tracks: Annotated[int, typer.Option("--tracks", help="Number of tracks.")] = 400,
    seed: SeedOption = 0,
    max_seconds: MaxSecondsOption = 12.0,
    sample_rate: RateOption = 16000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Processes rendering in parallel (the same world for any value).")] = 1,
    name: NameOption = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Render the demo world from music21's corpus with a General MIDI SoundFont (resumes if interrupted).

    The same seed gives the same world, for any --workers.

    Example: songtrace world build --tracks 400 --max-seconds 12 --workers 2
    """
    from songtrace.world.build import build_world
    from songtrace.world.config import WorldConfig
    from songtrace.world.world import load_world

    config = WorldConfig(tracks=tracks, seed=seed, max_seconds=max_seconds, sample_rate=sample_rate)
    start = time.perf_counter()
    out = build_world(config, stage_dir(home, "worlds", name), overwrite=overwrite, workers=workers)
    seconds = time.perf_counter() - start
    summary = load_world(out).summary()
    if json:
        print_json({**summary, "seconds": round(seconds, 2)})
        return
    _print_summary(summary, seconds)


@world_app.command("import")
def import_(
    directory: Annotated[Path, typer.Argument(help="Folder of audio files (any rate, mono or stereo).", show_default=False)],
    captions: Annotated[Path, typer.Option("--captions", help=CAPTIONS_HELP)],
    sample_rate: RateOption = 16000,
    max_seconds: MaxSecondsOption = 12.0,
    skip_unlisted: Annotated[bool, typer.Option("--skip-unlisted", help="Skip audio files the CSV does not list (else an error).")] = False,
    seed: SeedOption = 0,
    name: NameOption = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Import your own folder of audio with captions and artists as a world.

    The seed draws the train/valid split. Audio is resampled to --sample-rate, mixed to mono and cropped to --max-seconds.

    Example: songtrace world import ~/music --captions ~/music/captions.csv --name mine
    """
    from songtrace.world.config import ImportConfig
    from songtrace.world.importer import import_world
    from songtrace.world.world import load_world

    config = ImportConfig(sample_rate=sample_rate, max_seconds=max_seconds, seed=seed, unlisted="skip" if skip_unlisted else "error")
    out = import_world(directory, captions, stage_dir(home, "worlds", name), config, overwrite=overwrite)
    summary = load_world(out).summary()
    if json:
        print_json(summary)
        return
    _print_summary(summary)


@world_app.command("info")
def info(
    name: Annotated[str, typer.Option("--name", help="World to describe: a name under <home>/worlds, or its directory.")] = "demo",
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Describe a world: artists with catalogue sizes, durations, splits, planted versions.

    Example: songtrace world info --name demo --json
    """
    from songtrace.world.world import load_world

    summary = load_world(artifact_dir(home, "world", name)).summary()
    if json:
        print_json(summary)
        return
    _print_summary(summary)


def register(app: typer.Typer) -> None:
    """Add the `world` command group to the main app."""
    app.add_typer(world_app, name="world")
