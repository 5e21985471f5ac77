"""`songtrace model import`: a real model's checkpoint folder as a songtrace model directory.

`import_model("diffusers", DIR, out)` reads a diffusers `StableAudioPipeline` folder,
`import_model("sat", DIR, out)` a stable-audio-tools folder (`model_config.json` + weights). Both
write what every songtrace command loads (`registry.load_model` / `load_task`): `model.safetensors`
(the diffusion model's state dict, in the library's own parameter names) and `config.json`, whose
`ImportedModel` record holds the library's configs, so the config travels with the weights. The
VAE and text encoder stay in the source folder; `songtrace encode --codec diffusers:DIR | sat:DIR`
uses them once to build the latent cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from songtrace.artifacts import StageConfig, begin_stage, check_choice, finish_stage, hash_tensors, read_json, save_safetensors
from songtrace.model.registry import ARCHITECTURES, MODEL_FILE


def _import_diffusers(source: Path) -> tuple[nn.Module, dict[str, Any]]:
    from songtrace.model.adapters.diffusers_dit import import_pipeline

    return import_pipeline(source)


def _import_sat(source: Path) -> tuple[nn.Module, dict[str, Any]]:
    from songtrace.model.adapters.stable_audio_tools import import_checkpoint

    return import_checkpoint(source)


# library name (the CLI's --diffusers / --sat) -> (architecture recorded, importer of a folder)
IMPORTERS: dict[str, tuple[str, Callable[[Path], tuple[nn.Module, dict[str, Any]]]]] = {
    "diffusers": ("diffusers-stable-audio", _import_diffusers),
    "sat": ("stable-audio-tools", _import_sat),
}


@dataclasses.dataclass(frozen=True)
class ImportedModel(StageConfig):
    """The model record of an imported checkpoint: its architecture, the folder it came from and the library's configs."""

    arch: str = "diffusers-stable-audio"
    source: str = ""
    spec: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse an architecture the registry cannot build."""
        super().__post_init__()
        check_choice("model architecture", self.arch, ARCHITECTURES)


def import_model(library: str, source_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Import a checkpoint folder into `out_dir`; returns a summary (architecture, weights, identity).

    Importing the same folder with the same weights again skips; different weights into the same
    directory are refused unless `overwrite`.
    """
    check_choice("model library", library, IMPORTERS)
    arch, importer = IMPORTERS[library]
    source, out_dir = Path(source_dir).resolve(), Path(out_dir)
    if not source.is_dir():
        from songtrace.errors import SongtraceError

        raise SongtraceError(f"{source_dir}: not a folder")
    module, spec = importer(source)
    weights = dict(module.state_dict())
    identity = hash_tensors(weights)
    config = ImportedModel(arch=arch, source=str(source), spec=spec)
    inputs = {"weights": identity}
    summary = {"model_dir": str(out_dir), "arch": arch, "source": str(source), "identity": identity,
               "n_params": sum(int(p.numel()) for p in module.parameters()), "latent_shape": list(module.latent_shape)}
    if begin_stage(out_dir, config, inputs, overwrite):
        return {**summary, "skipped": True}
    save_safetensors(out_dir / MODEL_FILE, weights)
    finish_stage(out_dir, config, inputs, content_hash=identity, extra={"summary": summary})
    return {**summary, "skipped": False}


def imported_spec(model_dir: str | Path) -> tuple[str, dict[str, Any]]:
    """(architecture, spec) of an imported model directory (what `songtrace encode` checks a cache against)."""
    record = read_json(Path(model_dir) / "config.json")
    return str(record["config"]["arch"]), dict(record["config"].get("spec", {}))
