"""The report's sections, one per kind of run directory, behind a registry (the extension point).

A `SectionKind` says how to recognise a run directory (from its files and `config.json` record),
how to turn it into the data its template shows, and which template (under `templates/sections/`)
shows it. `section_kind` picks the first kind, in registry order, that recognises a directory;
the page shows sections in that order too. Shipped kinds:

- `attribution`: an attribution run (`songtrace attribute`; also `songtrace localise`, which adds
  `windows.parquet`): per query its audio, waveform and spectrogram, the top-k training tracks with
  players, per-artist credit, the score distribution (Fig. 1 style) and, for a localisation run,
  the heatmap of query time x top sources with each window playable;
- `compare`: a `songtrace compare` run: Fig. 1, Fig. 2, correlations with the reference and planted hit rates;
- `selfinfluence`: a `songtrace selfinfluence` run: Table 1 and the best configuration;
- `optout`: a `songtrace optout-eval` run: `figures.parquet` (model, figure, value; model "gap_to_retrain"
  holds the gaps) as a table of figure x model and a chart of the headline figures.

To add a section for a new artifact: write `templates/sections/NAME.html.j2` (it receives `section`,
the dict `build` returns, plus `section.title`) and `register_section(SectionKind(NAME, title,
recognise, build))` before the registry's catch-all kinds; the CLI needs no change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from songtrace.artifacts import read_json, read_parquet
from songtrace.attribution.localise import WINDOWS_FILE
from songtrace.attribution.run import CREDITS_FILE, SCORES_FILE, Attribution, load_attribution
from songtrace.attribution.unlearn import MASKS
from songtrace.errors import SongtraceError
from songtrace.report.inputs import TrainingSources, generation_record, query_audio_path, training_sources
from songtrace.report.media import MediaStore, read_audio
from songtrace.report.plots import credits_figure, distribution_figure, figures_bar_chart, png_data_uri, query_figure
from songtrace.selfinfluence.report import GROUP_NAMES, PAPER_ROWS, TABLE_COLUMNS


@dataclasses.dataclass
class ReportContext:
    """What every section builder may use: the data directory, how many sources to show, and the media store."""

    home: str | Path | None
    top_k: int
    media: MediaStore
    heatmap_rows: int = 8


@dataclasses.dataclass(frozen=True)
class SectionKind:
    """One kind of run directory the report shows: how to recognise it, build its data, and which template renders it."""

    name: str
    title: str
    recognise: Callable[[Path, Mapping[str, Any]], bool]
    build: Callable[[Path, Mapping[str, Any], ReportContext], dict[str, Any]]

    @property
    def template(self) -> str:
        """The section's template, relative to the templates folder."""
        return f"sections/{self.name}.html.j2"


SECTION_KINDS: dict[str, SectionKind] = {}


def register_section(kind: SectionKind) -> SectionKind:
    """Add a section kind to the registry (recognised in registration order)."""
    SECTION_KINDS[kind.name] = kind
    return kind


def section_kind(run_dir: Path, record: Mapping[str, Any]) -> SectionKind:
    """The kind of section that shows a run directory, with an error listing the kinds the report knows."""
    for kind in SECTION_KINDS.values():
        if kind.recognise(run_dir, record):
            return kind
    raise SongtraceError(f"{run_dir}: a {record.get('stage', 'songtrace')!r} artifact, which the report does not show; "
                         f"it shows runs of: {', '.join(SECTION_KINDS)}")


def _fmt_score(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3g}"


# --------------------------------------------------------------------------- attribution (and localisation)


