"""The opt-out stage: forget set -> unlearning method -> an unlearned checkpoint every other command loads as a model.

`optout(model_dir, latents_dir, spec, method, settings, out_dir)` checks everything first (the
model belongs to the data, the forget set is valid, the method and its settings are), so bad input
writes nothing. It then writes into `out_dir`:

- `forget.parquet`: every training item of the model with `set` = forget | retain;
- `model.safetensors`: the unlearned weights (every parameter);
- `config.json`: the `OptoutConfig` (method, its settings, the forget spec), the inputs (the
  original model's identity, the latents' hash, the forget set's hash), the forget set's ids, the
  model's `ModelConfig` record under `model` (so `load_model`/`load_task` load it), the original
  and parent models' identities, everything forgotten so far (`forgotten_ids`, for sequential
  opt-outs), the method's log and the seconds (wall and this process's CPU) it took.

An interrupted iterative method resumes from `out_dir/state/`; retraining resumes its own run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from songtrace.artifacts import (
    CONFIG_FILE,
    StageConfig,
    abandon_stage,
    begin_stage,
    finish_stage,
    hash_tensors,
    read_json,
    save_safetensors,
    write_json,
    write_parquet,
)
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import MODEL_FILE, architecture_record, build_model, load_task, model_record
from songtrace.model.task import check_latents_fit
from songtrace.optout.forget import ForgetSet, ForgetSpec, select_forget, world_captions
from songtrace.optout.loop import UnlearnSetup
from songtrace.optout.methods import METHODS, method, method_config

FORGET_FILE = "forget.parquet"
ELAPSED_FILE = Path("state") / "elapsed.json"


@dataclasses.dataclass(frozen=True)
class OptoutConfig(StageConfig):
    """One opt-out: the method, all its settings (defaults filled in), and what to forget."""

    method: str = "ga"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    forget: ForgetSpec | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forget is None:
            raise SongtraceError("an opt-out needs a forget set (--artist, --ids or --caption-regex)")
        object.__setattr__(self, "settings", method_config(self.method, self.settings).to_dict())

    @property
    def method_config(self) -> StageConfig:
        """The method's own config dataclass."""
        return method_config(self.method, self.settings)


@dataclasses.dataclass
class OptoutResult:
    """A finished (or, with `max_steps`, paused) opt-out: its directory, record and forget set."""

    out_dir: Path
    record: dict[str, Any]
    finished: bool


def check_model_data(record: dict[str, Any], model_dir: Path, latents: LatentSet, latents_dir: Path) -> None:
    """Refuse a latent cache other than the one the model (or the model it was derived from) was trained on."""
    trained_on = record.get("inputs", {}).get("latents")
    here = latents.content_hash()
    if trained_on and trained_on != here:
        raise SongtraceError(f"{model_dir} was not trained on {latents_dir} (its training latents {trained_on[:12]}, "
                             f"these {here[:12]}); pass the latent cache the model was trained on (--latents)")


def _take(data: LatentSet, ids: tuple[str, ...]) -> LatentSet:
    row = {item: i for i, item in enumerate(data.ids)}
    return data.take([row[i] for i in ids])


def prepare(
    model_dir: str | Path,
    latents_dir: str | Path,
    config: OptoutConfig,
    home: str | Path | None = None,
    world_dir: str | Path | None = None,
    fisher_dir: str | Path | None = None,
) -> tuple[UnlearnSetup, ForgetSet, dict[str, Any]]:
    """Load and check everything an opt-out needs (nothing is written): the setup, the forget set, the model's record."""
    model_dir, latents_dir = Path(model_dir), Path(latents_dir)
    record = model_record(model_dir)
    task = load_task(model_dir)
    latents = LatentSet.load(latents_dir)
    check_latents_fit(task, latents, latents_dir)
    check_model_data(record, model_dir, latents, latents_dir)
    assert config.forget is not None
    forgotten = tuple(record.get("forgotten_ids", ()))
    captions = world_captions(latents_dir, home, world_dir) if config.forget.caption_regex is not None else None
    forget_set = select_forget(latents, config.forget, captions, forgotten, source=str(latents_dir))
    training = latents.subset("train").without(forgotten) if forgotten else latents.subset("train")
    fisher = None
    if fisher_dir is not None:
        from songtrace.attribution.fisher import Fisher, check_inputs

        fisher = Fisher.load(fisher_dir)
        check_inputs(fisher, task.identity(), latents.content_hash(), source=f"the Fisher at {fisher_dir}")
    recipe = architecture_record(record)
    setup = UnlearnSetup(
        task=task,
        training=training,
        forget=_take(training, forget_set.forget_ids),
        retain=_take(training, forget_set.retain_ids),
        mask_retain=bool(recipe.get("train", {}).get("mask_padding", False)),
        fisher=fisher,
        untrained=lambda: build_model(recipe),
        model_dir=model_dir,
        latents_dir=latents_dir,
        exclude_ids=tuple(sorted(set(forgotten) | set(forget_set.forget_ids))),
    )
    return setup, forget_set, record


