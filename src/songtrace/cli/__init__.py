"""The `songtrace` command line: one command per stage, plus `demo`. A thin layer over the library."""

from __future__ import annotations

import importlib
import os
import sys

# Idle OpenMP threads spin by default, which collapses torch's speed when another process shares the
# cores (measured: 2 threads fell from 7.4 to 0.3 DiT steps/s). Passive waiting costs nothing alone.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from songtrace.cli.options import console
from songtrace.errors import SongtraceError

app = typer.Typer(
    name="songtrace",
    help="Training-data attribution and opt-out unlearning for text-to-music latent diffusion models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each stage module exposes `register(app)`; the order here is the order of `songtrace --help`.
STAGE_MODULES = (
    "songtrace.cli.world",
    "songtrace.cli.codec",
    "songtrace.cli.model",
    "songtrace.cli.embedders",
    "songtrace.cli.attribution",
    "songtrace.cli.selfinfluence",
    "songtrace.cli.baselines",
    "songtrace.cli.compare",
    "songtrace.cli.demo",
)

for _name in STAGE_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _e:
        if _e.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    """Entry point: run the app, turning `SongtraceError` into a clear message and exit code 2."""
    threads = os.environ.get("SONGTRACE_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        app(standalone_mode=False)
    except SongtraceError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise

