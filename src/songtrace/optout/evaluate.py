"""`songtrace optout-eval`: does the unlearned model behave like one never trained on the forget set, and is the rest intact?

For the original model, the unlearned one and (when given) the retrained gold standard, on the
same items, plans, prompts and seeds:

- `loss`: diffusion loss on the forget, retain and held-out tracks and its change from the original;
- `membership`: the loss attack's AUC, forget tracks vs never-seen tracks of the same artist(s)
  (their valid-split tracks; all valid tracks where they have none), 0.5 = "never seen";
- `closeness`: for forget prompts (captions, naming, style) and retain prompts, the generations'
  similarity to the forget tracks and the probability an artist classifier (fitted on the world's
  audio) gives the forgotten artist;
- `quality`: FD of retain-prompt generations against the original model's, text-audio alignment;
- `credit`: the forgotten artist's attribution credit share on forget-prompt generations (seed 002);
- `history`: for a chain of opt-outs, the loss change of every earlier forget set (does it come back?);
- `relearn`: the forget loss after fine-tuning a few steps on retain data only (does it come back?);
- `gaps`: every scalar figure of the unlearned model minus the retrained model's (0 = as good as retraining).

Writes `<out>/eval.json` (everything), `<out>/figures.parquet` (model, figure, value) and config.json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from songtrace.artifacts import (
    CONFIG_FILE,
    StageConfig,
    artifact_hash,
    begin_stage,
    check_finite,
    check_positive,
    finish_stage,
    hash_json,
    read_json,
    write_json,
    write_parquet,
)
from songtrace.attribution import ScoreConfig, UnlearnConfig
from songtrace.attribution.query import fit_text
from songtrace.data.batch import Batch
from songtrace.data.latents import LatentSet
from songtrace.diffusion.sampler import DEFAULT_CFG_SCALE
from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError
from songtrace.metrics.alignment import text_audio_alignment
from songtrace.model.registry import load_task, model_record
from songtrace.model.task import ModelTask, check_latents_fit
from songtrace.optout.closeness import ArtistClassifier
from songtrace.optout.figures import (
    closeness_figures,
    credit_figures,
    loss_figures,
    membership_figure,
    per_item_losses,
    quality_figures,
    relearn,
)
from songtrace.optout.forget import forget_hash
from songtrace.optout.prompts import FORGET_KINDS, make_prompts
from songtrace.optout.run import OptoutConfig, check_model_data
from songtrace.progress import progress

EVAL_FILE = "eval.json"
FIGURES_FILE = "figures.parquet"


@dataclasses.dataclass(frozen=True)
class OptoutEvalConfig(StageConfig):
    """How an opt-out is evaluated (every figure uses the same draws for every model).

    loss_timesteps / seed / mask_loss / max_items: the fixed loss plan (T per item, padded frames
    excluded with mask_loss) on at most max_items retain and held-out items; prompts_per_kind and
    generations_per_prompt, sampler_steps, cfg_scale, seconds (0: the forget tracks' median length):
    the generations; credit_queries forget-prompt generations per model are attributed with
    `attribution` (Eq. 6) over a Fisher of fisher_timesteps and τ on score_timesteps (0 queries: no credit);
    relearn_steps of Adam at relearn_lr on retain data (0: no relearning check).
    """

    loss_timesteps: int = 32
    seed: int = 0
    mask_loss: bool = True
    max_items: int = 64
    prompts_per_kind: int = 4
    generations_per_prompt: int = 1
    sampler_steps: int = 25
    cfg_scale: float = DEFAULT_CFG_SCALE
    seconds: float = 0.0
    credit_queries: int = 4
    fisher_timesteps: int = 4
    score_timesteps: int = 8
    attribution: UnlearnConfig = dataclasses.field(default_factory=lambda: UnlearnConfig(n_timesteps=32))
    relearn_steps: int = 20
    relearn_lr: float = 1e-4
    relearn_batch: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("loss_timesteps", "max_items", "prompts_per_kind", "generations_per_prompt", "sampler_steps", "fisher_timesteps",
                     "score_timesteps", "relearn_lr", "relearn_batch", "cfg_scale"):
            check_finite(name, getattr(self, name))
            check_positive(name, getattr(self, name))
        for name in ("seed", "seconds", "credit_queries", "relearn_steps"):
            check_finite(name, getattr(self, name))
            check_positive(name, getattr(self, name), allow_zero=True)


@dataclasses.dataclass
class EvalInputs:
    """The loaded, checked inputs of an evaluation."""

    models: dict[str, ModelTask]  # original, unlearned[, retrained]
    record: dict[str, Any]  # the unlearned checkpoint's config.json
    latents: LatentSet
    forget_ids: list[str]
    forgotten_ids: list[str]
    artists: list[str]  # the forgotten artists (most of whose training tracks are in the forget set)


def forgotten_artists(train: LatentSet, forget_ids: list[str]) -> list[str]:
    """Artists with at least half of their training tracks in the forget set (the ones an opt-out is about)."""
    gone = set(forget_ids)
    out = []
    for artist in sorted(set(train.artists)):
        mine = [i for i, a in zip(train.ids, train.artists, strict=True) if a == artist]
        if sum(i in gone for i in mine) * 2 >= len(mine):
            out.append(artist)
    return out


def load_inputs(unlearned: Path | Mapping[str, Path], original_dir: Path, latents_dir: Path, retrained_dir: Path | None) -> EvalInputs:
    """Load the models and data, refusing an original that is not the unlearned model's, or a retrain of another set.

    `unlearned` is one checkpoint (named "unlearned") or several by name, all forgetting the same set
    (a benchmark scores every method on the same prompts, plans and seeds in one pass).
    """
    dirs = {"unlearned": Path(unlearned)} if isinstance(unlearned, str | Path) else {k: Path(v) for k, v in unlearned.items()}
    if not dirs or {"original", "retrained"} & set(dirs):
        raise SongtraceError("name the unlearned checkpoints other than 'original' and 'retrained'")
    models = {"original": load_task(original_dir)}
    original_id = models["original"].identity()
    latents = LatentSet.load(latents_dir)
    records = {}
    for name, d in dirs.items():
        record = model_record(d)
        if record.get("stage") != OptoutConfig.__name__:
            raise SongtraceError(f"{d}: holds a {record.get('stage')!r}, not an opt-out checkpoint (made by `songtrace optout`)")
        if original_id not in (record.get("original_model", {}).get("identity"), record.get("parent_model", {}).get("identity")):
            raise SongtraceError(f"--original {original_dir} is not the model {d} was unlearned from "
                                 f"(its original {str(record.get('original_model', {}).get('identity'))[:12]}, this {original_id[:12]})")
        records[name] = record
        models[name] = load_task(d)
    record = next(iter(records.values()))
    forgotten = sorted(record.get("forgotten_ids", record["forget_ids"]))
    for name, r in records.items():
        if forget_hash(r.get("forgotten_ids", r["forget_ids"])) != forget_hash(forgotten):
            raise SongtraceError(f"{dirs[name]} forgot other tracks than {next(iter(dirs.values()))}; evaluate them separately")
    if retrained_dir is not None:
        r = model_record(retrained_dir)
        excluded = sorted(r.get("forgotten_ids", r.get("excluded_ids", [])))
        if forget_hash(excluded) != forget_hash(forgotten):
            raise SongtraceError(f"--retrained {retrained_dir} was trained without {len(excluded)} items, not without the "
                                 f"{len(forgotten)} items the opt-out forgot; retrain with `songtrace optout --method retrain`")
        models["retrained"] = load_task(retrained_dir)
        dirs["retrained"] = Path(retrained_dir)
    for name, d in {"original": original_dir, **dirs}.items():
        check_latents_fit(models[name], latents, latents_dir)
        check_model_data(model_record(d), d, latents, latents_dir)
    forget_ids = list(record["forget_ids"])
    return EvalInputs(models, record, latents, forget_ids, forgotten, forgotten_artists(latents.subset("train"), forget_ids))


def _sample(ids: list[str], n: int, seed: int) -> list[str]:
    if len(ids) <= n:
        return ids
    rng = np.random.default_rng(seed)
    return [ids[i] for i in sorted(rng.choice(len(ids), n, replace=False))]


def _take(data: LatentSet, ids: list[str]) -> LatentSet:
    row = {item: i for i, item in enumerate(data.ids)}
    return data.take([row[i] for i in ids])


def loss_sets(inputs: EvalInputs, config: OptoutEvalConfig) -> dict[str, list[str]]:
    """The items of each loss set: forget, retain (subsampled), held-out (valid split, subsampled) and the attack's non-members."""
    data = inputs.latents
    train, splits = data.subset("train"), dict(zip(data.ids, data.splits, strict=True))
    gone = set(inputs.forgotten_ids)
    valid = [i for i in data.ids if splits[i] != "train"]
    artist_of = dict(zip(data.ids, data.artists, strict=True))
    same_artist = [i for i in valid if artist_of[i] in set(artist_of[f] for f in inputs.forget_ids)]
    return {
        "forget": list(inputs.forget_ids),
        "retain": _sample([i for i in train.ids if i not in gone], config.max_items, config.seed),
        "heldout": _sample(valid, config.max_items, config.seed + 1),
        "nonmembers": same_artist or valid,
        "nonmember_reference": ["valid-split tracks of the forgotten artists" if same_artist else
                                "all valid-split tracks (the forgotten artists have none)" if valid else "none"],
    }


def generation_batch(track: Any, latent_shape: tuple[int, int], text_tokens: int) -> Batch:
    """A generated track as a one-item query batch (zero-padded like a training item)."""
    text, mask = fit_text(track.text, track.text_mask, text_tokens, "generation")
    return Batch(ids=[f"gen-{track.seed}"], latents=track.latent[None].float(), n_frames=torch.tensor([track.n_frames]),
                 text=text[None], text_mask=mask[None], seconds_start=torch.zeros(1), seconds_total=torch.tensor([track.seconds]))


def _scalars(figures: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite scalar of a nested figure dict, keyed by its dotted path."""
    out: dict[str, float] = {}
    for k, v in figures.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_scalars(v, key + "."))
        elif isinstance(v, int | float) and not isinstance(v, bool) and np.isfinite(v):
            out[key] = float(v)
    return out


def gaps_to_retrain(per_model: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """For every unlearned model: its figure − the retrained model's, for each scalar both have (0 = as retraining)."""
    if "retrained" not in per_model:
        return {}
    r = _scalars(per_model["retrained"])
    skip = ("n_", "chance")
    out = {}
    for name, figs in per_model.items():
        if name in ("original", "retrained"):
            continue
        u = _scalars(figs)
        out[name] = {k: u[k] - r[k] for k in sorted(set(u) & set(r)) if not any(part.startswith(skip) for part in k.split("."))}
    return out


@dataclasses.dataclass
class Generations:
    """Every model's tracks for the same prompt runs (prompt, seed) and the prompt kinds of those runs."""

    runs: list[tuple[Any, int]]  # (Prompt, seed)
    tracks: dict[str, list[Any]]  # model -> GeneratedTrack per run
    seconds: float
    nonfinite: dict[str, int]  # model -> generations that came out NaN/inf (their audio replaced by silence)
    nonfinite_rows: dict[str, set[int]] = dataclasses.field(default_factory=dict)  # model -> those runs (their latents stay NaN)

    def finite_rows(self, model: str, rows: list[int]) -> list[int]:
        """The runs among `rows` whose generation by `model` came out finite (usable as attribution queries)."""
        bad = self.nonfinite_rows.get(model, set())
        return [k for k in rows if k not in bad and bool(torch.isfinite(self.tracks[model][k].latent).all())]

    def rows(self, kinds: tuple[str, ...]) -> list[int]:
        """Indices of the runs whose prompt is of one of `kinds`."""
        return [k for k, (p, _) in enumerate(self.runs) if p.kind in kinds]

    def texts(self, rows: list[int]) -> list[str]:
        """The prompt texts of some runs."""
        return [self.runs[k][0].text for k in rows]

    def waves(self, model: str, rows: list[int]) -> list[np.ndarray]:
        """A model's audio for some runs."""
        return [self.tracks[model][k].wav for k in rows]


def _loss_part(inputs: EvalInputs, config: OptoutEvalConfig, sets: dict[str, list[str]], per_model: dict[str, dict[str, Any]]
               ) -> dict[str, dict[str, np.ndarray]]:
    """Loss, membership and (for a chain of opt-outs) history figures; returns the per-item losses."""
    data, reference = inputs.latents, sets["nonmember_reference"][0]

    def losses_of(task: ModelTask, ids: list[str]) -> np.ndarray:
        return per_item_losses(task, _take(data, ids), config.loss_timesteps, config.seed, config.mask_loss)

    losses = {name: {s: losses_of(task, sets[s]) for s in ("forget", "retain", "heldout", "nonmembers")}
              for name, task in inputs.models.items()}
    for name in inputs.models:
        own = {k: losses[name][k] for k in ("forget", "retain", "heldout")}
        per_model[name]["loss"] = loss_figures(own, None if name == "original" else losses["original"])
        per_model[name]["membership"] = membership_figure(losses[name]["forget"], losses[name]["nonmembers"], reference)
    history = inputs.record.get("history", [])
    if len(history) > 1:
        before = [losses_of(inputs.models["original"], list(entry["forget_ids"])) for entry in history]
        for name, task in inputs.models.items():
            retain_change = float((losses[name]["retain"] - losses["original"]["retain"]).mean())
            rows = {}
            for k, entry in enumerate(history):
                change = float((losses_of(task, list(entry["forget_ids"])) - before[k]).mean())
                rows[f"optout_{k + 1}"] = {"artists": ", ".join(entry.get("artists", {})), "delta_forget": change,
                                           "forget_minus_retain": change - retain_change}
            per_model[name]["history"] = rows
    return losses


def _generate_all(inputs: EvalInputs, config: OptoutEvalConfig, codec: Any, prompts: list[Any]) -> Generations:
    """Generate every prompt run with every model (the same seeds for all)."""
    from songtrace.model.generate import generate

    seconds = config.seconds or float(np.median(_take(inputs.latents, inputs.forget_ids).seconds_total.numpy()))
    max_seconds = inputs.models["original"].latent_shape[1] * codec.samples_per_frame / codec.sample_rate
    seconds = min(seconds, 0.98 * max_seconds)
    runs = [(p, config.seed * 10_000 + j * 100 + g) for j, p in enumerate(prompts) for g in range(config.generations_per_prompt)]
    tracks = {name: [generate(task, codec, p.text, seconds, seed=seed, steps=config.sampler_steps, cfg_scale=config.cfg_scale)
                     for p, seed in progress(runs, total=len(runs), desc=f"generate ({name})", unit="track")]
              for name, task in inputs.models.items()}
    broken: dict[str, set[int]] = {}
    for name, ts in tracks.items():  # a model an opt-out broke may generate NaN: count it and judge silence in its place
        broken[name] = {k for k, t in enumerate(ts) if not (np.isfinite(t.wav).all() and bool(torch.isfinite(t.latent).all()))}
        for k in broken[name]:
            ts[k].wav = np.zeros_like(ts[k].wav)
    return Generations(runs, tracks, seconds, {name: len(rows) for name, rows in broken.items()}, broken)


def _generation_part(inputs: EvalInputs, gens: Generations, embedder: Embedder, manifest: pd.DataFrame,
                     world_audio: Mapping[str, np.ndarray], sample_rate: int, seed: int, per_model: dict[str, dict[str, Any]]) -> float:
    """Closeness and quality figures of the generations; returns the artist classifier's training accuracy."""
    train = inputs.latents.subset("train")
    world_ids = [i for i in train.ids if i in world_audio]
    training_emb = embedder.embed_audio([world_audio[i] for i in world_ids], sample_rate)
    in_forget = np.isin(np.asarray(world_ids), np.asarray(inputs.forget_ids))
    all_ids = sorted(world_audio)
    labels = list(manifest.set_index(manifest["id"].astype(str)).loc[all_ids, "artist"].astype(str))
    classifier = ArtistClassifier.fit(embedder.embed_audio([world_audio[i] for i in all_ids], sample_rate), labels, seed=seed)
    kinds = [p.kind for p, _ in gens.runs]
    retain_rows, forget_rows = gens.rows(("retain",)), gens.rows(FORGET_KINDS)
    sr = int(next(iter(gens.tracks.values()))[0].sample_rate)
    for name in inputs.models:
        emb = embedder.embed_audio(gens.waves(name, list(range(len(gens.runs)))), sr)
        per_model[name]["closeness"] = closeness_figures(emb, kinds, training_emb, in_forget, classifier, inputs.artists)
        quality = quality_figures(embedder, gens.waves(name, retain_rows), gens.texts(retain_rows), gens.waves("original", retain_rows), sr)
        if embedder.has_text:
            quality["alignment_forget_prompts"] = text_audio_alignment(embedder, gens.texts(forget_rows), gens.waves(name, forget_rows),
                                                                       sr).mean
        quality["nonfinite_generations"] = gens.nonfinite[name]
        per_model[name]["quality"] = quality
    return classifier.train_accuracy


def _credit_part(inputs: EvalInputs, config: OptoutEvalConfig, gens: Generations, per_model: dict[str, dict[str, Any]]) -> None:
    """The forgotten artists' attribution credit on forget-prompt generations, per model (its own Fisher and τ).

    Queries are chosen among the model's finite generations only (a NaN generation has no latent to attribute);
    `skipped_nonfinite` counts the forget-prompt generations left out so."""
    forget_rows = gens.rows(FORGET_KINDS)
    score = ScoreConfig(n_timesteps=config.score_timesteps, seed=config.seed, batch_size=16, timestep_chunk=config.score_timesteps)
    tokens = int(inputs.latents.text.shape[1])
    for name, task in inputs.models.items():
        finite = gens.finite_rows(name, forget_rows)
        chosen = [finite[int(i)] for i in np.linspace(0, len(finite) - 1, min(config.credit_queries, len(finite)))]
        if chosen:
            queries = [(f"{gens.runs[k][0].kind}-{k}", generation_batch(gens.tracks[name][k], task.latent_shape, tokens)) for k in chosen]
            credit = credit_figures(task, inputs.latents, queries, inputs.forget_ids, inputs.artists,
                                    config.fisher_timesteps, config.attribution, score)
        else:  # every forget-prompt generation of this model came out NaN: nothing to attribute
            credit = {"artist_share": None, "forget_items_share": None, "n_queries": 0, "chance_items_share": None}
        per_model[name]["credit"] = {**credit, "skipped_nonfinite": len(forget_rows) - len(finite)}


def _relearn_part(inputs: EvalInputs, config: OptoutEvalConfig, losses: dict[str, dict[str, np.ndarray]], retain_ids: list[str],
                  per_model: dict[str, dict[str, Any]]) -> None:
    """Fine-tune each model a few steps on retain data only and measure how much of the forget-loss increase is undone."""
    mask = bool(inputs.record.get("model", {}).get("train", {}).get("mask_padding", False))
    retain, forget = _take(inputs.latents, retain_ids), _take(inputs.latents, inputs.forget_ids)
    for name, task in inputs.models.items():
        tuned = relearn(task, retain, config.relearn_steps, config.relearn_lr, config.relearn_batch, config.seed, mask)
        after = per_item_losses(tuned, forget, config.loss_timesteps, config.seed, config.mask_loss)
        before = losses[name]["forget"]
        forgot, regained = float((before - losses["original"]["forget"]).mean()), float((before - after).mean())
        per_model[name]["relearn"] = {
            "forget_before": float(before.mean()), "forget_after": float(after.mean()), "regained": regained,
            "recovered_fraction": regained / forgot if name != "original" and abs(forgot) > 1e-12 else None,
        }


def evaluate(
    inputs: EvalInputs,
    config: OptoutEvalConfig,
    codec: Any,
    embedder: Embedder,
    manifest: pd.DataFrame,
    world_audio: Mapping[str, np.ndarray],
    sample_rate: int,
) -> dict[str, Any]:
    """Every figure for every model (the library entry: loaded inputs in, a JSON-ready dict out)."""
    sets = loss_sets(inputs, config)
    per_model: dict[str, dict[str, Any]] = {name: {} for name in inputs.models}
    losses = _loss_part(inputs, config, sets, per_model)
    retain_ids = [i for i in inputs.latents.subset("train").ids if i not in set(inputs.forgotten_ids)]
    prompts = make_prompts(manifest, inputs.forget_ids, retain_ids, config.prompts_per_kind, config.seed)
    gens = _generate_all(inputs, config, codec, prompts)
    accuracy = _generation_part(inputs, gens, embedder, manifest, world_audio, sample_rate, config.seed, per_model)
    if config.credit_queries > 0:
        _credit_part(inputs, config, gens, per_model)
    if config.relearn_steps > 0:
        _relearn_part(inputs, config, losses, retain_ids, per_model)
    counts: dict[str, Any] = {k: len(v) for k, v in sets.items() if k != "nonmember_reference"}
    return {
        "models": {name: {"identity": task.identity()} for name, task in inputs.models.items()},
        "forget": {"n": len(inputs.forget_ids), "artists": inputs.artists, "n_forgotten_total": len(inputs.forgotten_ids),
                   "method": inputs.record["config"]["method"], "seconds_generated": round(gens.seconds, 3)},
        "sets": {**counts, "nonmember_reference": sets["nonmember_reference"][0]},
        "prompts": [{"kind": p.kind, "text": p.text, "source_id": p.source_id} for p in prompts],
        "embedder": embedder.describe(),
        "classifier_train_accuracy": accuracy,
        "figures": per_model,
        "gaps": gaps_to_retrain(per_model),
    }


def figures_table(result: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (model, figure) scalar, plus the gaps as model "gap_to_retrain" (one unlearned model)
    or "gap_to_retrain:<name>" (several), the form the report's opt-out section reads."""
    rows = [{"model": m, "figure": k, "value": v} for m, figs in result["figures"].items() for k, v in _scalars(figs).items()]
    single = list(result["gaps"]) == ["unlearned"]
    rows += [{"model": "gap_to_retrain" if single else f"gap_to_retrain:{m}", "figure": k, "value": v}
             for m, gaps in result["gaps"].items() for k, v in gaps.items()]
    return pd.DataFrame(rows, columns=["model", "figure", "value"])


def evaluate_optout(
    unlearned_dir: str | Path | Mapping[str, str | Path],
    original_dir: str | Path,
    latents_dir: str | Path,
    codec_dir: str | Path,
    embedder: str | Path | Embedder,
    config: OptoutEvalConfig | None = None,
    retrained_dir: str | Path | None = None,
    world_dir: str | Path | None = None,
    home: str | Path | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluate an opt-out checkpoint (or several of the same forget set, by name) from artifact directories;
    with `out_dir`, write eval.json, figures.parquet and config.json.

    `embedder` is an `Embedder` or a name / path for `embedders.registry.resolve_embedder` ("auto": songclap when trained).
    """
    from songtrace.codec import load_codec
    from songtrace.embedders.registry import resolve_embedder
    from songtrace.world import find_world, load_world

    config = config or OptoutEvalConfig()
    embedder = resolve_embedder(embedder, home)
    original_dir, latents_dir = Path(original_dir), Path(latents_dir)
    unlearned = Path(unlearned_dir) if isinstance(unlearned_dir, str | Path) else {k: Path(v) for k, v in unlearned_dir.items()}
    inputs = load_inputs(unlearned, original_dir, latents_dir, Path(retrained_dir) if retrained_dir else None)
    latents_record = read_json(latents_dir / CONFIG_FILE)
    codec_hash = artifact_hash(codec_dir)
    if latents_record.get("inputs", {}).get("codec") not in (None, codec_hash):
        raise SongtraceError(f"--codec {codec_dir} is not the codec {latents_dir} was encoded with")
    if world_dir is None:
        world_dir = find_world(home, latents_record.get("inputs", {}).get("world", ""))
        if world_dir is None:
            raise SongtraceError(f"cannot find the world {latents_dir} was encoded from under the home's worlds/; pass --world")
    world = load_world(world_dir)
    stage_inputs = {name: task.identity() for name, task in inputs.models.items()}
    stage_inputs |= {"latents": inputs.latents.content_hash(), "codec": codec_hash, "world": world.content_hash,
                     "embedder": hash_json(embedder.describe())}
    if out_dir is not None:
        out_dir = Path(out_dir)
        if begin_stage(out_dir, config, stage_inputs, overwrite=overwrite):
            return read_json(out_dir / EVAL_FILE)
    world_audio = {str(i): world.audio(str(i)) for i in world.manifest["id"]}
    result = evaluate(inputs, config, load_codec(codec_dir), embedder, world.manifest, world_audio, world.sample_rate)
    named = {"unlearned": unlearned} if isinstance(unlearned, Path) else unlearned
    result["dirs"] = {**{k: str(v) for k, v in named.items()}, "original": str(original_dir), "retrained": str(retrained_dir or "")}
    if out_dir is not None:
        write_json(out_dir / EVAL_FILE, result)
        write_parquet(out_dir / FIGURES_FILE, figures_table(result))
        finish_stage(out_dir, config, stage_inputs, content_hash=hash_json(result["figures"]), extra={"gaps": result["gaps"]})
    return result