def optout(
    model_dir: str | Path,
    latents_dir: str | Path,
    spec: ForgetSpec,
    method_name: str,
    out_dir: str | Path,
    settings: dict[str, Any] | None = None,
    home: str | Path | None = None,
    world_dir: str | Path | None = None,
    fisher_dir: str | Path | None = None,
    overwrite: bool = False,
    max_steps: int | None = None,
) -> OptoutResult:
    """Make the model at `model_dir` forget `spec` with `method_name`; writes the unlearned checkpoint to `out_dir`.

    A rerun with the same config and inputs returns the finished checkpoint; `max_steps` pauses an
    iterative method after that many steps (a later call resumes it).
    """
    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(model_dir).resolve():
        raise SongtraceError(f"--out {out_dir} is the model being unlearned; write the unlearned checkpoint elsewhere")
    config = OptoutConfig(method=method_name, settings=dict(settings or {}), forget=spec)
    setup, forget_set, record = prepare(model_dir, latents_dir, config, home, world_dir, fisher_dir)
    task = setup.task
    identity = task.identity()
    inputs = {"model": identity, "latents": LatentSet.load(latents_dir).content_hash(), "forget": forget_set.forget_hash}
    if begin_stage(out_dir, config, inputs, overwrite=overwrite):
        return OptoutResult(out_dir, read_json(out_dir / CONFIG_FILE), True)
    membership = pd.DataFrame({
        "id": setup.training.ids,
        "artist": setup.training.artists,
        "set": ["forget" if i in set(forget_set.forget_ids) else "retain" for i in setup.training.ids],
    })
    write_parquet(out_dir / FORGET_FILE, membership)
    previous = read_json(out_dir / ELAPSED_FILE) if (out_dir / ELAPSED_FILE).exists() else {"seconds": 0.0, "cpu_seconds": 0.0}
    started, started_cpu = time.perf_counter(), time.process_time()

    def elapsed() -> dict[str, float]:
        # an elapsed.json of an older version may lack a key: count what it has (raising here, in `finally`, would hide the run's error)
        return {"seconds": float(previous.get("seconds", 0.0)) + time.perf_counter() - started,
                "cpu_seconds": float(previous.get("cpu_seconds", 0.0)) + time.process_time() - started_cpu}

    try:
        outcome = method(config.method).run(setup, config.method_config, out_dir, max_steps)
    finally:
        write_json(out_dir / ELAPSED_FILE, elapsed())
    spent = elapsed()
    if not outcome.finished:
        abandon_stage(out_dir, failed=False)  # stopped early by design (max_steps): unlock, keep it resumable
        return OptoutResult(out_dir, {"config": config.to_dict(), "inputs": inputs, "log": outcome.log}, False)
    weights = {k: v.detach().contiguous() for k, v in outcome.params.items()}
    broken = [k for k, v in weights.items() if not bool(torch.isfinite(v).all())]
    if broken:
        raise SongtraceError(f"{config.method} made {len(broken)} weights NaN or infinite (e.g. {broken[0]}); lower its learning rate "
                             "(--lr) or step budget (--steps) and rerun with --overwrite")
    save_safetensors(out_dir / MODEL_FILE, weights)
    parent = {"identity": identity, "dir": str(model_dir), "method": record.get("config", {}).get("method") if "model" in record else None}
    original = record.get("original_model") or {"identity": identity, "dir": str(model_dir)}
    entry = {"method": config.method, **forget_set.to_record(), "forget_ids": list(forget_set.forget_ids)}
    history = [*record.get("history", ()), entry]
    final = finish_stage(out_dir, config, inputs, content_hash=hash_tensors(weights), extra={
        "model": architecture_record(record),
        "original_model": original,
        "parent_model": parent,
        "forget_ids": list(forget_set.forget_ids),
        "forget_hash": forget_set.forget_hash,
        "forget": forget_set.to_record(),
        "forgotten_ids": list(setup.exclude_ids),
        "history": history,
        "method_log": outcome.log,
        "seconds": round(spent["seconds"], 3),
        "cpu_seconds": round(spent["cpu_seconds"], 3),
    })
    shutil.rmtree(out_dir / "state", ignore_errors=True)
    shutil.rmtree(out_dir / "retrain", ignore_errors=True)
    return OptoutResult(out_dir, final, True)


def load_optout(out_dir: str | Path) -> dict[str, Any]:
    """The record of a finished opt-out checkpoint, checking that it is one."""
    record = model_record(out_dir)
    if record.get("stage") != OptoutConfig.__name__:
        raise SongtraceError(f"{out_dir}: holds a {record.get('stage')!r} artifact, not an opt-out checkpoint (`songtrace optout`)")
    return record


def available_methods() -> dict[str, str]:
    """Method name -> what it does."""
    return {name: m.summary for name, m in METHODS.items()}
