"""CLI: `songtrace verify DIR`: does a finished artifact (an attribution run above all) reproduce from what it records?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from songtrace.cli.options import HomeOption, JsonOption, console, print_json

EXIT_NOT_VERIFIED = 3


def verify(
    directory: Annotated[Path, typer.Argument(help="A finished artifact directory: an attribution run (`attribute --out`), a model, ...",
                                              show_default=False)],
    batches: Annotated[int, typer.Option("--batches", help="Batches of training items whose scores are recomputed.")] = 3,
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Verify an artifact: every file against the sha256 in its completion marker; for an attribution run also its inputs
    (model, latents, Fisher hashes), each query's unlearned delta θ' − θ0 recomputed, and a sample of scores recomputed,
    all bit for bit. Exit code 0 when everything that could be checked matches, 3 when something does not (a file that
    cannot be read is a failed check too). DIRECTORY is an existing folder as given, else a path inside --home
    (e.g. `models/demo`); a run is checked against the directories it records.

    Example: songtrace verify run/ --json
    """
    from songtrace.artifacts import check_range, read_json
    from songtrace.attribution.verify import verify_artifact_dir, verify_run
    from songtrace.home import resolve_home

    check_range("--batches", batches, 1)
    if not directory.exists() and not directory.is_absolute():
        directory = resolve_home(home) / directory
    stage = read_json(directory / "config.json").get("stage") if (directory / "config.json").exists() else None
    report = verify_run(directory, sample_batches=batches) if stage == "AttributeConfig" else verify_artifact_dir(directory)
    if json:
        print_json(report)
    else:
        for c in report["checks"]:
            mark = {True: "ok  ", False: "FAIL", None: "skip"}[c["ok"]]
            console.print(f"{mark} {c['name']}: {c['detail']}", markup=False, highlight=False)
        console.print(f"{directory}: {'verified' if report['verified'] else 'NOT verified'}")
    if not report["verified"]:
        raise typer.Exit(EXIT_NOT_VERIFIED)


def register(app: typer.Typer) -> None:
    """Add `verify` to the songtrace app."""
    app.command("verify")(verify)
