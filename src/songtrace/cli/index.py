"""CLI: `songtrace index build`, the fast-mode index (projected, Fisher-preconditioned item gradients; memory-mapped shards)."""

from __future__ import annotations

from typing import Annotated

import typer

from songtrace.cli.options import (
    FisherOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OverwriteOption,
    SeedOption,
    artifact_dir,
    console,
    name_option,
    print_json,
)

index_app = typer.Typer(help="The fast attribution index (`songtrace attribute --mode fast` reads it).", no_args_is_help=True)


@index_app.command("build")
def build(
    model: ModelOption = "demo",
    latents: LatentsOption = "demo",
    fisher_name: FisherOption = "demo",
    dim: Annotated[int, typer.Option("--dim", "-k", help="Projected dimensions k per training item.")] = 1024,
    projection: Annotated[str, typer.Option("--projection", help="srdct (fast), gaussian, or identity (all weights; exact).")] = "srdct",
    group: Annotated[str, typer.Option("--group", help="Target layers (must match the queries' unlearning --group).")] = "all",
    damping: Annotated[float, typer.Option("--damping", help="Damping λ added to F (must match the queries').")] = 1e-3,
    damping_mode: Annotated[str, typer.Option("--damping-mode", help="relative (λ = damping × mean F) or absolute.")] = "relative",
    mask_loss: Annotated[bool, typer.Option("--mask-loss/--no-mask-loss", help="M_L: exclude padding from the items' loss.")] = False,
    timesteps: Annotated[int, typer.Option("--timesteps", help="Timesteps T per training item (as exact mode's --score-timesteps).")] = 32,
    seed: SeedOption = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Training items per gradient batch.")] = 8,
    shard_items: Annotated[int, typer.Option("--shard-items", help="Items per shard (one memory-mapped file each).")] = 4096,
    shard: Annotated[int | None, typer.Option("--shard", help="Build only this shard (one process per shard); default: all.")] = None,
    name: Annotated[str, name_option("index")] = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Project every training item's timestep-averaged, (F + λ)^(-1/2)-scaled loss gradient to k dimensions; resumable and shardable.

    Under torchrun each rank builds a block of the shards (use --shard-items small enough for several shards per rank):
    torchrun --nproc-per-node 8 -m songtrace.cli index build --shard-items 2048 --name big

    Example: songtrace index build --model demo --fisher demo -k 1024 --name demo
    """
    from songtrace.attribution.index import IndexConfig, build_index
    from songtrace.attribution.score import ScoreConfig
    from songtrace.attribution.shard import distributed
    from songtrace.home import stage_dir

    config = IndexConfig(dim=dim, projection=projection, projection_seed=seed, group=group, damping=damping, damping_mode=damping_mode,
                         mask_loss=mask_loss, score=ScoreConfig(n_timesteps=timesteps, seed=seed, batch_size=batch_size),
                         shard_items=shard_items)
    out = stage_dir(home, "index", name)
    with distributed("cpu") as job:
        index = build_index(artifact_dir(home, "model", model), artifact_dir(home, "latents", latents),
                            artifact_dir(home, "fisher", fisher_name), config, out, shard=shard, overwrite=overwrite, job=job)
    if not job.main:
        return
    summary = {"index_dir": str(out), "complete": index is not None}
    if index is not None:
        summary.update({k: index.record.get(k) for k in ("n_items", "k", "n_params", "shards", "content_hash")})
    if json:
        print_json(summary)
        return
    if index is None:
        console.print(f"shard {shard} written to {out}; the index is complete once every shard is built")
    else:
        console.print(f"index of {summary['n_items']} items × k={summary['k']} ({summary['shards']} shards) written to {out}")


def register(app: typer.Typer) -> None:
    """Add `songtrace index` to the app."""
    app.add_typer(index_app, name="index")
