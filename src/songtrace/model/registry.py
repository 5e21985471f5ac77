"""Model checkpoints: the architecture registry, `load_model(dir)` and `load_task(dir)`.

A model directory holds `model.safetensors` (the weights generation and attribution use: the EMA
weights of a trained DiT, or an imported checkpoint's state dict) and `config.json`, whose `config`
is the record the builder reads: a trained DiT's `ModelConfig` (`{"arch": "dit", "dit": {...},
"train": {...}}`) or an imported model's `ImportedModel` (`{"arch": "diffusers-stable-audio" |
"stable-audio-tools", "source": ..., "spec": {the library's own configs}}`, written by
`songtrace.model.importer`). The architecture name picks the builder from `ARCHITECTURES`, so model
families (adapters) plug in without if/elif chains.

A *derived* checkpoint (an unlearned or fine-tuned model) is the artifact of another stage; its
config.json carries the `ModelConfig` record of the model it came from under `model`, and its
`inputs.latents` the data that model was trained on, so it loads everywhere a trained model does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from songtrace.artifacts import CONFIG_FILE, check_finite_tensors, check_intact, load_safetensors, read_json
from songtrace.errors import SongtraceError
from songtrace.model.dit import DiT, DiTConfig
from songtrace.model.task import ModelTask, task_for

MODEL_FILE = "model.safetensors"
MODEL_STAGE = "ModelConfig"  # trained here
IMPORT_STAGE = "ImportedModel"  # imported from a library's checkpoint (songtrace.model.importer)
MODEL_STAGES = (MODEL_STAGE, IMPORT_STAGE)


def _build_dit(config: Mapping[str, Any]) -> nn.Module:
    return DiT(DiTConfig.from_dict(config["dit"]))


def _build_diffusers(config: Mapping[str, Any]) -> nn.Module:
    from songtrace.model.adapters.diffusers_dit import build_from_record

    return build_from_record(config)


def _build_sat(config: Mapping[str, Any]) -> nn.Module:
    from songtrace.model.adapters.stable_audio_tools import build_from_record

    return build_from_record(config)


# arch name -> builder taking the `config` record of config.json
ARCHITECTURES: dict[str, Callable[[Mapping[str, Any]], nn.Module]] = {
    "dit": _build_dit,
    "diffusers-stable-audio": _build_diffusers,
    "stable-audio-tools": _build_sat,
}


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """An untrained model for a `ModelConfig` record, via the registry."""
    arch = str(config.get("arch", "dit"))
    if arch not in ARCHITECTURES:
        raise SongtraceError(f"unknown model architecture {arch!r}; valid: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch](config)


def model_record(model_dir: str | Path) -> dict[str, Any]:
    """The finished config.json of a model directory (trained or derived), with errors naming the file."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise SongtraceError(f"{cfg_path}: not found; is {model_dir} a model directory? (run `songtrace train` first)")
    record = read_json(cfg_path)
    if record.get("stage") not in MODEL_STAGES and not isinstance(record.get("model"), dict):
        raise SongtraceError(f"{cfg_path}: holds a {record.get('stage')!r} artifact, not a model")
    if not record.get("complete"):
        if record.get("stage") == MODEL_STAGE:
            raise SongtraceError(f"{model_dir}: training did not finish; run `songtrace train` again to resume")
        if record.get("stage") == IMPORT_STAGE:
            raise SongtraceError(f"{model_dir}: the import did not finish; run `songtrace model import` again")
        raise SongtraceError(f"{model_dir}: the {record.get('stage')!r} stage did not finish; run it again to resume")
    return record


def architecture_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record the builder reads (arch + architecture), from a trained, imported or derived model's config.json."""
    return dict(record["config"] if record.get("stage") in MODEL_STAGES else record["model"])


def load_model(model_dir: str | Path) -> nn.Module:
    """Load a finished model directory (weights + config) in eval mode, with errors naming the bad file."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / CONFIG_FILE
    record = model_record(model_dir)
    try:
        model = build_model(architecture_record(record))
    except SongtraceError as e:
        raise SongtraceError(f"{cfg_path}: {e}") from None
    except (KeyError, TypeError) as e:
        raise SongtraceError(f"{cfg_path}: malformed model config ({e})") from None
    check_intact(model_dir, remedy="recompute it with --overwrite (`songtrace train`, `songtrace model import`, ...)")
    weights = load_safetensors(model_dir / MODEL_FILE)
    check_finite_tensors(weights, str(model_dir / MODEL_FILE))
    own = dict(model.state_dict())  # parameters and buffers; every parameter must be in the file, buffers may be
    missing = sorted({n for n, _ in model.named_parameters()} - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise SongtraceError(
            f"{model_dir / MODEL_FILE}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    for name, p in own.items():
        if name in weights and tuple(weights[name].shape) != tuple(p.shape):
            raise SongtraceError(
                f"{model_dir / MODEL_FILE}: {name} has shape {tuple(weights[name].shape)}, the config says {tuple(p.shape)}"
            )
    model.load_state_dict(weights, strict=False)  # missing parameters and unexpected keys were refused above
    model.source_dir = model_dir  # type: ignore[attr-defined]  # for error messages downstream
    return model.eval()


def load_task(model_dir: str | Path) -> ModelTask:
    """A finished model directory as the model's task (`songtrace.model.task`), the form every stage takes."""
    return task_for(load_model(model_dir))
