"""CLI: `songtrace baseline` (attribute queries with one non-counterfactual method: embedding, version, activations,
representer, gradient)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from songtrace.cli.options import HomeOption, JsonOption, OverwriteOption, console, print_json


def baseline(
    method: Annotated[str, typer.Option("--method", help="embedding (CLAP-like), version (CLEWS-like), activations (LPIPS-like), "
                                        "representer (RPS) or gradient (TRAK-like).")],
    query: Annotated[list[str], typer.Option("--query", "-q", help="train:ID, PATH.latent.safetensors, PATH.wav or prompt:TEXT@SEED; "
                                             "repeat for several.")],
    option: Annotated[list[str] | None, typer.Option("--option", help="Method option KEY=VALUE (JSON value), e.g. dim=512.")] = None,
    top: Annotated[int, typer.Option("--top", help="Rows of the ranking to print.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: <home>/runs/baseline/<hash>).")] = None,
    embedder: Annotated[str, typer.Option("--embedder", help="For --method embedding: auto, dsp, songclap, clap or a path.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the white-box methods' noise and projections.")] = 0,
    model: Annotated[str, typer.Option("--model", help="Model name under <home>/models, or a directory.")] = "demo",
    codec: Annotated[str, typer.Option("--codec", help="Codec name or directory (to decode latent queries to audio).")] = "demo",
    latents: Annotated[str, typer.Option("--latents", help="Latent cache name under <home>/latents, or a directory.")] = "demo",
    world: Annotated[str, typer.Option("--world", help="World name under <home>/worlds, or a directory (the audio).")] = "demo",
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Attribute queries to the training set with one baseline method (seed 002, section 3.3)."""
    from songtrace.artifacts import hash_json
    from songtrace.baselines.run import BaselineConfig, run_baseline
    from songtrace.cli.compare import parse_options
    from songtrace.home import resolve_artifact, resolve_home

    options = parse_options([f"{method}.{o}" for o in option or []]).get(method, {})
    config = BaselineConfig(method=method, options=options, embedder=embedder, seed=seed)
    out_dir = out or resolve_home(home) / "runs" / "baseline" / hash_json({"config": config.to_dict(), "queries": list(query)})[:16]
    table = run_baseline(list(query), config, resolve_artifact(home, "models", model), resolve_artifact(home, "latents", latents),
                         resolve_artifact(home, "worlds", world), out_dir, codec_dir=resolve_artifact(home, "codecs", codec),
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
