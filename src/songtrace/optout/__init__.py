"""songtrace.optout: opt-out unlearning (seed 000, "No Encore"): forget sets, the methods behind one registry, the stage.

    spec = ForgetSpec(artist="Kilfenora Road")
    result = optout(model_dir, latents_dir, spec, "bounded", out_dir)   # an unlearned checkpoint: load_model(out_dir)
"""

from songtrace.optout.forget import ForgetSet, ForgetSpec, forget_hash, read_ids_file, select_forget, world_captions
from songtrace.optout.loop import LoopConfig, UnlearnSetup
from songtrace.optout.methods import (
    METHODS,
    BoundedConfig,
    EWCConfig,
    GAConfig,
    GradDiffConfig,
    Method,
    NewtonConfig,
    RetrainConfig,
    RLConfig,
    SalUnConfig,
    method,
    method_config,
)
from songtrace.optout.run import OptoutConfig, OptoutResult, available_methods, load_optout, optout, prepare

__all__ = [
    "METHODS",
    "BoundedConfig",
    "EWCConfig",
    "ForgetSet",
    "ForgetSpec",
    "GAConfig",
    "GradDiffConfig",
    "LoopConfig",
    "Method",
    "NewtonConfig",
    "OptoutConfig",
    "OptoutResult",
    "RLConfig",
    "RetrainConfig",
    "SalUnConfig",
    "UnlearnSetup",
    "available_methods",
    "forget_hash",
    "load_optout",
    "method",
    "method_config",
    "optout",
    "prepare",
    "read_ids_file",
    "select_forget",
    "world_captions",
]
