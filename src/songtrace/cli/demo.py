"""`songtrace demo`: the whole story on the offline demo world, timed stage by stage.

world -> songclap embedder -> codec -> latents -> DiT -> generations from prompts of every artist ->
conditioning check -> Fisher -> self-influence tuning (Table 1; saves the model's best configuration)
-> attribution of generations by unlearning (with that configuration) -> time-localised attribution
of one generation -> unlearning against the baselines (Figs. 1-2) -> one artist's opt-out and its
evaluation -> the HTML report. Every stage is the library call a user makes; each skips when its
artifact is already there with the same config, so a rerun is quick and an interrupted demo
resumes. Each stage's wall and CPU seconds and the load average go into `<home>/demo/summary.json`;
the command ends with the report's path and a short summary a person reads.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from songtrace.artifacts import StageConfig, check_choice, check_positive, read_json, write_json
from songtrace.cli.demo_clock import StageClock
from songtrace.cli.demo_summary import finite, human_summary
from songtrace.cli.options import HomeOption, JsonOption, SeedOption, console, print_json
from songtrace.errors import SongtraceError
from songtrace.home import resolve_home, stage_dir

OPTOUT_METHODS = ("bounded", "ga", "rl", "graddiff", "ewc", "newton", "salun")


@dataclasses.dataclass(frozen=True)
class DemoConfig(StageConfig):
    """Sizes of every stage of the demo; `quick()` is a few-minute tour of the same story.

    The defaults are sized to stay well under 30 minutes on a 2-core CPU (measured per stage in
    benchmarks/results/demo_pipeline.json): a 100-track world of tracks up to 8 s, a 64-wide 3-layer
    DiT trained 1500 steps (its generations still sit nearest their prompted artist's training
    tracks for 14 of 17 artists), a Fisher on 8 timesteps, scoring on T = 32 timesteps (CRN rank
    stability 0.87 in benchmarks/results/attribution_cost.json), a self-influence grid of about a dozen
    cells on 3 targets without FD, 4 generated + 4 planted comparison queries, and one bounded opt-out
    with its retrained gold standard. None for a stage's steps/sizes means that stage's own default.
    """

    tracks: int = 100
    seed: int = 0
    max_seconds: float = 8.0
    codec_steps: int | None = 2000
    embedder_steps: int | None = 600
    model_steps: int | None = 1500
    model_width: int | None = 64
    model_depth: int | None = 3
    generations_per_artist: int = 1
    generation_seconds: float = 6.0
    sampler_steps: int = 25
    fisher_timesteps: int = 8
    # self-influence (Table 1): targets (capped at one per 30 training tracks), the grid, T of scoring
    si_targets: int = 3
    si_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # relative update sizes; below 1e-4 no target ranked itself first
    si_steps: tuple[int, ...] = (1, 2)
    si_groups: tuple[str, ...] = ("all", "to_kv", "cross_attn", "self_attn")
    si_masks: tuple[str, ...] = ("mixed", "none", "M_L", "both")
    si_score_timesteps: int = 8
    si_unlearn_timesteps: int = 64
    # attribution of generations (unlearning), localisation of one of them, and the baselines
    attribute_queries: int = 3
    score_timesteps: int = 32
    localise_window: float = 2.0
    compare_queries: int = 4
    compare_methods: tuple[str, ...] = ("unlearning", "embedding", "version", "activations", "representer")
    compare_planted: int = 2
    # one artist's opt-out (bounded unlearning at a learning rate that stops at the null loss in ~45 steps
    # instead of overshooting it in 10 as the default 3e-4 does on this model) and its evaluation against retraining
    optout_method: str = "bounded"
    optout_lr: float = 3e-5
    optout_retrain: bool = True
    optout_prompts: int = 2
    optout_credit_queries: int = 2
    optout_relearn_steps: int = 10
    report_top: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_seconds", "generation_seconds", "localise_window", "optout_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SongtraceError(f"demo {name} must be a finite number > 0, got {value!r}")
        for name in ("tracks", "generations_per_artist", "sampler_steps", "fisher_timesteps", "si_targets", "si_score_timesteps",
                     "si_unlearn_timesteps", "attribute_queries", "score_timesteps", "compare_queries", "optout_prompts", "report_top"):
            check_positive(name, getattr(self, name))
        for name in ("codec_steps", "embedder_steps", "model_steps", "model_width", "model_depth"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        for name in ("compare_planted", "optout_credit_queries", "optout_relearn_steps"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.generation_seconds > self.max_seconds:
            raise SongtraceError(f"demo generation_seconds ({self.generation_seconds}) must not exceed max_seconds ({self.max_seconds})")
        if not self.si_lrs or any(not (math.isfinite(x) and x > 0) for x in self.si_lrs):
            raise SongtraceError(f"demo si_lrs must be positive finite numbers, got {self.si_lrs}")
        if not (self.si_steps and self.si_groups and self.si_masks and self.compare_methods):
            raise SongtraceError("demo si_steps, si_groups, si_masks and compare_methods must not be empty")
        if "unlearning" not in self.compare_methods:
            raise SongtraceError(f"demo compare_methods must include unlearning (the reference), got {list(self.compare_methods)}")
        check_choice("opt-out method", self.optout_method, OPTOUT_METHODS)

    @classmethod
    def quick(cls) -> DemoConfig:
        """A tiny demo (two dozen 1-2 s tracks, a few training steps, every stage) that runs in a few minutes."""
        return cls(
            tracks=24, max_seconds=2.0, codec_steps=30, embedder_steps=20, model_steps=30, model_width=16, model_depth=2,
            generation_seconds=1.5, sampler_steps=8, fisher_timesteps=2, si_targets=2, si_lrs=(1e-5, 1e-3), si_steps=(1,),
            si_groups=("all", "to_kv"), si_masks=("mixed", "none"), si_score_timesteps=2, si_unlearn_timesteps=8, attribute_queries=2,
            score_timesteps=4, localise_window=0.5, compare_queries=2, compare_methods=("unlearning", "embedding", "version"),
            compare_planted=1, optout_lr=3e-4, optout_prompts=1, optout_credit_queries=1, optout_relearn_steps=2, report_top=5,
        )


def _overrides(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


CONFIG_RECORD = "demo_config.json"


def check_demo_home(record: Path, config: DemoConfig) -> None:
    """Refuse a home that holds a demo of other sizes (its artifacts would be refused stage by stage); else record this config."""
    if record.exists():
        previous = read_json(record)
        if previous != config.to_dict():
            which = "--quick" if previous == DemoConfig.quick().to_dict() else "other sizes"
            raise SongtraceError(f"{record.parents[1]} holds a demo made with {which}; run this one with another --home "
                                 f"(or delete {record.parents[1]})")
        return
    write_json(record, config.to_dict())


def run_demo(config: DemoConfig, home: Path | str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run every stage of the demo and return (and save in `<home>/demo/summary.json`) the summary."""
    from songtrace.cli import demo_story
    from songtrace.cli.demo_story import _complete
    from songtrace.codec import CodecConfig, encode_world, train_codec
    from songtrace.embedders.songclap_train import config_for_world, train_songclap
    from songtrace.model.train import TrainConfig, train_model
    from songtrace.world import WorldConfig, build_world, load_world

    home = resolve_home(home)
    dirs = demo_story.DemoDirs.of(home)
    check_demo_home(dirs.demo / CONFIG_RECORD, config)
    clock = StageClock(quiet=quiet)
    summary: dict[str, Any] = {"config": config.to_dict(), "home": str(home)}

    clock.run("world", lambda: build_world(WorldConfig(tracks=config.tracks, seed=config.seed, max_seconds=config.max_seconds),
                                           dirs.world, workers=2), done=lambda: _complete(dirs.world))
    world = load_world(dirs.world)
    m = world.manifest
    summary["world"] = {"tracks": len(m), "train_tracks": int((m["split"] == "train").sum()), "artists": int(m["artist"].nunique()),
                        "short_fraction": float((m["duration"] < config.max_seconds / 3).mean()),
                        "planted_versions": int((m["version_of"] != "").sum())}

    songclap_dir = stage_dir(home, "embedders", "songclap")
    songclap_cfg = config_for_world(dirs.world, **_overrides(steps=config.embedder_steps, seed=config.seed))
    summary["songclap"] = clock.run("songclap", lambda: train_songclap(songclap_cfg, dirs.world, songclap_dir),
                                    done=lambda: _complete(songclap_dir))

    codec_cfg = CodecConfig(**_overrides(steps=config.codec_steps, seed=config.seed))
    clock.run("codec", lambda: train_codec(codec_cfg, dirs.world, dirs.codec), done=lambda: _complete(dirs.codec))
    summary["codec"] = read_json(dirs.codec / "metrics.json")
    clock.run("encode", lambda: encode_world(dirs.world, dirs.codec, dirs.latents), done=lambda: _complete(dirs.latents))

    train_cfg = TrainConfig(**_overrides(steps=config.model_steps, seed=config.seed))
    dit_overrides = _overrides(width=config.model_width, depth=config.model_depth)
    clock.run("train", lambda: train_model(train_cfg, dit_overrides, dirs.latents, dirs.model), done=lambda: _complete(dirs.model))
    model_metrics = read_json(dirs.model / "metrics.json")
    summary["model"] = {k: v for k, v in model_metrics.items() if not k.endswith("_curve")}

    demo_story.run_story(config, home, dirs, world, clock, summary)
    summary["stages"] = clock.table()
    summary["stage_order"] = list(clock.stages)
    summary["totals"] = clock.totals()
    summary = finite(summary)
    summary["human_summary"] = human_summary(summary)
    write_json(dirs.demo / "summary.json", summary)
    return summary


