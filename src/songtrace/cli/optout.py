"""CLI: `songtrace optout` (forget an artist, ids or captions: an unlearned checkpoint) and `songtrace optout-eval`."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any

import typer

from songtrace.cli.options import (
    CodecOption,
    EmbedderOption,
    HomeOption,
    JsonOption,
    LatentsOption,
    ModelOption,
    OptionalFisherOption,
    OptionalSeedOption,
    OptionalWorldOption,
    OutDirOption,
    OverwriteOption,
    SeedOption,
    artifact_dir,
    console,
    name_option,
    print_json,
)


def parse_settings(pairs: list[str], method_name: str, shortcuts: dict[str, Any]) -> dict[str, Any]:
    """`KEY=VALUE` pairs (values as JSON where they parse, else strings; dotted keys nest) plus shortcuts, as method settings."""
    from songtrace.errors import SongtraceError
    from songtrace.optout.methods import setting_path

    out: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        parts = path.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SongtraceError(f"--set {path}: {part} is not a group of settings")
        node[parts[-1]] = value

    for pair in pairs:
        if "=" not in pair:
            raise SongtraceError(f"--set {pair!r}: expected KEY=VALUE (e.g. --set lr=1e-4)")
        key, raw = pair.split("=", 1)
        try:
            value = jsonlib.loads(raw)
        except ValueError:
            value = raw
        put(key.strip(), value)
    for name, value in shortcuts.items():
        if value is not None:
            put(setting_path(method_name, name), value)
    return out


def optout(
    artist: Annotated[str | None, typer.Option("--artist", help="Forget this artist's whole catalogue.")] = None,
    ids: Annotated[Path | None, typer.Option("--ids", help="Forget the track ids listed in this file (one per line).")] = None,
    caption_regex: Annotated[str | None, typer.Option("--caption-regex", help="Forget every training track whose caption matches.")] = None,
    method: Annotated[str, typer.Option("--method", help="ga, rl, graddiff, ewc, newton, salun, bounded or retrain.")] = "bounded",
    setting: Annotated[list[str] | None, typer.Option("--set", help="A method setting KEY=VALUE (repeat; e.g. --set lam=0.5).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="The method's step budget.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="The method's learning rate.")] = None,
    seed: OptionalSeedOption = None,
    model: ModelOption = "demo",
    latents: LatentsOption = "demo",
    world: OptionalWorldOption = None,
    fisher: OptionalFisherOption = None,
    name: Annotated[str | None, name_option("models")] = None,
    out: OutDirOption = None,
    list_methods: Annotated[bool, typer.Option("--list-methods", help="List the methods and exit.")] = False,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Make a model forget an artist, a list of ids or the tracks whose captions match; writes an unlearned checkpoint.

    The checkpoint (--out, else <home>/models/<name>, default <model>-<method>-<hash>) loads as --model
    in every other command. Bad input (an unknown artist, an empty forget set, the whole training set, ids the
    model never trained on, latents of another model) is refused before anything is written.
    Unset, --world is the world the latent cache records, --seed the method's own; --fisher is a fitted
    Fisher of this model for ewc and newton to reuse.

    Example: songtrace optout --artist "Kilfenora Road" --method bounded --model demo --name demo-no-kilfenora
    """
    from songtrace.artifacts import hash_json
    from songtrace.home import resolve_home
    from songtrace.optout import ForgetSpec, available_methods, method_config, read_ids_file
    from songtrace.optout import optout as run_optout

    if list_methods:
        methods = available_methods()
        if json:
            print_json(methods)
        else:
            for m, summary in methods.items():
                console.print(f"[bold]{m}[/]: {summary}")
        return
    spec = ForgetSpec(artist=artist, ids=read_ids_file(ids) if ids is not None else None, caption_regex=caption_regex,
                      ids_source=str(ids) if ids is not None else "")
    settings = parse_settings(setting or [], method, {"steps": steps, "lr": lr, "seed": seed})
    method_config(method, settings)  # refuse bad settings before anything is resolved or written
    model_dir = artifact_dir(home, "model", model)
    if out is None:
        label = name or f"{Path(model).name}-{method}-{hash_json({'spec': spec.to_dict(), 'settings': settings})[:8]}"
        out = resolve_home(home) / "models" / label
    result = run_optout(model_dir, artifact_dir(home, "latents", latents), spec, method, out, settings=settings, home=home,
                        world_dir=artifact_dir(home, "world", world) if world else None,
                        fisher_dir=artifact_dir(home, "fisher", fisher) if fisher else None, overwrite=overwrite)
    record = result.record
    summary = {"checkpoint": str(result.out_dir), "method": method, "settings": record["config"]["settings"],
               "forget": record["forget"], "original_model": record["original_model"], "seconds": record["seconds"],
               "identity": record["content_hash"], "stop_reason": record["method_log"].get("stop_reason")}
    if json:
        print_json(summary)
        return
    f = record["forget"]
    console.print(f"forgot {f['n_forget']} tracks ({', '.join(f'{a} ×{n}' for a, n in f['artists'].items())}), kept {f['n_retain']}; "
                  f"{method} took {record['seconds']:.1f} s")
    console.print(f"unlearned checkpoint written to {result.out_dir} (use it as --model {result.out_dir})")


