"""Options and output helpers shared by every command, declared once here (kept apart from the library code).

An artifact option (`--model`, `--latents`, `--world`, `--codec`, `--fisher`) takes a name under
`<home>/<stage>/` or a directory path; `artifact_dir(home, "model", value)` resolves it the way
`songtrace.home.resolve_artifact` does for a Python caller. `--home` and `--out` are checked as the
command line is parsed, so a path that is a file is a one-line usage error before any work starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)

# option name -> the stage directory under <home> its names live in
ARTIFACT_STAGES = {"model": "models", "latents": "latents", "world": "worlds", "codec": "codecs", "fisher": "fisher"}


def _directory_or_new(value: Path | None) -> Path | None:
    """Refuse a path that exists and is not a directory (a directory option given a file)."""
    if value is not None and value.exists() and not value.is_dir():
        raise typer.BadParameter(f"{value} is a file, not a directory")
    return value


def _file_or_new(value: Path | None) -> Path | None:
    """Refuse a file path that is an existing directory, or whose parent is a file."""
    if value is None:
        return value
    if value.is_dir():
        raise typer.BadParameter(f"{value} is a directory; give the path of a file to write")
    parent = next((p for p in value.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise typer.BadParameter(f"{parent} is a file, not a directory")
    return value


def _artifact_option(name: str, what: str) -> Any:
    return typer.Option(f"--{name}", help=f"{what}: a name under <home>/{ARTIFACT_STAGES[name]}, or its directory.")


HomeOption = Annotated[
    Path | None,
    typer.Option("--home", callback=_directory_or_new,
                 help="Data directory for worlds, checkpoints and caches (default: $SONGTRACE_HOME, else ./songtrace-data)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts); messages go to stderr.")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace an existing artifact made with a different config "
                                                                  "(generate: an existing WAV).")]
_SEED_HELP = "Seed of every random choice the command makes (same seed, same inputs: same result)."
SeedOption = Annotated[int, typer.Option("--seed", help=_SEED_HELP)]
OptionalSeedOption = Annotated[int | None, typer.Option("--seed", help=_SEED_HELP)]  # unset: the command's docstring says what
OutDirOption = Annotated[
    Path | None,
    typer.Option("--out", callback=_directory_or_new, help="Output directory (default: as the description above says)."),
]

ModelOption = Annotated[str, _artifact_option("model", "Model")]
LatentsOption = Annotated[str, _artifact_option("latents", "Latent cache")]
WorldOption = Annotated[str, _artifact_option("world", "World (the audio, captions and artists)")]
CodecOption = Annotated[str, typer.Option("--codec", help=(
    "Codec (latents <-> audio): a name under <home>/codecs, or its directory; `encode`, `attribute` and `localise` also take a real "
    "model's own VAE and T5 as diffusers:DIR (a StableAudioPipeline folder) or sat:DIR (a stable-audio-tools folder)."))]
FisherOption = Annotated[str, _artifact_option("fisher", "Diagonal Fisher")]
# the same options where a command can do without them (its docstring says what unset means)
OptionalWorldOption = Annotated[str | None, _artifact_option("world", "World (the audio, captions and artists)")]
OptionalFisherOption = Annotated[str | None, _artifact_option("fisher", "Diagonal Fisher")]

QueryOption = Annotated[
    list[str],
    typer.Option("--query", "-q", help="train:ID, PATH.latent.safetensors, PATH.wav|.flac, or prompt:TEXT@SEED; repeat for several."),
]
TopOption = Annotated[int, typer.Option("--top", min=1, help="Rows of the ranking to print (and to put in --json).")]
EmbedderOption = Annotated[
    str,
    typer.Option("--embedder", help="auto (songclap if trained, else dsp), dsp, songclap, clap, laion-clap, openl3, "
                                    "a name under <home>/embedders, or a path to weights."),
]


def _unlearn_option(flag: str, what: str) -> Any:
    """An unlearning (Eq. 6) setting of `attribute` and `compare`: unset = the same default for both."""
    return typer.Option(flag, help=f"{what} (default: selfinfluence's best for this model, else the UnlearnConfig default).")


UnlearnLrOption = Annotated[float | None, _unlearn_option("--lr", "Unlearning learning rate η")]
UnlearnStepsOption = Annotated[int | None, _unlearn_option("--steps", "Unlearning steps (1-4), gradient re-evaluated each step")]
UnlearnGroupOption = Annotated[str | None, _unlearn_option("--group", "Target layers: to_kv, cross_attn, self_attn, all, or re:REGEX")]
UnlearnMaskOption = Annotated[str | None, _unlearn_option("--mask", "Padding masks: mixed (M_U only, the paper's best), both, M_L, none")]
UnlearnDampingOption = Annotated[float | None, _unlearn_option("--damping", "Damping λ added to F (see --damping-mode)")]
UnlearnDampingModeOption = Annotated[str | None, _unlearn_option("--damping-mode", "relative (λ = damping × mean F) or absolute")]
UnlearnTimestepsOption = Annotated[int | None, _unlearn_option("--timesteps", "Timesteps T of the query's unlearning loss (paper: 2048)")]
ScoreTimestepsOption = Annotated[int, typer.Option("--score-timesteps", help="Timesteps T per training item when scoring τ.")]


DeviceOption = Annotated[
    str, typer.Option("--device", help="Where the model runs: cpu, or cuda (under torchrun each rank takes the GPU of its LOCAL_RANK).")
]


def precision_option(flag: str, what: str) -> Any:
    """A `--precision`-like option: fp32, or bf16 autocast for `what` (README, Scaling out: which stages keep their ranking)."""
    return typer.Option(flag, help=f"fp32, or bf16 (autocast) for {what}.")


def plain_name(value: str | None) -> str | None:
    """Refuse an artifact name that is not one plain folder name: it must not reach outside `<home>/<stage>/` (`../latents/demo`)."""
    if value is None:
        return value
    if value in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value or value.startswith("."):
        raise typer.BadParameter(f"{value!r} is not a plain name (no '/', no leading '.'); it names a folder under <home>/<stage>/")
    return value


def name_option(stage: str) -> Any:
    """`--name` of the artifact a command writes, under `<home>/<stage>/` (a plain name, checked as the line is parsed)."""
    return typer.Option("--name", callback=plain_name, help=f"Name of the artifact to write (a directory under <home>/{stage}).")


def out_file_option(help: str) -> Any:
    """`--out` naming a file to write (refused as the line is parsed if it is a directory)."""
    return typer.Option("--out", callback=_file_or_new, help=help)


def artifact_dir(home: Path | None, option: str, value: str | Path) -> Path:
    """The directory an artifact option names: an existing artifact directory as given, else `<home>/<stage>/<value>`."""
    from songtrace.home import resolve_artifact

    return resolve_artifact(home, ARTIFACT_STAGES[option], value)


def query_codec(home: Path | None, value: str) -> Path | str | None:
    """The codec a query-resolving command encodes audio queries with: a real model's own VAE and T5 (`diffusers:DIR`, `sat:DIR`)
    as given, else the codec directory `--codec` names when it exists (None: only latent and training-item queries work)."""
    from songtrace.codec.external import is_external

    if is_external(value):
        return value
    codec_dir = artifact_dir(home, "codec", value)
    return codec_dir if codec_dir.exists() else None


def tuned_unlearning(home: Path | None, model: str | Path, **given: Any) -> tuple[Path, Any, Any]:
    """(model dir, its task, the UnlearnConfig): the model loaded once, the unlearning options given on the command line over
    `songtrace selfinfluence`'s best configuration for that model (said on the console when one is used)."""
    from songtrace.attribution.best_config import resolve_unlearn_config
    from songtrace.model.registry import load_task

    model_dir = artifact_dir(home, "model", model)
    task = load_task(model_dir)  # loaded (and its identity hashed) once for the defaults and the run
    unlearn, source = resolve_unlearn_config(home, task, **given)
    if source is not None:
        console.print(f"unlearning settings from {source} (songtrace selfinfluence); options given here override them")
    return model_dir, task, unlearn


def print_json(obj: Any) -> None:
    """Write a JSON document to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