def heatmap(windows: pd.DataFrame, sources: TrainingSources, rows: int) -> dict[str, Any]:
    """Query time x top sources for one query: the union of every window's top 3 (at most `rows`), τ relative to the window's best."""
    spans = windows.groupby("window", sort=True)[["start_s", "end_s"]].first()
    best = windows[windows["rank"] <= 3].sort_values(["rank", "window"], kind="stable")
    ids = list(dict.fromkeys(best["train_id"]))[:rows]
    table = windows.pivot(index="train_id", columns="window", values="score").reindex(columns=spans.index)
    rank = windows.pivot(index="train_id", columns="window", values="rank").reindex(columns=spans.index)
    top = table.max(axis=0).clip(lower=0)
    out_rows = []
    for item in ids:
        cells = []
        for w in spans.index:
            tau = float(table.loc[item, w])
            level = max(0.0, tau) / float(top[w]) if float(top[w]) > 0 else 0.0
            cells.append({"score": tau, "score_text": _fmt_score(tau), "rank": int(rank.loc[item, w]), "level": round(level, 3)})
        out_rows.append({**sources.info(item), "cells": cells})
    return {"spans": [{"window": int(w), "start_s": float(r.start_s), "end_s": float(r.end_s)} for w, r in spans.iterrows()],
            "rows": out_rows}


def query_card(run_dir: Path, result: Attribution, query: Mapping[str, Any], sources: TrainingSources, windows: pd.DataFrame | None,
               ctx: ReportContext) -> dict[str, Any]:
    """Everything shown for one attributed query."""
    qid = result.query_id
    query = {**generation_record(query), **{k: v for k, v in query.items() if v is not None}}
    path = query_audio_path(run_dir, query, sources)
    wav, sr = read_audio(path, f"query {qid!r}")
    card: dict[str, Any] = {
        "query_id": qid, "kind": query.get("kind", ""), "prompt": query.get("prompt") or query.get("caption") or "",
        "seed": query.get("seed"), "source": query.get("source", ""), "seconds": round(len(wav) / sr, 2),
        "audio": ctx.media.audio_file(path, f"query-{qid}"), "delta_norm": query.get("delta_norm"), "heatmap": None,
    }
    own = windows[windows["query_id"] == qid] if windows is not None else None
    boundaries: list[float] = []
    if own is not None and len(own):
        card["heatmap"] = heatmap(own, sources, ctx.heatmap_rows)
        for span in card["heatmap"]["spans"]:
            start, end = int(span["start_s"] * sr), min(len(wav), math.ceil(span["end_s"] * sr))
            span["audio"] = ctx.media.audio_clip(wav[start:max(end, start + 1)], sr, f"window-{qid}-{span['window']}")
        boundaries = [s["start_s"] for s in card["heatmap"]["spans"][1:]]
    card["figure"] = png_data_uri(query_figure(wav, sr, boundaries))
    top = []
    for row in result.top(ctx.top_k).itertuples():
        info = sources.info(str(row.train_id))
        top.append({**info, "rank": int(row.rank), "score": float(row.score), "score_text": _fmt_score(float(row.score)),
                    "audio": ctx.media.audio_file(sources.audio_path(str(row.train_id)), f"train-{row.train_id}")})
    card["top"] = top
    credits = result.credits
    card["credits"] = [{"artist": str(r.artist), "share": float(r.share), "n_items": int(r.n_items)}
                       for r in credits.head(ctx.top_k).itertuples()]
    card["credits_figure"] = png_data_uri(credits_figure(credits["artist"].astype(str).tolist(), credits["share"].astype(float).tolist()))
    card["distribution_figure"] = png_data_uri(distribution_figure(result.scores.numpy(), ctx.top_k))
    positive = np.sort(result.scores.clamp_min(0).numpy())[::-1]
    card["top_share"] = float(positive[: ctx.top_k].sum() / positive.sum()) if positive.sum() > 0 else 0.0
    card["n_items"] = len(result.table)
    return card


