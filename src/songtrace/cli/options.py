"""Options and output helpers shared by every CLI command (kept apart from the library code)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

HomeOption = Annotated[
    Path | None,
    typer.Option("--home", help="Data directory for worlds, checkpoints and caches (default: $SONGTRACE_HOME, else ./songtrace-data)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace an existing artifact made with a different config.")]

console = Console(stderr=True)


def print_json(obj: Any) -> None:
    """Write a JSON document to stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
