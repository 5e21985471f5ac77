"""Optional third-party libraries (the real-model extras), imported with a clear error when missing.

`import_diffusers()`: diffusers' Stable Audio classes (the `diffusers` extra).

`import_sat()`: stable-audio-tools' model code (the `sat` extra, `make setup-sat`).

The readers of the libraries' checkpoint folders live here too (a StableAudioPipeline folder, a
stable-audio-tools `model_config.json` + weights), because both the model adapters and the external
codecs (`songtrace.codec.external`) read them.

stable-audio-tools 0.0.19 pins heavy training and UI dependencies, so the extra installs it with
`--no-deps` beside only what its model code needs (einops, einops-exts, alias-free-torch, torchaudio).
Its `models/diffusion.py` imports its own samplers at module level, and those import k-diffusion,
whose package import pulls in torchvision and CLIP; none of that is needed to build, load or run a
model (songtrace samples with its own DPM-Solver++). Where k-diffusion cannot be imported (no
torchvision build matches a CPU torch on the package index), `import_sat` registers a stand-in
module named `k_diffusion` whose every attribute raises, so stable-audio-tools' *model* code loads
and only its own samplers (`generate_diffusion_cond`) would fail, with that reason.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from songtrace.errors import SongtraceError

SETUP_HINT = "install the stable-audio-tools extra with `make setup-sat` (see README, 'Using your own Stable Audio model')"


@functools.lru_cache(maxsize=1)
def import_diffusers() -> types.SimpleNamespace:
    """diffusers' Stable Audio pipeline classes."""
    try:
        import diffusers
        from diffusers.pipelines.stable_audio.modeling_stable_audio import StableAudioProjectionModel
    except ImportError:
        raise SongtraceError("Stable Audio through diffusers needs diffusers (pip install 'songtrace[diffusers]')") from None
    return types.SimpleNamespace(
        StableAudioDiTModel=diffusers.StableAudioDiTModel,
        StableAudioProjectionModel=StableAudioProjectionModel,
        AutoencoderOobleck=diffusers.AutoencoderOobleck,
        version=diffusers.__version__,
    )


class _Unavailable(types.ModuleType):
    """A module that exists so that importing it succeeds, but whose every attribute raises with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.__reason = reason

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(f"{self.__name__} is not available here ({self.__reason}); songtrace samples with its own sampler")


def _ensure_k_diffusion() -> None:
    """Import k-diffusion, or register the stand-in when its import chain cannot load."""
    if "k_diffusion" in sys.modules:
        return
    try:
        importlib.import_module("k_diffusion")
    except Exception as e:  # ImportError, or a torchvision/torch mismatch raising RuntimeError
        sys.modules.pop("k_diffusion", None)
        sys.modules["k_diffusion"] = _Unavailable("k_diffusion", f"{type(e).__name__}: {e}".splitlines()[0])


@functools.lru_cache(maxsize=1)
def import_sat() -> types.SimpleNamespace:
    """stable-audio-tools' model factory and classes songtrace uses, with a clear error when the extra is missing."""
    try:
        import stable_audio_tools  # noqa: F401  (is it installed at all?)
    except ImportError:
        raise SongtraceError(f"the stable-audio-tools adapter needs stable-audio-tools; {SETUP_HINT}") from None
    _ensure_k_diffusion()
    try:
        from stable_audio_tools.models import conditioners, diffusion, factory
    except (ImportError, OSError) as e:
        raise SongtraceError(f"stable-audio-tools' model code does not import ({type(e).__name__}: {e}); {SETUP_HINT}") from None
    from importlib.metadata import version

    return types.SimpleNamespace(
        create_model_from_config=factory.create_model_from_config,
        create_pretransform_from_config=factory.create_pretransform_from_config,
        create_multi_conditioner_from_conditioning_config=conditioners.create_multi_conditioner_from_conditioning_config,
        ConditionedDiffusionModelWrapper=diffusion.ConditionedDiffusionModelWrapper,
        Conditioner=conditioners.Conditioner,
        NumberConditioner=conditioners.NumberConditioner,
        T5Conditioner=conditioners.T5Conditioner,
        version=version("stable-audio-tools"),
    )


# --------------------------------------------------------------------------- the libraries' checkpoint folders

PIPELINE_CLASS = "StableAudioPipeline"
SAT_CONFIG = "model_config.json"
SAT_WEIGHTS = ("model.safetensors", "model.ckpt")


def _json_object(path: Path) -> dict[str, Any]:
    from songtrace.artifacts import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise SongtraceError(f"{path}: expected a JSON object")
    return data


def check_pipeline_dir(pipeline_dir: Path, parts: tuple[str, ...] = ("transformer", "projection_model", "scheduler")) -> dict[str, Any]:
    """`model_index.json` of a diffusers folder, after checking it is a StableAudioPipeline with the sub-folders `parts`."""
    index_path = pipeline_dir / "model_index.json"
    if not index_path.exists():
        raise SongtraceError(f"{pipeline_dir}: no model_index.json; expected a diffusers {PIPELINE_CLASS} folder (save_pretrained)")
    index = _json_object(index_path)
    if index.get("_class_name") != PIPELINE_CLASS:
        raise SongtraceError(f"{index_path}: a {index.get('_class_name')!r} pipeline, expected {PIPELINE_CLASS}")
    for part in parts:
        if not (pipeline_dir / part).is_dir():
            raise SongtraceError(f"{pipeline_dir}: no {part}/ folder")
        check_safetensors_weights(pipeline_dir / part, f"the {part} weights")
    return index


