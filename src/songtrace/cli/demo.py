"""`songtrace demo`: the whole offline pipeline on the demo world, timed stage by stage.

world -> codec -> latents -> songclap embedder -> DiT -> generations -> conditioning check ->
Fisher -> attribution of a generated track. Every stage is the same library call a user makes; each
skips when its artifact is already there with the same config, so a rerun is quick and an
interrupted demo resumes. Writes `<home>/demo/summary.json` with the figures of each stage.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from songtrace.artifacts import StageConfig, check_positive, read_json, write_json
from songtrace.cli.options import HomeOption, JsonOption, SeedOption, console, print_json
from songtrace.home import resolve_home, stage_dir
from songtrace.progress import progress


@dataclasses.dataclass(frozen=True)
class DemoConfig(StageConfig):
    """Sizes of the demo; `quick()` gives a minute-long smoke version for tests."""

    tracks: int = 400
    seed: int = 0
    max_seconds: float = 12.0
    codec_steps: int | None = None  # None: the stage's default
    embedder_steps: int | None = None
    model_steps: int | None = None
    model_width: int | None = None
    model_depth: int | None = None
    generations_per_artist: int = 2
    sampler_steps: int = 50
    fisher_timesteps: int = 16
    attribute: bool = True

    def __post_init__(self) -> None:
        check_positive("tracks", self.tracks)
        check_positive("max_seconds", self.max_seconds)
        check_positive("generations_per_artist", self.generations_per_artist)

    @classmethod
    def quick(cls) -> DemoConfig:
        """A tiny demo (a dozen 1-2 s tracks, a few training steps) that runs in about a minute."""
        return cls(
            tracks=24, max_seconds=2.0, codec_steps=30, embedder_steps=20, model_steps=30,
            model_width=16, model_depth=2, generations_per_artist=1, sampler_steps=8, fisher_timesteps=2,
        )


class _Timer:
    """Collects the wall time of each stage for the summary."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        console.print(f"[bold]>>[/] {name}")
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        console.print(f"   {name} done in {self.seconds[name]:.1f} s")
        return out


