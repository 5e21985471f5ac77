"""The demo's story after training: generate, check conditioning, tune, attribute, localise, compare, opt out, report.

Each stage calls the library function a user calls (the same as its command) on the demo's
artifacts and fixed output directories under `<home>/demo/runs/`, so it skips when its run is
finished with the same config and resumes when it is not. The two stages that have no artifact of
their own (generations, the conditioning check) keep a record keyed by their inputs in
`<home>/demo/` and skip on a match too. Attribution, localisation and the comparison start from
the best configuration self-influence saved for the model (`attribution.best_config`), exactly as
`songtrace attribute` does in the same home.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from songtrace.artifacts import artifact_hash, hash_json, read_json, write_json
from songtrace.cli.demo_clock import StageClock
from songtrace.home import stage_dir

if TYPE_CHECKING:
    from songtrace.cli.demo import DemoConfig


@dataclasses.dataclass(frozen=True)
class DemoDirs:
    """Where every artifact of the demo lives under its home."""

    home: Path
    world: Path
    codec: Path
    latents: Path
    model: Path
    fisher: Path
    demo: Path

    @classmethod
    def of(cls, home: Path) -> DemoDirs:
        return cls(home, stage_dir(home, "worlds", "demo"), stage_dir(home, "codecs", "demo"), stage_dir(home, "latents", "demo"),
                   stage_dir(home, "models", "demo"), stage_dir(home, "fisher", "demo"), home / "demo")

    def run(self, name: str) -> Path:
        """The demo's output directory of a run (attribute, localise, selfinfluence, compare, optout-eval)."""
        return self.demo / "runs" / name

    @property
    def generations(self) -> Path:
        return self.demo / "generations"

    @property
    def report(self) -> Path:
        return self.demo / "report.html"


def _complete(path: Path) -> bool:
    return (path / "config.json").exists() and bool(read_json(path / "config.json").get("complete"))


def _recorded(path: Path, key: str) -> Any:
    """The result a demo-level stage recorded at `path` under this input key, or None."""
    if path.exists():
        record = read_json(path)
        if record.get("key") == key:
            return record["result"]
    return None


def generation_name(artist: str, k: int) -> str:
    """The file stem of an artist's k-th generation."""
    return f"{artist.replace(' ', '_').replace('/', '_')}-{k}"


def artist_prompts(world) -> dict[str, str]:
    """One prompt per artist: the caption of its first training track (a real caption of its style)."""
    train = world.manifest[world.manifest["split"] == "train"]
    return {artist: str(rows["caption"].iloc[0]) for artist, rows in train.groupby("artist", sort=True)}


def featured_artists(world, n: int) -> list[str]:
    """The n artists with the largest training catalogues (ties by name): the generations the demo attributes."""
    train = world.manifest[world.manifest["split"] == "train"]
    sizes = train.groupby("artist").size()
    return sorted(sizes.index, key=lambda a: (-int(sizes[a]), a))[:n]


# --------------------------------------------------------------------------- stages


def generate_tracks(config: DemoConfig, dirs: DemoDirs, world) -> dict[str, Any]:
    """One generation per artist (and per `generations_per_artist`) from its prompt; a track already saved for this model is kept."""
    from songtrace.codec import load_codec
    from songtrace.model.generate import generate, save_generated
    from songtrace.model.registry import load_task
    from songtrace.progress import progress

    task, codec = load_task(dirs.model), load_codec(dirs.codec)
    identity = task.identity()
    jobs = [(i, artist, prompt, k) for i, (artist, prompt) in enumerate(sorted(artist_prompts(world).items()))
            for k in range(config.generations_per_artist)]
    out: dict[str, Any] = {}
    reused = 0
    for i, artist, prompt, k in progress(jobs, total=len(jobs), desc="generating", unit="track"):
        seed = config.seed * 1000 + 10 * i + k
        wav = dirs.generations / f"{generation_name(artist, k)}.wav"
        record_path = wav.with_suffix(".json")
        record = read_json(record_path) if record_path.exists() else {}
        same = (record.get("model_hash") == identity and record.get("prompt") == prompt and record.get("seed") == seed
                and record.get("seconds") == config.generation_seconds and record.get("sampler", {}).get("steps") == config.sampler_steps)
        if not (same and wav.exists() and wav.with_suffix(".latent.safetensors").exists()):
            track = generate(task, codec, prompt, seconds=config.generation_seconds, seed=seed, steps=config.sampler_steps)
            save_generated(track, wav)
        else:
            reused += 1
        out.setdefault(artist, []).append({"query_id": wav.stem, "prompt": prompt, "seed": seed, "wav": str(wav),
                                           "latent": str(wav.with_suffix(".latent.safetensors"))})
    return {"tracks": out, "n": len(jobs), "reused": reused, "seconds": config.generation_seconds, "dir": str(dirs.generations)}


