"""CLI: `songtrace report` (the HTML page a person reads, from finished run directories)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from songtrace.cli.options import HomeOption, JsonOption, console, out_file_option, print_json


def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories: attribute, localise, compare, selfinfluence, optout-eval.",
                                                show_default=False)],
    out: Annotated[Path | None, out_file_option("HTML file to write (default: <home>/reports/<hash of the runs>/report.html).")] = None,
    top: Annotated[int, typer.Option("--top", help="Attributed training tracks to show (with players) per query.")] = 10,
    embed: Annotated[bool, typer.Option("--embed/--assets", help="Embed the audio in the page (one file) or write it to "
                                                                  "<page>_assets/ beside it (default).")] = False,
    title: Annotated[str | None, typer.Option("--title", help="Title of the page.")] = None,
    home: HomeOption = None,
    json: JsonOption = False,
) -> None:
    """Write a self-contained HTML report of attribution runs: players, waveforms, top sources, credit, heatmaps, figures.

    Needs no network to view: figures are inline, audio embedded or in the assets folder beside the page.
    Training tracks' audio comes from the world the run's latent cache was encoded from (found under --home).

    Example: songtrace report loc/ cmp/ si/ --out report.html --top 10
    """
    from songtrace.artifacts import hash_json
    from songtrace.home import resolve_home
    from songtrace.report import build_report

    page = out if out is not None else resolve_home(home) / "reports" / hash_json([str(r.resolve()) for r in runs])[:16] / "report.html"
    result = build_report(runs, page, home=home, top_k=top, media="embed" if embed else "assets", title=title)
    if json:
        print_json({"report": str(result.path), "assets": str(result.assets) if result.assets else None, **result.summary})
        return
    for q in result.summary["queries"]:
        top_track = q["top_track"]
        share = q["top_artist_share"]
        console.print(f"{q['prompt'] or q['query_id']}: most attributed {top_track.get('title') or top_track.get('train_id')} "
                      f"({top_track.get('artist')}); {q['top_artist']} holds {100 * (share or 0):.0f} % of the credit", highlight=False)
    console.print(f"report written to {result.path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `report` to the songtrace app."""
    app.command("report")(report)
