"""The `songtrace` command line: one module per command group, each a thin layer over library calls.

Adding a command module is one line here:

1. write `songtrace/cli/NAME.py` with `register(app)`, which adds its commands (`app.command("x")(fn)`)
   or its group (`app.add_typer(group, name="x")`); take shared options from `cli/options.py`,
   import library code inside the command functions, and give each command a docstring with an
   `Example:` line and `--json` when it produces a result a script reads;
2. add `"songtrace.cli.NAME"` to COMMAND_MODULES below (its place is the order of `songtrace --help`).

A module that needs an optional extra imports it inside its command: the command is listed, and
run without the extra it ends in one line naming the extra (`pip install 'songtrace[real]'`). A
module that cannot even be imported for a missing extra is not skipped silently: every run says
which extra its commands need.

Importing this package has no side effects and does not load torch: `main()` (the `songtrace`
console script, and `python -m songtrace.cli`) sets OMP_WAIT_POLICY first, then builds the app;
`songtrace.cli.app` (for CliRunner and embedding) is built on first access. Building the app loads
no torch either (tests/cli/test_usage_errors.py checks it), so `--help` and usage errors are quick.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Any

COMMAND_MODULES = (
    "songtrace.cli.world",
    "songtrace.cli.codec",
    "songtrace.cli.model",
    "songtrace.cli.model_import",
    "songtrace.cli.embedders",
    "songtrace.cli.attribution",
    "songtrace.cli.localise",
    "songtrace.cli.selfinfluence",
    "songtrace.cli.cost",
    "songtrace.cli.baselines",
    "songtrace.cli.compare",
    "songtrace.cli.index",
    "songtrace.cli.groundtruth",
    "songtrace.cli.optout",
    "songtrace.cli.report",
    "songtrace.cli.verify",
    "songtrace.cli.demo",
)

HELP = "Training-data attribution and opt-out unlearning for text-to-music latent diffusion models."


@functools.cache
def build_app(modules: tuple[str, ...] = COMMAND_MODULES) -> Any:
    """The typer app with every command module of `modules` registered."""
    import typer

    from songtrace.cli.errors import missing_extra_message

    app = typer.Typer(name="songtrace", help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            message = missing_extra_message(e, f"the commands of {name}")
            if message is None:
                raise
            from songtrace.cli.options import console

            console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
            continue
        module.register(app)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: tune OpenMP before torch loads, run the app, and turn every refusal into one line on stderr and exit code 2."""
    # Idle OpenMP threads spin by default, which collapses torch's speed when another process shares the
    # cores (measured: 2 threads fell from 7.4 to 0.3 DiT steps/s). Passive waiting costs nothing alone.
    # OpenMP reads this once, when torch first loads, so it is set here before anything imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from songtrace.cli.errors import run_reporting_errors

    sys.exit(run_reporting_errors(build_app, argv))