def conditioning(dirs: DemoDirs, world, generated: dict[str, Any]) -> dict[str, Any]:
    """Do generations sit nearest their prompted artist's training tracks? (songclap and dsp judge; recorded by input hash.)"""
    import soundfile as sf

    from songtrace.embedders import load_embedder
    from songtrace.metrics.conditioning import conditioning_check

    key = hash_json({"world": world.content_hash, "songclap": artifact_hash(stage_dir(dirs.home, "embedders", "songclap")),
                     "tracks": {a: [read_json(Path(t["wav"]).with_suffix(".json")) for t in ts] for a, ts in generated["tracks"].items()}})
    path = dirs.demo / "conditioning.json"
    cached = _recorded(path, key)
    if cached is not None:
        return cached
    audio: dict[str, list[Any]] = {}
    rate = world.sample_rate
    for artist, tracks in generated["tracks"].items():
        for t in tracks:
            wav, rate = sf.read(t["wav"], dtype="float32")
            audio.setdefault(artist, []).append(wav)
    train = world.manifest[world.manifest["split"] == "train"]
    training = {a: [world.audio(i) for i in rows["id"]] for a, rows in train.groupby("artist")}
    result = {name: conditioning_check(load_embedder(name, home=dirs.home), audio, training, world.sample_rate, rate)
              for name in ("songclap", "dsp")}
    write_json(path, {"key": key, "result": result})
    return result


def fit_demo_fisher(config: DemoConfig, dirs: DemoDirs) -> dict[str, Any]:
    """The diagonal Fisher over every weight (what self-influence, attribution and the comparison read)."""
    from songtrace.attribution import FisherConfig, fit_fisher

    fit_fisher(dirs.model, dirs.latents, FisherConfig(group="all", n_timesteps=config.fisher_timesteps, seed=config.seed), dirs.fisher)
    record = read_json(dirs.fisher / "config.json")
    return {k: record.get(k) for k in ("n_items", "n_params", "mean_f")}


def self_influence(config: DemoConfig, dirs: DemoDirs) -> dict[str, Any]:
    """Table 1's search on a small grid; saves the model's best configuration where `attribute` looks for it."""
    from songtrace.selfinfluence.inputs import selfinfluence_from_dirs
    from songtrace.selfinfluence.run import SelfInfluenceConfig

    si = SelfInfluenceConfig(targets=config.si_targets, stage_a_targets=config.si_targets, lrs=config.si_lrs, steps=config.si_steps,
                             groups=config.si_groups, masks=config.si_masks, score_timesteps=config.si_score_timesteps,
                             unlearn_timesteps=config.si_unlearn_timesteps, fd=False, seed=config.seed, embedder="songclap")
    result = selfinfluence_from_dirs(si, home=dirs.home, model=str(dirs.model), latents=str(dirs.latents), world=str(dirs.world),
                                     fisher=str(dirs.fisher), codec=str(dirs.codec), out_dir=dirs.run("selfinfluence"))
    best = result.best
    return {"out_dir": str(result.out_dir), "unlearn": best["unlearn"], "metrics": best.get("metrics", {}),
            "n_cells": len(result.grid), "n_targets": len(result.record.get("target_ids", [])),
            "best_config_path": result.record.get("best_config_path"), "version_recall": best.get("version_recall")}


def _tuned(dirs: DemoDirs, task: Any, config: DemoConfig) -> tuple[Any, str | None]:
    from songtrace.attribution.best_config import resolve_unlearn_config

    return resolve_unlearn_config(dirs.home, task, seed=config.seed)


def attribute_generations(config: DemoConfig, dirs: DemoDirs, queries: list[dict[str, Any]]) -> dict[str, Any]:
    """Attribute generated tracks by unlearning, with the self-influence best configuration of this model."""
    from songtrace.attribution.run import AttributeConfig, attribute
    from songtrace.attribution.score import ScoreConfig
    from songtrace.model.registry import load_task

    task = load_task(dirs.model)
    unlearn, source = _tuned(dirs, task, config)
    cfg = AttributeConfig(unlearn=unlearn, score=ScoreConfig(n_timesteps=config.score_timesteps, seed=config.seed))
    run = attribute([q["latent"] for q in queries], cfg, dirs.model, dirs.latents, dirs.fisher, dirs.run("attribute"), home=dirs.home,
                    codec_dir=dirs.codec, model=task)
    prompts = {q["query_id"]: q for q in queries}
    results = []
    for r in run.results:
        top = r.top(5)
        results.append({"query_id": r.query_id, "prompt": prompts.get(r.query_id, {}).get("prompt", ""),
                        "artist": prompts.get(r.query_id, {}).get("artist", ""),
                        "top": top[["rank", "train_id", "artist", "title", "score"]].to_dict("records"),
                        "credits": r.credits.head(3)[["artist", "share"]].to_dict("records")})
    return {"out_dir": str(run.out_dir), "unlearn": unlearn.to_dict(), "config_source": source, "queries": results}


