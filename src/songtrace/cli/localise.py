"""CLI: `songtrace localise` (time-localised attribution: which training tracks explain which moments of a query)."""

from __future__ import annotations

from typing import Annotated

import typer

from songtrace.cli.options import (
    CodecOption,
    FisherOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OutDirOption,
    OverwriteOption,
    QueryOption,
    ScoreTimestepsOption,
    SeedOption,
    UnlearnDampingModeOption,
    UnlearnDampingOption,
    UnlearnGroupOption,
    UnlearnLrOption,
    UnlearnMaskOption,
    UnlearnStepsOption,
    UnlearnTimestepsOption,
    artifact_dir,
    console,
    print_json,
    query_codec,
    tuned_unlearning,
)


def localise(
    query: QueryOption,
    window: Annotated[float, typer.Option("--window", help="Window length in seconds; the windows tile each query.")] = 2.0,
    top: Annotated[int, typer.Option("--top", help="Training tracks to print (and to put in --json) per window.")] = 3,
    out: OutDirOption = None,
    lr: UnlearnLrOption = None,
    steps: UnlearnStepsOption = None,
    group: UnlearnGroupOption = None,
    mask: UnlearnMaskOption = None,
    damping: UnlearnDampingOption = None,
    damping_mode: UnlearnDampingModeOption = None,
    timesteps: UnlearnTimestepsOption = None,
    score_timesteps: ScoreTimestepsOption = 32,
    seed: SeedOption = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training items per scoring batch.")] = 16,
    model: ModelOption = "demo",
    latents: LatentsOption = "demo",
    fisher_name: FisherOption = "demo",
    codec: CodecOption = "demo",
    caption: Annotated[str | None, typer.Option("--caption", help="Caption of an audio query (default: none).")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", help="Seconds to generate for a prompt query (default: full).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute the base losses L(z_i, θ0) instead of using the cache.")] = False,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Attribute each window of a query: unlearn the window alone (M_U restricted to its frames), score τ per window.

    Writes windows.parquet (window x training item) beside the whole query's scores.parquet and credits.parquet,
    so `songtrace report loc/` shows it as a heatmap of query time x sources. Unlearning settings not given here come
    from `songtrace selfinfluence`'s best configuration for the same model.

    Example: songtrace localise --query x.latent.safetensors --window 2 --out loc/ --json
    """
    from songtrace.artifacts import hash_json
    from songtrace.attribution.localise import LocaliseConfig, window_summary
    from songtrace.attribution.localise import localise as run_localise
    from songtrace.attribution.score import ScoreConfig
    from songtrace.errors import SongtraceError
    from songtrace.home import resolve_home

    if top < 1:
        raise SongtraceError(f"--top must be >= 1, got {top}")
    model_dir, task, unlearn = tuned_unlearning(home, model, lr=lr, steps=steps, group=group, mask=mask, damping=damping,
                                                damping_mode=damping_mode, n_timesteps=timesteps, seed=seed)
    config = LocaliseConfig(
        window_seconds=window,
        unlearn=unlearn,
        score=ScoreConfig(n_timesteps=score_timesteps, seed=seed, batch_size=batch_size),
    )
    out_dir = out if out is not None else resolve_home(home) / "runs" / "localise" / hash_json({"config": config.to_dict(),
                                                                                                  "queries": list(query)})[:16]
    codec_dir = query_codec(home, codec)
    run = run_localise(
        query, config,
        model_dir=model_dir,
        latents_dir=artifact_dir(home, "latents", latents),
        fisher_dir=artifact_dir(home, "fisher", fisher_name),
        out_dir=out_dir, home=home, codec_dir=codec_dir,
        caption=caption, seconds=seconds, overwrite=overwrite, use_cache=not no_cache, model=task,
    )
    summary = window_summary(run.windows, top)
    if json:
        print_json({"out_dir": str(run.out_dir), "windows": summary})
        return
    from rich.table import Table

    for qid in dict.fromkeys(w["query_id"] for w in summary):
        table = Table(title=f"query {qid}: top {top} training tracks per window", title_justify="left")
        for col in ("time", "rank", "id", "artist", "title", "score"):
            table.add_column(col, justify="right" if col in ("rank", "score") else "left")
        for w in (w for w in summary if w["query_id"] == qid):
            for k, row in enumerate(w["top"]):
                span = f"{w['start_s']:.1f}-{w['end_s']:.1f} s" if k == 0 else ""
                table.add_row(span, str(row["rank"]), str(row["train_id"]), str(row["artist"]), str(row["title"]), f"{row['score']:.3e}")
        console.print(table)
    console.print(f"windows written to {run.out_dir / 'windows.parquet'}")


def register(app: typer.Typer) -> None:
    """Add `localise` to the songtrace app."""
    app.command("localise")(localise)