def _overrides(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def artist_prompts(world_dir: Path) -> dict[str, str]:
    """One prompt per artist: the caption of its first training track (a real caption of its style)."""
    from songtrace.world import load_world

    manifest = load_world(world_dir).manifest
    train = manifest[manifest["split"] == "train"]
    return {artist: str(rows["caption"].iloc[0]) for artist, rows in train.groupby("artist", sort=True)}


def run_demo(config: DemoConfig, home: Path | None = None) -> dict[str, Any]:
    """Run every stage of the demo and return (and save) the summary."""
    from songtrace.codec import CodecConfig, encode_world, train_codec
    from songtrace.embedders import load_embedder
    from songtrace.embedders.songclap_train import config_for_world, train_songclap
    from songtrace.metrics.conditioning import conditioning_check
    from songtrace.model.generate import generate, save_generated
    from songtrace.model.train import TrainConfig, train_model
    from songtrace.world import WorldConfig, build_world, load_world

    home = resolve_home(home)
    world_dir = stage_dir(home, "worlds", "demo")
    codec_dir = stage_dir(home, "codecs", "demo")
    latents_dir = stage_dir(home, "latents", "demo")
    model_dir = stage_dir(home, "models", "demo")
    demo_dir = home / "demo"
    timer = _Timer()
    summary: dict[str, Any] = {"config": config.to_dict()}

    timer.run("world", lambda: build_world(
        WorldConfig(tracks=config.tracks, seed=config.seed, max_seconds=config.max_seconds), world_dir))
    world = load_world(world_dir)
    summary["world"] = {
        "tracks": len(world.manifest),
        "artists": int(world.manifest["artist"].nunique()),
        "short_fraction": float((world.manifest["duration"] < config.max_seconds / 3).mean()),
        "planted_versions": int((world.manifest["version_of"] != "").sum()),
    }

    songclap_cfg = config_for_world(world_dir, **_overrides(steps=config.embedder_steps, seed=config.seed))
    summary["songclap"] = timer.run(
        "songclap", lambda: train_songclap(songclap_cfg, world_dir, stage_dir(home, "embedders", "songclap")))

    codec_cfg = CodecConfig(**_overrides(steps=config.codec_steps, seed=config.seed))
    timer.run("codec", lambda: train_codec(codec_cfg, world_dir, codec_dir))
    summary["codec"] = read_json(codec_dir / "metrics.json")
    timer.run("encode", lambda: encode_world(world_dir, codec_dir, latents_dir))

    train_cfg = TrainConfig(**_overrides(steps=config.model_steps, seed=config.seed))
    dit_overrides = _overrides(width=config.model_width, depth=config.model_depth)
    timer.run("train", lambda: train_model(train_cfg, dit_overrides, latents_dir, model_dir))
    summary["model"] = read_json(model_dir / "metrics.json")

    prompts = artist_prompts(world_dir)
    gen_dir = demo_dir / "generations"
    generated: dict[str, list[np.ndarray]] = {}

    def _generate() -> None:
        jobs = [(i, artist, prompt, k) for i, (artist, prompt) in enumerate(sorted(prompts.items()))
                for k in range(config.generations_per_artist)]
        for i, artist, prompt, k in progress(jobs, total=len(jobs), desc="generating", unit="track"):
            seed = config.seed * 1000 + 10 * i + k
            track = generate(model_dir, codec_dir, prompt, seconds=config.max_seconds * 0.75, seed=seed,
                             steps=config.sampler_steps)
            save_generated(track, gen_dir / f"{artist.replace(' ', '_')}-{k}.wav")
            generated.setdefault(artist, []).append(track.wav)

    timer.run("generate", _generate)

    def _conditioning() -> dict[str, Any]:
        train = world.manifest[world.manifest["split"] == "train"]
        training = {a: [world.audio(i) for i in rows["id"]] for a, rows in train.groupby("artist")}
        return {name: conditioning_check(load_embedder(name, home=home), generated, training, world.sample_rate)
                for name in ("songclap", "dsp")}

    summary["conditioning"] = timer.run("conditioning", _conditioning)
    if config.attribute:
        summary["attribution"] = _attribution_stages(config, home, model_dir, latents_dir, gen_dir, timer)
    summary["stage_seconds"] = timer.seconds
    summary["total_seconds"] = round(sum(timer.seconds.values()), 2)
    demo_dir.mkdir(parents=True, exist_ok=True)
    write_json(demo_dir / "summary.json", summary)
    return summary


def _attribution_stages(config: DemoConfig, home: Path, model_dir: Path, latents_dir: Path, gen_dir: Path,
                        timer: _Timer) -> dict[str, Any]:
    """Fit the Fisher, then attribute one generated track and one training track (a self-influence check)."""
    from songtrace.attribution import AttributeConfig, FisherConfig, attribute, fit_fisher
    from songtrace.data.latents import LatentSet

    fisher_dir = stage_dir(home, "fisher", "demo")
    timer.run("fisher", lambda: fit_fisher(model_dir, latents_dir, FisherConfig(n_timesteps=config.fisher_timesteps,
                                                                                 seed=config.seed), fisher_dir))
    generated = sorted(gen_dir.glob("*.latent.safetensors"))[0]
    train_id = LatentSet.load(latents_dir).subset("train").ids[0]
    queries = [str(generated), f"train:{train_id}"]
    run = timer.run("attribute", lambda: attribute(queries, AttributeConfig(), model_dir, latents_dir, fisher_dir,
                                                   home / "demo" / "attribution", home=home))
    out: dict[str, Any] = {"out_dir": str(run.out_dir)}
    for result in run.results:
        top = result.top(5)
        out[result.query_id] = {
            "top5": top[["train_id", "artist", "score"]].to_dict("records"),
            "top_credit": result.credits.head(3).to_dict("records"),
        }
        if result.query_id == f"train:{train_id}":
            out["self_rank"] = int(result.table.set_index("train_id").loc[train_id, "rank"])
    return out


def register(app: typer.Typer) -> None:
    """Add `songtrace demo`."""

    @app.command("demo")
    def demo_cmd(
        home: HomeOption = None,
        quick: Annotated[bool, typer.Option("--quick", help="A tiny world and a few training steps (about a minute).")] = False,
        tracks: Annotated[int | None, typer.Option(help="Number of tracks in the demo world.")] = None,
        seed: SeedOption = 0,
        as_json: JsonOption = False,
    ) -> None:
        """Run the whole offline demo: world, codec, model, generations, conditioning check, attribution.

        Each stage skips when its artifact is already there with the same config, so a rerun is quick and an
        interrupted demo resumes. Writes <home>/demo/summary.json.

        Example: songtrace demo --quick --home /tmp/quick
        """
        config = DemoConfig.quick() if quick else DemoConfig()
        config = dataclasses.replace(config, seed=seed, **({} if tracks is None else {"tracks": tracks}))
        summary = run_demo(config, home)
        if as_json:
            print_json(summary)
        else:
            console.print(f"demo finished in {summary['total_seconds']:.0f} s; summary in {resolve_home(home) / 'demo' / 'summary.json'}")
