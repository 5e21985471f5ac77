"""CLI: `songtrace selfinfluence`, the Train-to-Train self-influence search of seed 002 (Table 1) in one command."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from songtrace.cli.options import (
    CodecOption,
    DeviceOption,
    EmbedderOption,
    FisherOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OutDirOption,
    OverwriteOption,
    SeedOption,
    WorldOption,
    console,
    print_json,
)
from songtrace.errors import SongtraceError


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SongtraceError(f"--{name} must be a comma-separated list of numbers, got {text!r}") from None


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SongtraceError(f"--{name} must be a comma-separated list of integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def selfinfluence(
    out: OutDirOption = None,
    targets: Annotated[int, typer.Option("--targets", help="k-means targets, one per cluster (capped at a quarter of the items).")] = 40,
    stage_a_targets: Annotated[int, typer.Option("--stage-a-targets", help="Targets of stage A (lr x steps).")] = 4,
    lrs: Annotated[str, typer.Option("--lrs", help="Learning rates, comma-separated (relative update sizes with --lr-mode relative).")] = (
        "1e-7,1e-6,1e-5,1e-4,1e-3,1e-2,1e-1"),
    lr_mode: Annotated[str, typer.Option("--lr-mode", help="relative: lr = ‖δ‖/‖θ‖ of one step (adapted to the model); absolute: η.")] = (
        "relative"),
    steps: Annotated[str, typer.Option("--steps", help="Unlearning steps to try, comma-separated (1-4).")] = "1,2,3,4",
    groups: Annotated[str, typer.Option("--groups", help="Target layer groups: to_kv, cross_attn, self_attn, all.")] = (
        "to_kv,cross_attn,self_attn,all"),
    masks: Annotated[str, typer.Option("--masks", help="Masks: none, both (M_U+M_L), M_L, mixed (M_U only).")] = "none,both,M_L,mixed",
    full: Annotated[bool, typer.Option("--full", help="The full Cartesian grid on all targets instead of the staged search.")] = False,
    k: Annotated[int | None, typer.Option("--k", help="Top/bottom k of embed_topk/botk (default: paper's 100 of 115 k, scaled).")] = None,
    score_timesteps: Annotated[int, typer.Option("--score-timesteps", help="Timesteps T per training item when scoring.")] = 4,
    unlearn_timesteps: Annotated[int, typer.Option("--unlearn-timesteps", help="Timesteps T of the target's unlearning loss.")] = 64,
    damping: Annotated[float, typer.Option("--damping", help="Damping added to F (relative to mean F by default).")] = 1e-3,
    embedder: EmbedderOption = "auto",
    fd: Annotated[bool, typer.Option("--fd/--no-fd", help="Measure FD of a few generations before/after unlearning.")] = True,
    fd_prompts: Annotated[int, typer.Option("--fd-prompts", help="Generations per FD measurement.")] = 6,
    seed: SeedOption = 0,
    model: ModelOption = "demo",
    latents: LatentsOption = "demo",
    world: WorldOption = "demo",
    fisher: FisherOption = "demo",
    codec: CodecOption = "demo",
    no_save_best: Annotated[bool, typer.Option("--no-save-best", help="Do not save the best config for this model.")] = False,
    device: DeviceOption = "cpu",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Tune unlearning by self-influence: unlearn k-means targets, score the training set, find the best lr/steps/group/mask (resumable).

    The best configuration is saved per model, and `songtrace attribute` starts from it. The seed draws the targets,
    timesteps and noise; the world gives the audio for embeddings and the version groups; the Fisher is fitted over
    all weights if missing; the codec decodes generations for FD. Results go to --out (default
    <home>/runs/selfinfluence/<config hash>).

    Under torchrun every scoring pass is sharded over the ranks; rank 0 writes the grid.

    On 8 GPUs: torchrun --nproc-per-node 8 -m songtrace.cli selfinfluence --device cuda --out si/

    Example: songtrace selfinfluence --targets 40 --out si/ --json
    """
    from songtrace.attribution.shard import distributed
    from songtrace.selfinfluence.inputs import selfinfluence_from_dirs
    from songtrace.selfinfluence.run import SelfInfluenceConfig

    config = SelfInfluenceConfig(
        targets=targets, stage_a_targets=stage_a_targets, lrs=_floats(lrs, "lrs"), lr_mode=lr_mode, steps=_ints(steps, "steps"),
        groups=_names(groups), masks=_names(masks), staged=not full, k=k, score_timesteps=score_timesteps,
        unlearn_timesteps=unlearn_timesteps, damping=damping, embedder=embedder, fd=fd, fd_prompts=fd_prompts, seed=seed, device=device,
    )
    with distributed(device) as job:
        result = selfinfluence_from_dirs(config, home=home, model=model, latents=latents, world=world, fisher=fisher, codec=codec,
                                         out_dir=out, overwrite=overwrite, save_best=not no_save_best, job=job)
    if not job.main:
        return
    if json:
        print_json(_summary(result))
        return
    console.print((result.out_dir / "table.md").read_text(), markup=False, highlight=False)
    u = result.best["unlearn"]
    console.print(f"best: lr={u['lr']:g} steps={u['steps']} group={u['group']} mask={u['mask']}; "
                  f"{len(result.grid)} cells in {result.record.get('wall_seconds', float('nan')):.0f} s; results in {result.out_dir}")


def _summary(result: Any) -> dict[str, Any]:
    cols = [c for c in ("stage", "lr", "steps", "group", "mask", "mean_rank", "median_rank", "frac_rank1", "embed_topk", "embed_botk", "fd",
                        "mean_rank_short", "mean_rank_long", "artist_precision", "version_recall") if c in result.grid]
    return {
        "out_dir": str(result.out_dir),
        "best": result.best,
        "wall_seconds": result.record.get("wall_seconds"),
        "grid": result.grid[cols].to_dict(orient="records"),
    }


def register(app: typer.Typer) -> None:
    """Add `selfinfluence` to the songtrace app."""
    app.command("selfinfluence")(selfinfluence)
