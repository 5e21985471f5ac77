"""Optional third-party libraries (the real-model extras), imported with a clear error when missing.

`import_diffusers()`: diffusers' Stable Audio classes (the `diffusers` extra).

`import_sat()`: stable-audio-tools' model code (the `sat` extra, `make setup-sat`).

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
import importlib
import sys
import types
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
        ConditionedDiffusionModelWrapper=diffusion.ConditionedDiffusionModelWrapper,
        Conditioner=conditioners.Conditioner,
        NumberConditioner=conditioners.NumberConditioner,
        T5Conditioner=conditioners.T5Conditioner,
        version=version("stable-audio-tools"),
    )