def localise_generation(config: DemoConfig, dirs: DemoDirs, query: dict[str, Any]) -> dict[str, Any]:
    """Which training tracks explain which moments of one generation (windows of `localise_window` seconds)."""
    from songtrace.attribution.localise import LocaliseConfig, localise, window_summary
    from songtrace.attribution.score import ScoreConfig
    from songtrace.model.registry import load_task

    task = load_task(dirs.model)
    unlearn, source = _tuned(dirs, task, config)
    cfg = LocaliseConfig(window_seconds=config.localise_window, unlearn=unlearn,
                         score=ScoreConfig(n_timesteps=config.score_timesteps, seed=config.seed))
    run = localise([query["latent"]], cfg, dirs.model, dirs.latents, dirs.fisher, dirs.run("localise"), home=dirs.home,
                   codec_dir=dirs.codec, model=task)
    whole = run.attribution.results[0]
    return {"out_dir": str(run.out_dir), "query_id": whole.query_id, "prompt": query["prompt"], "artist": query["artist"],
            "config_source": source, "windows": window_summary(run.windows, 1),
            "top": whole.top(5)[["rank", "train_id", "artist", "title", "score"]].to_dict("records"),
            "credits": whole.credits.head(3)[["artist", "share"]].to_dict("records")}


def compare_methods(config: DemoConfig, dirs: DemoDirs) -> dict[str, Any]:
    """Unlearning (tuned) against the baselines on generated and planted-ground-truth queries (Figs. 1-2)."""
    from songtrace.attribution.score import ScoreConfig
    from songtrace.compare.run import CompareConfig, run_compare
    from songtrace.model.registry import load_task

    task = load_task(dirs.model)
    unlearn, _ = _tuned(dirs, task, config)
    cfg = CompareConfig(queries=config.compare_queries, methods=config.compare_methods, seed=config.seed, embedder="songclap",
                        sampler_steps=config.sampler_steps, planted_versions=config.compare_planted, planted_artists=config.compare_planted,
                        unlearn=unlearn, score=ScoreConfig(n_timesteps=config.score_timesteps, seed=config.seed))
    out = dirs.run("compare")
    summary = run_compare(cfg, dirs.model, dirs.codec, dirs.latents, dirs.world, out, fisher_dir=dirs.fisher, home=dirs.home, model=task)
    keep = ("queries", "n_items", "pearson_with_reference", "spearman_with_reference", "planted", "seconds_per_query", "prepare_seconds")
    return {"out_dir": str(out), **{k: summary.get(k) for k in keep}}


def opt_out(config: DemoConfig, dirs: DemoDirs, artist: str) -> dict[str, Any]:
    """`artist` opts out: the unlearned checkpoint (and, with optout_retrain, the retrained gold standard)."""
    from songtrace.optout import ForgetSpec, optout
    from songtrace.optout.methods import common_settings

    spec = ForgetSpec(artist=artist)
    settings = common_settings(config.optout_method, seed=config.seed, lr=config.optout_lr)
    result = optout(dirs.model, dirs.latents, spec, config.optout_method, stage_dir(dirs.home, "models", "demo-optout"),
                    settings=settings, home=dirs.home, world_dir=dirs.world)
    out = {"artist": artist, "method": config.optout_method, "checkpoint": str(result.out_dir), "forget": result.record["forget"],
           "seconds": result.record.get("seconds"), "stop_reason": result.record.get("method_log", {}).get("stop_reason"),
           "retrained": None}
    if config.optout_retrain:
        retrained = optout(dirs.model, dirs.latents, spec, "retrain", stage_dir(dirs.home, "models", "demo-retrain"), home=dirs.home,
                           world_dir=dirs.world)
        out["retrained"] = str(retrained.out_dir)
    return out


