"""CLI: `songtrace fisher` (the diagonal Fisher stage) and `songtrace attribute` (unlearn a query, score, rank)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from songtrace.cli.options import (
    CodecOption,
    DeviceOption,
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
    TopOption,
    UnlearnDampingModeOption,
    UnlearnDampingOption,
    UnlearnGroupOption,
    UnlearnLrOption,
    UnlearnMaskOption,
    UnlearnStepsOption,
    UnlearnTimestepsOption,
    artifact_dir,
    console,
    name_option,
    precision_option,
    print_json,
    query_codec,
    tuned_unlearning,
)

GroupOption = Annotated[
    str, typer.Option("--group", help="Target layers: to_kv, cross_attn, self_attn, all, or a regex over parameter names (re:...).")
]


def fisher(
    model: ModelOption = "demo",
    latents: LatentsOption = "demo",
    group: GroupOption = "all",
    timesteps: Annotated[int, typer.Option("--timesteps", help="Timesteps T per training item.")] = 16,
    seed: SeedOption = 0,
    mask: Annotated[bool, typer.Option("--mask/--no-mask", help="Exclude padded frames from the loss (default: no, as training).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training items per batch.")] = 8,
    sample_chunk: Annotated[int, typer.Option("--sample-chunk", help="(item, timestep) samples per vmap call; bounds memory.")] = 64,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Save partial sums every this many batches.")] = 10,
    device: DeviceOption = "cpu",
    precision: Annotated[str, precision_option("--precision", "the per-sample gradients")] = "fp32",
    name: Annotated[str, name_option("fisher")] = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Fit the diagonal Fisher F = mean over items and timesteps of squared per-sample gradients (resumes if interrupted).

    The seed draws the timesteps and noise, per item id. `attribute` and `selfinfluence` read the Fisher by --name.
    Under torchrun each rank sums a block of the items and the sums are all-reduced; a rerun computes only the rows
    no rank finished.

    On 8 GPUs: torchrun --nproc-per-node 8 -m songtrace.cli fisher --device cuda --precision bf16 --name big

    Example: songtrace fisher --model demo --latents demo --timesteps 16 --name demo
    """
    from songtrace.artifacts import read_json
    from songtrace.attribution.fisher import FisherConfig, fit_fisher
    from songtrace.attribution.shard import distributed
    from songtrace.home import stage_dir

    config = FisherConfig(group=group, n_timesteps=timesteps, seed=seed, mask=mask, batch_size=batch_size, sample_chunk=sample_chunk,
                          device=device, precision=precision)
    out = stage_dir(home, "fisher", name)
    with distributed(device) as job:
        fit_fisher(artifact_dir(home, "model", model), artifact_dir(home, "latents", latents), config, out,
                   overwrite=overwrite, checkpoint_every=checkpoint_every, job=job)
    if not job.main:
        return
    record = read_json(out / "config.json")
    summary = {"fisher_dir": str(out), **{k: record.get(k) for k in ("n_items", "n_params", "n_zero_entries", "mean_f", "content_hash")},
               "config": record.get("config"), "inputs": record.get("inputs")}
    if json:
        print_json(summary)
        return
    console.print(f"Fisher over {summary['n_items']} items × {timesteps} timesteps, {summary['n_params']} weights "
                  f"(group {group!r}, mean F {summary['mean_f']:.3e}, {summary['n_zero_entries']} zero entries) written to {out}")