def build_attribution(run_dir: Path, record: Mapping[str, Any], ctx: ReportContext) -> dict[str, Any]:
    """The attribution section: one card per query of the run."""
    run = load_attribution(run_dir)
    sources = training_sources(run_dir, record, ctx.home)
    windows = read_parquet(run_dir / WINDOWS_FILE) if (run_dir / WINDOWS_FILE).exists() else None
    queries = {q["query_id"]: q for q in record.get("queries", [])}
    cards = [query_card(run_dir, r, {"query_id": r.query_id, **queries.get(r.query_id, r.meta)}, sources, windows, ctx)
             for r in run.results]
    config = record.get("config", {})
    unlearn = config.get("unlearn", {})
    return {
        "run_dir": str(run_dir), "stage": record.get("stage", ""), "queries": cards,
        "settings": {k: unlearn.get(k) for k in ("lr", "steps", "group", "mask", "n_timesteps")} |
                    {"score_timesteps": config.get("score", {}).get("n_timesteps"), "window_seconds": config.get("window_seconds")},
        "n_items": record.get("n_items"), "world": str(sources.world.dir),
    }


def _is_attribution(run_dir: Path, record: Mapping[str, Any]) -> bool:
    return (run_dir / SCORES_FILE).is_file() and (run_dir / CREDITS_FILE).is_file()


# --------------------------------------------------------------------------- compare (Figs. 1-2)


def _png_file(path: Path) -> str | None:
    return png_data_uri(path.read_bytes()) if path.is_file() else None


def build_compare(run_dir: Path, record: Mapping[str, Any], ctx: ReportContext) -> dict[str, Any]:
    """Fig. 1, Fig. 2 and the comparison's summary figures."""
    summary = read_json(run_dir / "summary.json")
    reference = record.get("config", {}).get("reference", "unlearning")
    methods = sorted(set(summary.get("pearson_with_reference", {})) | set(summary.get("seconds_per_query", {})))
    rows = [{"method": m, "pearson": summary.get("pearson_with_reference", {}).get(m),
             "spearman": summary.get("spearman_with_reference", {}).get(m),
             "seconds_per_query": summary.get("seconds_per_query", {}).get(m)} for m in methods]
    planted = [{"kind": p.get("kind"), "method": p.get("method"), **{k: p.get(k) for k in ("hit@1", "hit@10", "mrr")}}
               for p in summary.get("planted", [])]
    return {"run_dir": str(run_dir), "reference": reference, "methods": rows, "planted": planted, "queries": summary.get("queries", {}),
            "n_items": summary.get("n_items"), "fig1": _png_file(run_dir / "fig1_scores.png"),
            "fig2": _png_file(run_dir / "fig2_correlations.png")}


def _is_compare(run_dir: Path, record: Mapping[str, Any]) -> bool:
    return record.get("stage") == "CompareConfig" or ((run_dir / "summary.json").is_file() and (run_dir / "correlations.json").is_file())


# --------------------------------------------------------------------------- self-influence (Table 1)