# weight files that are pickles (torch.save / pickle), which can run code when loaded
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_safetensors_weights(folder: Path, what: str) -> None:
    """Refuse a component folder whose weights are only pickle-capable files (`.bin`, `.pt`, `.ckpt`) unless the user opted in
    (`artifacts.allow_pickle`); a folder with `.safetensors` weights, or none, passes (`from_pretrained` then loads only those)."""
    from songtrace.artifacts import refuse_pickle

    files = sorted(p for p in folder.iterdir() if p.is_file())
    if any(p.suffix == ".safetensors" for p in files):
        return
    pickled = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if pickled:
        refuse_pickle(pickled[0], what)


def pretrained_options() -> dict[str, Any]:
    """`from_pretrained` options of diffusers / transformers: safetensors weights only, unless pickles are allowed
    (then their default: safetensors when present, else the pickle)."""
    from songtrace.artifacts import pickle_allowed

    return {"use_safetensors": None if pickle_allowed() else True}


def files_hash(folders: list[Path]) -> str:
    """sha256 of the names and bytes of every file in `folders` (sorted): the identity of a saved component."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f"{path.relative_to(folder.parent)}|".encode())
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
    return h.hexdigest()


def diffusers_text_encoder_id(pipeline_dir: Path) -> str:
    """Identity of a pipeline's text encoder (its tokenizer/ and text_encoder/ files), recorded by the cache and the model."""
    parts = [pipeline_dir / "tokenizer", pipeline_dir / "text_encoder"]
    missing = [p.name for p in parts if not p.is_dir()]
    if missing:
        raise SongtraceError(f"{pipeline_dir}: no {', '.join(missing)}/ folder")
    return f"diffusers T5 {files_hash(parts)[:16]}"


def sat_text_encoder_id(text_config: Mapping[str, Any]) -> str:
    """Identity of a stable-audio-tools T5 conditioner: the T5 it loads by name, and its token count."""
    cfg = text_config.get("config", {})
    return f"stable-audio-tools T5 {cfg.get('t5_model_name', 't5-base')} max_length {int(cfg.get('max_length', 128))}"


def read_sat_config(sat_dir: Path) -> dict[str, Any]:
    """`model_config.json` of a stable-audio-tools folder, checked to be a conditioned diffusion model."""
    path = sat_dir / SAT_CONFIG
    if not path.exists():
        raise SongtraceError(f"{sat_dir}: no {SAT_CONFIG}; expected a stable-audio-tools model folder ({SAT_CONFIG} + model.safetensors)")
    config = _json_object(path)
    if config.get("model_type") != "diffusion_cond":
        raise SongtraceError(f"{path}: model_type {config.get('model_type')!r}; songtrace needs diffusion_cond")
    return config


def sat_weights_file(sat_dir: Path) -> Path:
    """The weights beside the config: model.safetensors, else model.ckpt (or the only *.safetensors / *.ckpt)."""
    for name in SAT_WEIGHTS:
        if (sat_dir / name).exists():
            return sat_dir / name
    found = sorted(sat_dir.glob("*.safetensors")) or sorted(sat_dir.glob("*.ckpt"))
    if len(found) == 1:
        return found[0]
    raise SongtraceError(f"{sat_dir}: expected one weights file ({' or '.join(SAT_WEIGHTS)}), found {[p.name for p in found] or 'none'}")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors: safetensors, or (only with `artifacts.allow_pickle`) a `.ckpt` through `torch.load(weights_only=True)`."""
    import torch

    if path.suffix == ".safetensors":
        from songtrace.artifacts import load_safetensors

        return load_safetensors(path)
    from songtrace.artifacts import refuse_pickle

    refuse_pickle(path, "a stable-audio-tools .ckpt checkpoint")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling error names what a weights-only load refused
        raise SongtraceError(f"{path}: not loadable as plain weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise SongtraceError(f"{path}: no state dict inside")
    return unwrap_training_state(state)


def unwrap_training_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A training-wrapper state dict (`diffusion.*`, EMA `diffusion_ema.ema_model.*`) as the model's own keys, EMA preferred."""
    if not any(k.startswith("diffusion.") for k in state):
        return dict(state)
    out = {k[len("diffusion."):]: v for k, v in state.items() if k.startswith("diffusion.")}
    out.update({"model." + k[len("diffusion_ema.ema_model."):]: v for k, v in state.items() if k.startswith("diffusion_ema.ema_model.")})
    return out


def read_sat_weights(sat_dir: Path) -> dict[str, Any]:
    """The state dict of a stable-audio-tools folder (its weights file, unwrapped)."""
    return read_checkpoint(sat_weights_file(sat_dir))
