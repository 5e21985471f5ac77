"""CLI: `songtrace compare` (unlearning vs. the non-counterfactual baselines on generated and planted queries)."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer

from songtrace.cli.options import (
    CodecOption,
    EmbedderOption,
    FisherOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OutDirOption,
    OverwriteOption,
    ScoreTimestepsOption,
    SeedOption,
    UnlearnDampingModeOption,
    UnlearnDampingOption,
    UnlearnGroupOption,
    UnlearnLrOption,
    UnlearnMaskOption,
    UnlearnStepsOption,
    UnlearnTimestepsOption,
    WorldOption,
    artifact_dir,
    console,
    print_json,
    tuned_unlearning,
)
from songtrace.errors import SongtraceError


def parse_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """`method.key=value` strings (value as JSON, else a string) -> {method: {key: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        if "=" not in pair or "." not in pair.split("=", 1)[0]:
            raise SongtraceError(f"bad --option {pair!r}; the form is METHOD.KEY=VALUE, e.g. gradient.dim=512")
        lhs, value = pair.split("=", 1)
        method, key = lhs.split(".", 1)
        try:
            parsed = jsonlib.loads(value)
        except jsonlib.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[key] = parsed
    return out


def split_methods(methods: list[str] | None) -> tuple[str, ...] | None:
    """Repeated and/or comma-separated method names."""
    if not methods:
        return None
    return tuple(m.strip() for item in methods for m in item.split(",") if m.strip())


def compare(
    queries: Annotated[int, typer.Option("--queries", help="Tracks to generate from diverse prompts (the paper: 16).")] = 16,
    out: OutDirOption = None,
    methods: Annotated[list[str] | None, typer.Option("--methods", help="Methods (repeat or comma-separate); default: all.")] = None,
    reference: Annotated[str, typer.Option("--reference", help="Method whose ranking orders Fig. 1.")] = "unlearning",
    seed: SeedOption = 0,
    embedder: EmbedderOption = "auto",
    seconds: Annotated[float | None, typer.Option("--seconds", help="Length of generated tracks (default: the prompt's track's).")] = None,
    sampler_steps: Annotated[int, typer.Option("--sampler-steps", help="Sampler steps per generation.")] = 50,
    cfg_scale: Annotated[float, typer.Option("--cfg-scale", help="Classifier-free guidance scale.")] = 3.0,
    planted_versions: Annotated[int, typer.Option("--planted-versions", help="Queries that are unseen versions of training pieces.")] = 8,
    planted_artists: Annotated[int, typer.Option("--planted-artists", help="Queries generated from prompts naming small artists.")] = 8,
    small_artist_tracks: Annotated[int, typer.Option("--small-artist-tracks", help="Catalogue size up to which an artist is small.")] = 5,
    lr: UnlearnLrOption = None,
    steps: UnlearnStepsOption = None,
    group: UnlearnGroupOption = None,
    mask: UnlearnMaskOption = None,
    damping: UnlearnDampingOption = None,
    damping_mode: UnlearnDampingModeOption = None,
    timesteps: UnlearnTimestepsOption = None,
    score_timesteps: ScoreTimestepsOption = 32,
    option: Annotated[list[str] | None, typer.Option("--option", help="Per-method option METHOD.KEY=VALUE (JSON value), e.g. "
                                                     "gradient.dim=512; repeatable.")] = None,
    model: ModelOption = "demo",
    codec: CodecOption = "demo",
    latents: LatentsOption = "demo",
    world: WorldOption = "demo",
    fisher: FisherOption = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Compare unlearning with the CLAP-, CLEWS-, LPIPS-like, RPS and gradient baselines (seed 002, Figs. 1-2).

    The seed draws the prompts, generations, planted queries and the baselines' noise; --embedder is the embedding
    baseline's; the Fisher is read for unlearning. Results go to --out (default <home>/runs/compare/<config hash>).

    Example: songtrace compare --queries 16 --methods unlearning,embedding,activations --out cmp/ --json
    """
    from songtrace.attribution.score import ScoreConfig
    from songtrace.compare.run import ALL_METHODS, CompareConfig, run_compare
    from songtrace.home import resolve_home

    model_dir, task, unlearn = tuned_unlearning(home, model, lr=lr, steps=steps, group=group, mask=mask, damping=damping,
                                                damping_mode=damping_mode, n_timesteps=timesteps, seed=seed)
    config = CompareConfig(
        queries=queries, methods=split_methods(methods) or ALL_METHODS, reference=reference, seed=seed, embedder=embedder,
        seconds=seconds, sampler_steps=sampler_steps, cfg_scale=cfg_scale, planted_versions=planted_versions,
        planted_artists=planted_artists, small_artist_tracks=small_artist_tracks,
        unlearn=unlearn,
        score=ScoreConfig(n_timesteps=score_timesteps, seed=seed), options=parse_options(option or []),
    )
    out_dir = out or resolve_home(home) / "runs" / "compare" / config.config_hash()
    fisher_dir = artifact_dir(home, "fisher", fisher) if "unlearning" in config.methods else None
    summary = run_compare(config, model_dir, artifact_dir(home, "codec", codec),
                          artifact_dir(home, "latents", latents), artifact_dir(home, "world", world), out_dir,
                          fisher_dir=fisher_dir, home=home, overwrite=overwrite, model=task)
    summary = {"out_dir": str(out_dir), **summary}
    if json:
        print_json(summary)
        return
    console.print(f"compared {', '.join(config.methods)} on {summary['queries']} queries x {summary['n_items']} training items")
    for m, r in summary.get("pearson_with_reference", {}).items():
        console.print(f"  Pearson with {config.reference}: {m:12s} {r if r is None else round(r, 3)}")
    for row in summary.get("planted", []):
        console.print(f"  {row['kind']:16s} {row['method']:12s} hit@1 {row['hit@1']}  hit@10 {row['hit@10']}  (n={row['n_queries']})")
    console.print(f"results in {out_dir}")


def register(app: typer.Typer) -> None:
    """Add `songtrace compare`."""
    app.command("compare")(compare)
