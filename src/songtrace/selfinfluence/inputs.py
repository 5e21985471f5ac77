"""Loading the self-influence search's inputs from artifact directories (what `songtrace selfinfluence` runs).

The model, its latent cache and the world the cache was encoded from (checked by content hash), the
diagonal Fisher over all weights (fitted here with the Fisher stage's defaults when missing), the
audio embeddings of the training tracks (cached under `<home>/cache/selfinfluence_embeddings`) and,
for FD, the codec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from songtrace.artifacts import artifact_hash, hash_json, load_safetensors, read_json, save_safetensors
from songtrace.attribution.best_config import best_config_path
from songtrace.attribution.fisher import Fisher, FisherConfig, check_inputs, fit_fisher
from songtrace.attribution.shard import SINGLE, Job
from songtrace.data.latents import LatentSet
from songtrace.data.windows import WINDOW_RULE
from songtrace.embedders.base import Embedder
from songtrace.embedders.registry import resolve_embedder
from songtrace.errors import SongtraceError
from songtrace.home import resolve_artifact, resolve_home
from songtrace.model.registry import load_task
from songtrace.model.task import runtime_device
from songtrace.progress import progress
from songtrace.selfinfluence.fd import GenerationProbe
from songtrace.selfinfluence.run import SelfInfluenceConfig, SelfInfluenceData, SelfInfluenceResult, run_self_influence


def track_embeddings(world, ids: list[str], embedder: Embedder, cache_dir: Path | None) -> np.ndarray:
    """Pooled audio embeddings `[N, D]` of the world's tracks `ids`, cached by (world, embedder, ids)."""
    key = hash_json({"world": world.content_hash, "embedder": embedder.content_hash, "window_rule": WINDOW_RULE, "ids": ids})[:32]
    path = cache_dir / f"{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        return load_safetensors(path)["embeddings"].numpy()
    rows = [embedder.embed_audio([world.audio(i)], world.sample_rate)[0] for i in progress(ids, total=len(ids), desc="embed", unit="track")]
    emb = np.stack(rows).astype(np.float32)
    if path is not None:
        save_safetensors(path, {"embeddings": torch.from_numpy(emb)})
    return emb


def world_for_latents(world_dir: Path, latents_dir: Path):
    """The world a latent cache was encoded from, refusing another world (content hash mismatch)."""
    from songtrace.world.world import load_world

    world = load_world(world_dir)
    expected = read_json(latents_dir / "config.json").get("inputs", {}).get("world")
    if expected and world.content_hash and expected != world.content_hash:
        raise SongtraceError(
            f"the latent cache {latents_dir} was encoded from another world than {world_dir} (content hashes differ); pass --world")
    return world


def load_fisher(
    home: str | Path | None, fisher: str, model_dir: Path, latents_dir: Path, model_hash: str, latents_hash: str, model: Any = None,
    device: str = "cpu", job: Job = SINGLE,
) -> tuple[Fisher, Path]:
    """The Fisher artifact `fisher` (name or dir), fitted over all weights with default settings when it does not exist yet."""
    fisher_dir = resolve_artifact(home, "fisher", fisher)
    if not job.main_first(lambda: (fisher_dir / "config.json").exists() and bool(read_json(fisher_dir / "config.json").get("complete"))):
        fit_fisher(model_dir, latents_dir, FisherConfig(group="all", device=device), fisher_dir, model=model, job=job)
    loaded = Fisher.load(fisher_dir)
    check_inputs(loaded, model_hash, latents_hash, source=f"the Fisher at {fisher_dir}")
    return loaded, fisher_dir


def selfinfluence_from_dirs(
    config: SelfInfluenceConfig,
    home: str | Path | None = None,
    model: str = "demo",
    latents: str = "demo",
    world: str = "demo",
    fisher: str = "demo",
    codec: str = "demo",
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    save_best: bool = True,
    job: Job = SINGLE,
) -> SelfInfluenceResult:
    """Load the inputs by name (under `<home>`) or path, run the search into `out_dir` (default `<home>/runs/selfinfluence/<hash>`).

    With `save_best`, the best configuration also goes to `<home>/attribution/best_configs/<model identity>.json`,
    where `songtrace attribute` and `songtrace compare` find their defaults for this model.
    """
    home_path = resolve_home(home)
    model_dir = resolve_artifact(home, "models", model)
    latents_dir = resolve_artifact(home, "latents", latents)
    net = load_task(model_dir)
    cache = LatentSet.load(latents_dir)
    model_hash, latents_hash = net.identity(), cache.content_hash()
    net.module.to(runtime_device(config.device))  # loaded here, so moved once: every stage below then finds it on its device
    world_obj = world_for_latents(resolve_artifact(home, "worlds", world), latents_dir)
    fisher_obj, fisher_dir = load_fisher(home, fisher, model_dir, latents_dir, model_hash, latents_hash, model=net, device=config.device,
                                         job=job)
    embedder = resolve_embedder(config.embedder, home)
    items = cache.subset(config.split)
    manifest = world_obj.manifest.set_index("id")
    missing = [i for i in items.ids if i not in manifest.index]
    if missing:
        raise SongtraceError(f"{len(missing)} items of the latent cache are not in the world {world_obj.dir} (e.g. {missing[:3]})")
    versions = manifest["version_group"] if "version_group" in manifest else None
    version_groups = [str(versions[i]) if versions is not None and isinstance(versions[i], str) else "" for i in items.ids]
    embeddings = track_embeddings(world_obj, items.ids, embedder, home_path / "cache" / "selfinfluence_embeddings")
    inputs = {"model": model_hash, "latents": latents_hash, "fisher": artifact_hash(fisher_dir), "world": world_obj.content_hash,
              "embedder": embedder.content_hash}
    probe = None
    if config.fd:
        from songtrace.codec import load_codec

        codec_dir = resolve_artifact(home, "codecs", codec)
        if not (codec_dir / "config.json").exists():
            raise SongtraceError(f"{codec_dir}: no codec here; FD needs the codec to decode generations (pass --codec, or --no-fd)")
        probe = GenerationProbe(load_codec(codec_dir), embedder, items, config.fd_prompts, config.seed, config.fd_sampler_steps)
        inputs["codec"] = artifact_hash(codec_dir)
    data = SelfInfluenceData(
        model=net, fisher=fisher_obj, latents=cache, embeddings=embeddings, version_groups=version_groups, embedder_name=embedder.name,
        probe=probe, inputs=inputs, cache_dir=home_path / "cache" / "base_losses", model_hash=model_hash, job=job,
    )
    out = Path(out_dir) if out_dir is not None else home_path / "runs" / "selfinfluence" / config.config_hash()
    best_path = best_config_path(home_path, model_hash) if save_best else None
    return run_self_influence(data, config, out, overwrite=overwrite, best_config_path=best_path)