def optout_evaluation(config: DemoConfig, dirs: DemoDirs, opted: dict[str, Any]) -> dict[str, Any]:
    """Does the opted-out model behave like one never trained on the artist, and is the rest intact? (`optout-eval`)"""
    from songtrace.optout.evaluate import OptoutEvalConfig, evaluate_optout

    cfg = OptoutEvalConfig(loss_timesteps=16, prompts_per_kind=config.optout_prompts, sampler_steps=config.sampler_steps,
                           credit_queries=config.optout_credit_queries, relearn_steps=config.optout_relearn_steps, seed=config.seed)
    out = dirs.run("optout-eval")
    result = evaluate_optout(opted["checkpoint"], dirs.model, dirs.latents, dirs.codec, "songclap", cfg, retrained_dir=opted["retrained"],
                             world_dir=dirs.world, home=dirs.home, out_dir=out)
    return {"out_dir": str(out), "figures": headline_figures(result), "forget": result.get("forget", {})}


# the opt-out figures the summary names: label, path in a model's figures
HEADLINE = (
    ("forget loss change", "loss.delta_forget"),
    ("retain loss change", "loss.delta_retain"),
    ("held-out loss change", "loss.delta_heldout"),
    ("membership AUC", "membership.auc"),
    ("P(artist) on its captions", "closeness.caption.artist_probability"),
    ("artist credit share", "credit.artist_share"),
    ("FD retain prompts vs original", "quality.fd_vs_original"),
)


def _figure(figures: dict[str, Any], path: str) -> float | None:
    from songtrace.optout.figures import figure_at

    node = figure_at(figures, path)
    return float(node) if isinstance(node, int | float) and math.isfinite(node) else None


def headline_figures(result: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """model -> {figure path: value} for the HEADLINE figures of an optout-eval result."""
    return {model: {path: _figure(figs, path) for _, path in HEADLINE} for model, figs in result.get("figures", {}).items()}


def write_report(config: DemoConfig, dirs: DemoDirs, runs: list[str]) -> dict[str, Any]:
    """The HTML report over every run of the story (rebuilt only when one of the runs changed)."""
    from songtrace.report import build_report

    key = hash_json({"runs": {r: read_json(Path(r) / "config.json").get("content_hash") for r in runs}, "top": config.report_top})
    path = dirs.demo / "report.json"
    cached = _recorded(path, key)
    if cached is not None and Path(cached["report"]).exists():
        return cached
    report = build_report(runs, dirs.report, home=dirs.home, top_k=config.report_top, title="songtrace demo: who made this music?")
    result = {"report": str(report.path), "assets": str(report.assets) if report.assets else None, **report.summary}
    write_json(path, {"key": key, "result": result})
    return result


# --------------------------------------------------------------------------- the story


def run_story(config: DemoConfig, home: Path, dirs: DemoDirs, world, clock: StageClock, summary: dict[str, Any]) -> None:
    """Every stage after training, in order, each timed by `clock`; fills `summary`."""
    gen_done = all((dirs.generations / f"{generation_name(a, k)}.wav").exists()
                   for a in artist_prompts(world) for k in range(config.generations_per_artist))
    generated = clock.run("generate", lambda: generate_tracks(config, dirs, world), done=lambda: gen_done)
    summary["generations"] = {k: v for k, v in generated.items() if k != "tracks"}
    summary["conditioning"] = clock.run("conditioning", lambda: conditioning(dirs, world, generated),
                                        done=lambda: (dirs.demo / "conditioning.json").exists())
    summary["fisher"] = clock.run("fisher", lambda: fit_demo_fisher(config, dirs), done=lambda: _complete(dirs.fisher))
    summary["selfinfluence"] = clock.run("selfinfluence", lambda: self_influence(config, dirs),
                                         done=lambda: _complete(dirs.run("selfinfluence")))

    featured = featured_artists(world, config.attribute_queries + 1)
    pick = [{**generated["tracks"][a][0], "artist": a} for a in featured]
    summary["localise"] = clock.run("localise", lambda: localise_generation(config, dirs, pick[0]),
                                    done=lambda: _complete(dirs.run("localise")))
    summary["attribute"] = clock.run("attribute", lambda: attribute_generations(config, dirs, pick[1:]),
                                     done=lambda: _complete(dirs.run("attribute")))
    summary["compare"] = clock.run("compare", lambda: compare_methods(config, dirs), done=lambda: _complete(dirs.run("compare")))
    opted = clock.run("optout", lambda: opt_out(config, dirs, featured[0]),
                      done=lambda: _complete(stage_dir(home, "models", "demo-optout")))
    summary["optout"] = opted
    summary["optout_eval"] = clock.run("optout_eval", lambda: optout_evaluation(config, dirs, opted),
                                       done=lambda: _complete(dirs.run("optout-eval")))
    runs = [summary[k]["out_dir"] for k in ("localise", "attribute", "compare", "selfinfluence", "optout_eval")]
    summary["report"] = clock.run("report", lambda: write_report(config, dirs, runs), done=lambda: (dirs.demo / "report.json").exists())
