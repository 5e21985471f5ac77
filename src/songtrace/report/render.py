"""Building the HTML report from run directories: read each run, build its section, render the page with jinja2.

The page is self-contained: CSS and the little JavaScript it has are inline, figures are inline PNG
data, and audio is either embedded (`media="embed"`, one file) or written to `<page>_assets/` beside
it (`media="assets"`, the default: smaller page, the folder travels with it). Nothing is fetched
from a network. `build_report` also returns a short summary (where the credit went, per query) for
scripts and for the command line's closing lines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from songtrace import __version__
from songtrace.artifacts import atomic_path
from songtrace.errors import SongtraceError
from songtrace.progress import progress
from songtrace.report.inputs import read_run
from songtrace.report.media import MediaStore
from songtrace.report.sections import SECTION_KINDS, ReportContext, section_kind

TEMPLATE = "report.html.j2"


def environment() -> Any:
    """The jinja2 environment of the report's templates (package data), HTML autoescaped."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("songtrace.report", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
                              trim_blocks=False, lstrip_blocks=False)


@dataclasses.dataclass
class Report:
    """A written report: the page, its assets folder (None when embedded) and a short summary of what it shows."""

    path: Path
    assets: Path | None
    summary: dict[str, Any]


def summarise(sections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per query: the most attributed track, the top artist's credit share; plus which other sections the page has."""
    queries = []
    for section in sections:
        if section["kind"] != "attribution":
            continue
        for q in section["data"]["queries"]:
            top = q["top"][0] if q["top"] else {}
            credit = q["credits"][0] if q["credits"] else {}
            queries.append({
                "query_id": q["query_id"], "kind": q["kind"], "prompt": q["prompt"], "seconds": q["seconds"],
                "top_track": {k: top.get(k) for k in ("train_id", "title", "artist", "score")},
                "top_artist": credit.get("artist"), "top_artist_share": credit.get("share"), "top_k_share": q["top_share"],
                "windows": [{"start_s": s["start_s"], "end_s": s["end_s"],
                             "top": next((r["train_id"] for r in q["heatmap"]["rows"] if r["cells"][i]["rank"] == 1), None)}
                            for i, s in enumerate(q["heatmap"]["spans"])] if q.get("heatmap") else None,
            })
    return {"queries": queries, "sections": [s["kind"] for s in sections]}


def build_report(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    home: str | Path | None = None,
    top_k: int = 10,
    media: str = "assets",
    title: str | None = None,
) -> Report:
    """Write the HTML report of `run_dirs` (attribution, localisation, compare, selfinfluence, optout-eval runs) to `out`.

    Every run directory must be a finished songtrace run the report knows (an error names the first
    one that is not); a missing audio file is an error naming it.
    """
    if not run_dirs:
        raise SongtraceError("no run directory given; pass the output directory of songtrace attribute, localise, compare, "
                             "selfinfluence or optout-eval")
    if top_k < 1:
        raise SongtraceError(f"top_k must be >= 1, got {top_k}")
    out = Path(out)
    if out.is_dir():
        raise SongtraceError(f"{out}: is a directory; give the path of the HTML file to write")
    runs = [Path(r) for r in run_dirs]
    if len(set(map(str, runs))) != len(runs):
        raise SongtraceError("the same run directory is given twice")
    kinds = [(run, record, section_kind(run, record)) for run in runs for record in [read_run(run)]]
    store = MediaStore(out, media)
    store.prepare()
    ctx = ReportContext(home=home, top_k=top_k, media=store)
    order = list(SECTION_KINDS)
    ordered = sorted(kinds, key=lambda k: order.index(k[2].name))
    sections = [{"kind": kind.name, "title": kind.title, "template": kind.template, "run_dir": str(run),
                 "data": kind.build(run, record, ctx)}
                for run, record, kind in progress(ordered, total=len(ordered), desc="report", unit="run")]
    page = environment().get_template(TEMPLATE).render(
        title=title or "songtrace attribution report", sections=sections, runs=[str(r) for r in runs], version=__version__)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    assets = store.assets if store.mode == "assets" else None
    return Report(out, assets, summarise(sections))
