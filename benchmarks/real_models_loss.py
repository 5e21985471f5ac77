"""Loss agreement of the real-model adapters with their libraries, on tiny random models built offline.

For a diffusers StableAudioPipeline and a stable-audio-tools checkpoint (the test fixtures of
tests/fixtures_real.py), import each, and compare songtrace's `task.loss` with the library's own
loss on the same batch, timesteps and noise (diffusers: what the pipeline and its scheduler imply;
stable-audio-tools: `DiffusionCondTrainingWrapper.training_step`'s loss), unmasked and with the
padding mask. Writes benchmarks/results/real_models_loss.json with the max abs and max relative diffs.

    PYTHONPATH=src:tests python benchmarks/real_models_loss.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "tests" / "model")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def diffusers_agreement(tmp: Path, n_timesteps: int) -> dict[str, float]:
    from diffusers import StableAudioPipeline
    from test_diffusers_import import a_batch, pipeline_loss

    from fixtures_real import write_tiny_pipeline
    from songtrace.diffusion.loss import make_plan
    from songtrace.model.importer import import_model
    from songtrace.model.registry import load_task

    folder = write_tiny_pipeline(tmp / "pipeline")
    import_model("diffusers", folder, tmp / "dif")
    task, pipe = load_task(tmp / "dif"), StableAudioPipeline.from_pretrained(folder)
    batch = a_batch(pipe)
    plan = make_plan(batch.ids, n_timesteps, task.latent_shape, seed=0)
    out = {}
    for mask in (False, True):
        with torch.no_grad():
            ours = task.loss(None, batch, plan, mask=mask)
        ref = pipeline_loss(pipe, batch, plan, mask=mask)
        out[f"max_abs_diff_mask_{mask}"] = float((ours - ref).abs().max())
        out[f"max_rel_diff_mask_{mask}"] = float(((ours - ref).abs() / ref.abs()).max())
    out["n_losses_compared"] = int(plan.t.numel())
    return out


def sat_agreement(tmp: Path, n_timesteps: int) -> dict[str, float]:
    from test_sat_import import a_batch, library_training_loss

    from fixtures_real import build_full_sat, working_directory, write_tiny_sat, write_tiny_t5
    from songtrace.artifacts import load_safetensors
    from songtrace.diffusion.loss import make_plan
    from songtrace.model.importer import import_model
    from songtrace.model.registry import load_task

    t5_cwd = tmp / "t5cwd"
    write_tiny_t5(t5_cwd / "t5-small", d_model=512)
    folder = write_tiny_sat(tmp / "sat", t5_cwd)
    import_model("sat", folder, tmp / "satm")
    task = load_task(tmp / "satm")
    with working_directory(t5_cwd):
        full = build_full_sat(json.loads((folder / "model_config.json").read_text()))
    full.load_state_dict(load_safetensors(folder / "model.safetensors"))
    full.eval()
    batch = a_batch(full)
    plan = make_plan(batch.ids, n_timesteps, task.latent_shape, seed=0)
    out = {}
    for mask in (False, True):
        with torch.no_grad():
            ours = task.loss(None, batch, plan, mask=mask)
        diffs, rel = [], []
        for i in range(len(batch)):
            for j in range(n_timesteps):
                ref = library_training_loss(full, batch.select([i]), plan.t[i : i + 1, j], plan.noise[i : i + 1, j], mask)
                diffs.append(float((ours[i, j] - ref).abs()))
                rel.append(diffs[-1] / float(ref.abs()))
        out[f"max_abs_diff_mask_{mask}"] = max(diffs)
        out[f"max_rel_diff_mask_{mask}"] = max(rel)
    out["n_losses_compared"] = int(plan.t.numel())
    return out


def main() -> None:
    start = time.time()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {
            "diffusers": diffusers_agreement(tmp, n_timesteps=8),
            "stable_audio_tools": sat_agreement(tmp, n_timesteps=8),
        }
    import diffusers

    from songtrace.extras import import_sat

    result["versions"] = {"torch": torch.__version__, "diffusers": diffusers.__version__, "stable_audio_tools": import_sat().version}
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_1min": os.getloadavg()[0]}
    result["sat_extra_install_seconds"] = 6.6  # `pip install --no-cache-dir --no-deps` of the `make setup-sat` set, measured by hand
    result["wall_seconds"] = round(time.time() - start, 1)
    out = ROOT / "benchmarks" / "results" / "real_models_loss.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
