"""CLI: `songtrace baseline` (attribute queries with one non-counterfactual method: embedding, version, activations,
representer, gradient)."""

from __future__ import annotations

from typing import Annotated

import typer

from songtrace.cli.options import (
    CodecOption,
    EmbedderOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OutDirOption,
    OverwriteOption,
    QueryOption,
    SeedOption,
    TopOption,
    WorldOption,
    artifact_dir,
    console,
    print_json,
)


def baseline(
    method: Annotated[str, typer.Option("--method", help="embedding (CLAP-like), version (CLEWS-like), activations (LPIPS-like), "
                                        "representer (RPS) or gradient (TRAK-like).")],
    query: QueryOption,
    option: Annotated[list[str] | None, typer.Option("--option", help="Method option KEY=VALUE (JSON value), e.g. dim=512.")] = None,
    top: TopOption = 10,
    out: OutDirOption = None,
    embedder: EmbedderOption = "auto",
    seed: SeedOption = 0,
    model: ModelOption = "demo",
    codec: CodecOption = "demo",
    latents: LatentsOption = "demo",
    world: WorldOption = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Attribute queries to the training set with one baseline method (seed 002, section 3.3).

    --embedder is the embedding method's; the seed draws the white-box methods' noise and projections; the codec
    decodes latent queries to audio. Results go to --out (default <home>/runs/baseline/<hash of config and queries>).

    Example: songtrace baseline --method embedding --query x.latent.safetensors --top 10 --json
    """
    from songtrace.artifacts import hash_json
    from songtrace.baselines.run import BaselineConfig, run_baseline
    from songtrace.cli.compare import parse_options
    from songtrace.home import resolve_home

    options = parse_options([f"{method}.{o}" for o in option or []]).get(method, {})
    config = BaselineConfig(method=method, options=options, embedder=embedder, seed=seed)
    out_dir = out or resolve_home(home) / "runs" / "baseline" / hash_json({"config": config.to_dict(), "queries": list(query)})[:16]
    table = run_baseline(list(query), config, artifact_dir(home, "model", model), artifact_dir(home, "latents", latents),
                         artifact_dir(home, "world", world), out_dir, codec_dir=artifact_dir(home, "codec", codec),
                         home=home, overwrite=overwrite)
    cols = ["rank", "train_id", "artist", "score"]
    tops = {qid: g.head(top)[cols].to_dict(orient="records") for qid, g in table.groupby("query_id", sort=False)}
    if json:
        print_json({"out_dir": str(out_dir), "method": method, "top": tops})
        return
    for qid, rows in tops.items():
        ranking = ", ".join(f"{r['rank']}. {r['train_id']} ({r['artist']}) {r['score']:.3g}" for r in rows)
        console.print(f"[bold]{qid}[/] ({method}): {ranking}")
    console.print(f"scores written to {out_dir / 'scores.parquet'}")


def register(app: typer.Typer) -> None:
    """Add `songtrace baseline`."""
    app.command("baseline")(baseline)