def attribute(
    query: QueryOption,
    top: TopOption = 20,
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
    save_deltas: Annotated[bool, typer.Option(
        "--save-deltas/--no-save-deltas",
        help="Keep each query's unlearned delta θ' − θ0 (deltas/, for `songtrace verify`); one copy of the targeted weights per query. "
             "With --no-save-deltas no delta is written (one process keeps them in memory; torchrun ranks exchange them "
             "in <out>/shards/, cleared when the run is written).",
    )] = True,
    mode: Annotated[str, typer.Option("--mode", help="exact (unlearn, then score every item) or fast (first order, an index).")] = "exact",
    index: Annotated[str, typer.Option("--index", help="Fast mode: the index (a name under <home>/index, or its directory).")] = "demo",
    device: DeviceOption = "cpu",
    precision: Annotated[str, precision_option("--precision", "the unlearning step's query gradient")] = "fp32",
    score_precision: Annotated[str, precision_option("--score-precision", "the scoring passes (fp32 keeps the ranking)")] = "fp32",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Attribute a query to the training set by unlearning it (Eq. 6) and scoring τ = L(z_i, θ') − L(z_i, θ0).

    --mode fast answers from `songtrace index build`'s index: τ ≈ ∇L(z_i)ᵀ δ, one gradient and one
    matrix-vector product per query (one unlearning step; the index's group, damping and M_L must match).

    Unlearning settings not given here come from `songtrace selfinfluence`'s best configuration for the same model.
    The seed draws the timesteps and noise, per item id. The codec decodes audio queries. Results go to --out
    (default <home>/runs/attribute/<hash of config and queries>).

    Under torchrun the queries are unlearned one per rank and the training set is scored in shards over the ranks
    (a rerun after a dead rank recomputes only its unfinished shard); rank 0 prints and writes.

    On 8 GPUs: torchrun --nproc-per-node 8 -m songtrace.cli attribute --device cuda --precision bf16 -q train:ID --out run/

    Example: songtrace attribute --query x.latent.safetensors --query "prompt:a chorale@0" --top 20 --out run/ --json
    """
    from songtrace.artifacts import hash_json
    from songtrace.attribution.run import AttributeConfig
    from songtrace.attribution.run import attribute as run_attribute
    from songtrace.attribution.score import ScoreConfig
    from songtrace.attribution.shard import distributed
    from songtrace.errors import SongtraceError
    from songtrace.home import resolve_home

    model_dir, task, unlearn = tuned_unlearning(home, model, lr=lr, steps=steps, group=group, mask=mask, damping=damping,
                                                damping_mode=damping_mode, n_timesteps=timesteps, seed=seed, device=device,
                                                precision=precision)
    config = AttributeConfig(
        unlearn=unlearn,
        score=ScoreConfig(n_timesteps=score_timesteps, seed=seed, batch_size=batch_size, device=device, precision=score_precision),
    )
    if top < 1:
        raise SongtraceError(f"--top must be >= 1, got {top}")
    run_name = hash_json({"config": config.to_dict(), "queries": list(query), **({"mode": mode} if mode != "exact" else {})})[:16]
    out_dir = out if out is not None else resolve_home(home) / "runs" / "attribute" / run_name
    codec_dir = query_codec(home, codec)
    if mode not in ("exact", "fast"):
        raise SongtraceError(f"unknown --mode {mode!r}; valid: exact, fast")
    with distributed(device) as job:
        if mode == "fast":  # one query gradient and a product with the index: rank 0 alone
            from songtrace.attribution.index import attribute_fast
            from songtrace.home import resolve_artifact

            run = attribute_fast(query, config.unlearn, model_dir, artifact_dir(home, "latents", latents),
                                 artifact_dir(home, "fisher", fisher_name), resolve_artifact(home, "index", index), out_dir, home=home,
                                 codec_dir=codec_dir, caption=caption, seconds=seconds,
                                 overwrite=overwrite) if job.main else None
            job.barrier()
        else:
            run = run_attribute(
                query, config,
                model_dir=model_dir,
                latents_dir=artifact_dir(home, "latents", latents),
                fisher_dir=artifact_dir(home, "fisher", fisher_name),
                out_dir=out_dir, home=home, codec_dir=codec_dir,
                caption=caption, seconds=seconds, overwrite=overwrite, use_cache=not no_cache, model=task, job=job,
                save_deltas=save_deltas,
            )
    if not job.main or run is None:
        return
    if json:
        print_json({"out_dir": str(run.out_dir), "queries": [_result_json(r, top) for r in run.results]})
        return
    for r in run.results:
        _print_result(r, top)
    console.print(f"scores written to {run.out_dir / 'scores.parquet'}")


def _result_json(result: Any, top: int) -> dict[str, Any]:
    cols = ["rank", "train_id", "artist", "title", "score"]
    return {
        "query_id": result.query_id,
        "meta": result.meta,
        "top": result.top(top)[cols].to_dict(orient="records"),
        "credits": result.credits[["artist", "share", "positive_score", "n_items", "n_positive"]].to_dict(orient="records"),
    }


def _print_result(result: Any, top: int) -> None:
    from rich.columns import Columns
    from rich.table import Table

    ranking = Table(title=f"query {result.query_id}: top {top} of {len(result.table)}", title_justify="left")
    for col, justify in (("rank", "right"), ("id", "left"), ("artist", "left"), ("title", "left"), ("score", "right")):
        ranking.add_column(col, justify=justify)
    for row in result.top(top).itertuples():
        ranking.add_row(str(row.rank), str(row.train_id), str(row.artist), str(row.title), f"{row.score:.4e}")
    credits = Table(title="credit shares (positive τ)", title_justify="left")
    credits.add_column("artist")
    credits.add_column("share", justify="right")
    for row in result.credits.head(top).itertuples():
        credits.add_row(str(row.artist), f"{row.share:.1%}")
    console.print(Columns([ranking, credits]))


def register(app: typer.Typer) -> None:
    """Add `fisher` and `attribute` to the songtrace app."""
    app.command("fisher")(fisher)
    app.command("attribute")(attribute)