def optout_eval(
    unlearned: Annotated[str, typer.Argument(help="The unlearned checkpoint (name under <home>/models, or a directory).")],
    original: Annotated[str, typer.Option("--original", help="The model it was unlearned from (name under <home>/models or a path).")
                        ] = "demo",
    retrained: Annotated[str | None, typer.Option("--retrained", help="The same recipe retrained without the forget set "
                                                                      "(`songtrace optout --method retrain`).")] = None,
    latents: LatentsOption = "demo",
    codec: CodecOption = "demo",
    world: OptionalWorldOption = None,
    embedder: EmbedderOption = "auto",
    timesteps: Annotated[int, typer.Option("--timesteps", help="Timesteps T per track of the fixed loss plan.")] = 32,
    prompts: Annotated[int, typer.Option("--prompts", help="Prompts of each kind (captions, naming, style, retain).")] = 4,
    generations: Annotated[int, typer.Option("--generations", help="Generations (seeds) per prompt.")] = 1,
    sampler_steps: Annotated[int, typer.Option("--sampler-steps", help="Sampler steps per generation.")] = 25,
    credit_queries: Annotated[int, typer.Option("--credit-queries", help="Forget-prompt generations attributed per model (0: skip).")] = 4,
    relearn_steps: Annotated[int, typer.Option("--relearn-steps", help="Fine-tuning steps on retain data (0: skip).")] = 20,
    seed: SeedOption = 0,
    out: OutDirOption = None,
    home: HomeOption = None,
    overwrite: OverwriteOption = False,
    json: JsonOption = False,
) -> None:
    """Evaluate an opt-out against the original (and the retrained) model: losses, membership, closeness, quality, credit.

    Writes eval.json and figures.parquet to --out (default <checkpoint>/eval) and prints the table,
    with each figure's gap to the retrained model when --retrained is given. Unset, --world is the world
    the latent cache records.

    Example: songtrace optout-eval demo-no-kilfenora --original demo --retrained demo-retrain-kilfenora --json
    """
    from songtrace.optout.evaluate import OptoutEvalConfig, evaluate_optout

    config = OptoutEvalConfig(loss_timesteps=timesteps, prompts_per_kind=prompts, generations_per_prompt=generations,
                              sampler_steps=sampler_steps, credit_queries=credit_queries, relearn_steps=relearn_steps, seed=seed)
    unlearned_dir = artifact_dir(home, "model", unlearned)
    result = evaluate_optout(
        unlearned_dir, artifact_dir(home, "model", original), artifact_dir(home, "latents", latents),
        artifact_dir(home, "codec", codec), embedder, config,
        retrained_dir=artifact_dir(home, "model", retrained) if retrained else None,
        world_dir=artifact_dir(home, "world", world) if world else None, home=home,
        out_dir=out or unlearned_dir / "eval", overwrite=overwrite,
    )
    if json:
        print_json(result)
        return
    _print_eval(result)
    console.print(f"evaluation written to {out or unlearned_dir / 'eval'}")


# the figures the table shows: (label, path in a model's figures, what is better)
SHOWN = (
    ("forget loss change", "loss.delta_forget", "like retrained"),
    ("retain loss change", "loss.delta_retain", "≈ 0"),
    ("held-out loss change", "loss.delta_heldout", "≈ 0"),
    ("membership AUC (forget vs unseen)", "membership.auc", "like retrained"),
    ("P(artist) on forget captions", "closeness.caption.artist_probability", "like retrained"),
    ("P(artist) on naming prompts", "closeness.naming.artist_probability", "like retrained"),
    ("P(artist) on style prompts", "closeness.style.artist_probability", "like retrained"),
    ("similarity to forget tracks (captions)", "closeness.caption.centroid_cosine", "like retrained"),
    ("FD retain prompts vs original", "quality.fd_vs_original", "low"),
    ("text-audio alignment (retain)", "quality.alignment", "high"),
    ("artist credit share", "credit.artist_share", "like retrained"),
    ("credit queries skipped (NaN generations)", "credit.skipped_nonfinite", "0"),
    ("forget loss regained by relearning", "relearn.regained", "like retrained"),
)


def _print_eval(result: dict[str, Any]) -> None:
    from rich.table import Table

    from songtrace.optout.figures import figure_at

    models = list(result["figures"])
    f = result["forget"]
    table = Table(title=f"opt-out of {', '.join(f['artists']) or str(f['n']) + ' tracks'} by {f['method']}", title_justify="left")
    table.add_column("figure")
    for m in models:
        table.add_column(m, justify="right")
    if "retrained" in models:
        table.add_column("gap to retrain", justify="right")
    table.add_column("better")
    for label, path, better in SHOWN:
        values = [figure_at(result["figures"][m], path) for m in models]
        if all(v is None for v in values):
            continue
        cells = ["—" if v is None else f"{v:.4g}" for v in values]
        if "retrained" in models:
            gap = result["gaps"].get("unlearned", {}).get(path)
            cells.append("—" if gap is None else f"{gap:+.4g}")
        table.add_row(label, *cells, better)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `optout` and `optout-eval` to the songtrace app."""
    app.command("optout")(optout)
    app.command("optout-eval")(optout_eval)