def table1_rows(grid: pd.DataFrame, best: Mapping[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Table 1 (seed 002) at the best (lr, steps): header and rows with each column's best value marked."""
    final = grid[~grid["stage"].astype(str).isin(["A", "V"])] if "stage" in grid else grid
    if not len(final):
        final = grid
    lr, steps = best.get("lr"), best.get("steps")
    at = final[(final["lr"] == lr) & (final["steps"] == steps)] if lr is not None and steps is not None else final
    if not len(at):
        at = final
    picked = [at[(at["group"] == g) & (at["mask"] == m)].head(1) for g, m in PAPER_ROWS]
    rows = pd.concat([p for p in picked if len(p)], ignore_index=True) if any(len(p) for p in picked) else at.head(0)
    columns = [c for c in TABLE_COLUMNS if c[0] in rows.columns][:6]
    marks = {}
    for col, _, _, how in columns:
        vals = pd.to_numeric(rows[col], errors="coerce").dropna()
        if how and len(vals) > 1 and vals.nunique() > 1:
            marks[col] = vals.min() if how == "min" else vals.max()
    out = []
    for _, r in rows.iterrows():
        m_u, m_l = MASKS.get(str(r["mask"]), (False, False))
        cells = []
        for col, _, fmt, _ in columns:
            v = r[col]
            text = "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)
            cells.append({"text": text, "best": col in marks and v == marks[col]})
        is_best = str(r["group"]) == best.get("group") and str(r["mask"]) == best.get("mask")
        out.append({"layer": GROUP_NAMES.get(str(r["group"]), str(r["group"])), "m_u": m_u, "m_l": m_l, "cells": cells, "chosen": is_best})
    return ["Target layer", "M_U", "M_L", *[h for _, h, _, _ in columns]], out


def build_selfinfluence(run_dir: Path, record: Mapping[str, Any], ctx: ReportContext) -> dict[str, Any]:
    """Table 1 and the chosen configuration of a self-influence search."""
    grid = read_parquet(run_dir / "grid.parquet")
    best = dict(record.get("best", {}))
    unlearn = best.get("unlearn", {})
    header, rows = table1_rows(grid, unlearn)
    return {"run_dir": str(run_dir), "header": header, "rows": rows, "best": unlearn, "metrics": best.get("metrics", {}),
            "rule": best.get("rule", ""), "n_cells": len(grid), "targets": len(record.get("target_ids", [])),
            "plot": _png_file(run_dir / "rank_vs_lr.png")}


def _is_selfinfluence(run_dir: Path, record: Mapping[str, Any]) -> bool:
    return (run_dir / "grid.parquet").is_file() and "best" in record


# --------------------------------------------------------------------------- opt-out evaluation


OPTOUT_MODELS = ("original", "unlearned", "retrained", "gap_to_retrain")
# The figures charted (when present): forgetting (loss rise, membership AUC, credit) and quality kept (FD).
OPTOUT_HEADLINE = ("loss.delta_forget", "membership.auc", "credit.artist_share", "credit.forget_items_share", "quality.fd_vs_original",
                   "loss.delta_retain")


def build_optout(run_dir: Path, record: Mapping[str, Any], ctx: ReportContext) -> dict[str, Any]:
    """The opt-out evaluation: figure x model (original, unlearned, retrained, gap to retraining)."""
    figures = read_parquet(run_dir / "figures.parquet")
    missing = {"model", "figure", "value"} - set(figures.columns)
    if missing:
        raise SongtraceError(f"{run_dir / 'figures.parquet'}: missing columns {sorted(missing)} (expected model, figure, value)")
    wide = figures.pivot_table(index="figure", columns="model", values="value", aggfunc="first", sort=False)
    models = [m for m in OPTOUT_MODELS if m in wide.columns] + [m for m in wide.columns if m not in OPTOUT_MODELS]
    rows = [{"figure": str(f), "values": [_fmt_score(float(wide.loc[f, m])) if pd.notna(wide.loc[f, m]) else "–" for m in models]}
            for f in wide.index]
    headline = [f for f in OPTOUT_HEADLINE if f in wide.index] or list(wide.index[:6])
    chart = None
    shown = [m for m in models if not str(m).startswith("gap_to_retrain")]  # one gap column per unlearned model
    if headline and shown:
        chart = png_data_uri(figures_bar_chart(headline, {m: [float(wide.loc[f, m]) for f in headline] for m in shown}))
    config = record.get("config", {})
    return {"run_dir": str(run_dir), "models": models, "rows": rows, "chart": chart, "config": config,
            "gaps": {k: v for k, v in record.get("gaps", {}).items()}}


def _is_optout(run_dir: Path, record: Mapping[str, Any]) -> bool:
    return (run_dir / "figures.parquet").is_file() and ((run_dir / "eval.json").is_file() or "Optout" in str(record.get("stage", "")))


register_section(SectionKind("attribution", "Attribution", _is_attribution, build_attribution))
register_section(SectionKind("compare", "Method comparison (seed 002, Figs. 1-2)", _is_compare, build_compare))
register_section(SectionKind("selfinfluence", "Self-influence search (seed 002, Table 1)", _is_selfinfluence, build_selfinfluence))
register_section(SectionKind("optout", "Opt-out evaluation", _is_optout, build_optout))