def register(app: typer.Typer) -> None:
    """Add `songtrace demo`."""

    @app.command("demo")
    def demo_cmd(
        home: HomeOption = None,
        quick: Annotated[bool, typer.Option("--quick", help="A tiny world and a few training steps: every stage, a few minutes.")] = False,
        tracks: Annotated[int | None, typer.Option(help="Number of tracks in the demo world.")] = None,
        seed: SeedOption = 0,
        as_json: JsonOption = False,
    ) -> None:
        """Run the whole story on the offline demo world: build, train, generate, tune, attribute, compare, opt out, report.

        World, embedder, codec, latents and DiT; tracks generated from prompts of every artist; self-influence tuning
        (the best configuration is saved for the model, and attribution uses it); attribution of generations by
        unlearning, one localised in time; the baselines; one artist's opt-out with its evaluation; and the HTML report.
        Each stage skips when its artifact is already there with the same config, so a rerun is quick and an
        interrupted demo resumes. Ends with the report's path and a short summary; <home>/demo/summary.json has
        every figure and each stage's wall and CPU seconds and load. About 18 minutes on the shared 2-core machine.

        Example: songtrace demo --quick --home /tmp/quick
        """
        config = DemoConfig.quick() if quick else DemoConfig()
        config = dataclasses.replace(config, seed=seed, **({} if tracks is None else {"tracks": tracks}))
        summary = run_demo(config, home)
        if as_json:
            print_json(summary)
            return
        for line in summary["human_summary"]:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
