"""Auditing a finished attribution run: does it reproduce, bit for bit, from what it records?

`verify_run(run_dir)` (the `songtrace verify` command) checks, in order:

1. the run's files against its completion marker (sizes and sha256 of every file);
2. its config (the hash it records) and its inputs: the model's identity, the latent cache's and the
   Fisher's content hashes, against the artifacts at the directories the run recorded;
3. for each query with a saved delta: the query is resolved again (a training item, the latent
   file, or the generated track saved in the run) and, when its content hash matches the recorded one,
   unlearned again; the new θ' − θ0 must equal the saved delta bit for bit;
4. a sample of scores: a few batches spread over the training set (first, last, evenly between)
   are scored again from the saved delta, τ = L(z_i, θ0 + δ) − L(z_i, θ0) with fresh base losses,
   and must equal scores.parquet bit for bit.

Every check is reported (name, ok, detail); the run verifies when every check that could run passed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from songtrace.artifacts import CONFIG_FILE, artifact_hash, read_json, verify_artifact
from songtrace.attribution.fisher import Fisher
from songtrace.attribution.query import QueryContext, resolve_query
from songtrace.attribution.run import AttributeConfig, load_attribution, load_run_delta
from songtrace.attribution.score import _row_batches, loss_pass, rows_of, verify_batches
from songtrace.attribution.unlearn import unlearn
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task


@dataclasses.dataclass
class Check:
    """One verification: what was checked, whether it passed (None: could not be run) and what was found."""

    name: str
    ok: bool | None
    detail: str = ""


def _files_check(path: Path, record: dict[str, Any]) -> Check:
    """Every file against the size and sha256 its completion marker lists (None: an artifact made before markers listed files)."""
    listed = record.get("files")
    if not isinstance(listed, dict):
        return Check("files", None, "made before artifacts listed their files: nothing to compare")
    problems = verify_artifact(path, level="full")
    return Check("files", not problems, "; ".join(problems[:3]) if problems else f"{len(listed)} files match their sha256")


def verify_artifact_dir(path: str | Path) -> dict[str, Any]:
    """Verify any finished artifact's files against its completion marker (sizes and sha256 of every file)."""
    path = Path(path)
    if not (path / CONFIG_FILE).exists():
        raise SongtraceError(f"{path}: not a songtrace artifact (no {CONFIG_FILE})")
    record = read_json(path / CONFIG_FILE)
    if not record.get("complete"):
        raise SongtraceError(f"{path}: the {record.get('stage', 'stage')} did not finish; nothing to verify")
    check = _files_check(path, record)
    return {"artifact": str(path), "stage": record.get("stage"), "verified": bool(check.ok), "checks": [dataclasses.asdict(check)],
            "songtrace_version": record.get("songtrace_version"), "seeds": record.get("seeds"), "inputs": record.get("inputs")}


def verify_run(run_dir: str | Path, sample_batches: int = 3) -> dict[str, Any]:
    """Verify a finished attribution run (see the module doc); a JSON-able report with `verified` and every check."""
    run_dir = Path(run_dir)
    record = read_json(run_dir / CONFIG_FILE)
    if record.get("stage") != AttributeConfig.__name__:
        raise SongtraceError(f"{run_dir}: holds a {record.get('stage')!r} artifact, not an attribution run (songtrace attribute)")
    checks: list[Check] = [_files_check(run_dir, record)]  # first: a corrupt file is a failed check, not an error reading it
    try:
        run = load_attribution(run_dir)
    except SongtraceError as e:
        checks.append(Check("readable", False, str(e)))
        return _report(run_dir, record, checks)
    config = AttributeConfig.from_dict(record["config"])
    checks.append(Check("config", config.config_hash() == record.get("config_hash"), f"config hash {config.config_hash()}"))
    inputs = record.get("inputs", {})
    task = load_task(record["model_dir"])
    latents = LatentSet.load(record["latents_dir"])
    fisher = Fisher.load(record["fisher_dir"])
    found = {"model": task.identity(), "latents": latents.content_hash(), "fisher": artifact_hash(record["fisher_dir"])}
    for name, value in found.items():
        checks.append(Check(f"input {name}", value == inputs.get(name), f"{record[f'{name}_dir']}: {value[:16]}"
                                                                         + ("" if value == inputs.get(name) else
                                                                            f", the run recorded {str(inputs.get(name))[:16]}")))
    inputs_ok = all(c.ok for c in checks if c.name.startswith("input"))
    data = latents.subset(config.score.split)
    queries = {q["query_id"]: q for q in record.get("queries", [])}
    saved_deltas = {d["query_id"] for d in record.get("deltas", [])}
    scores = run.results
    for result in scores:
        qid = result.query_id
        if qid not in saved_deltas:
            checks.append(Check(f"delta {qid}", None, "no saved delta (a run made without deltas): scores not recomputed"))
            continue
        try:
            saved = load_run_delta(run_dir, qid)
        except SongtraceError as e:
            checks.append(Check(f"delta {qid}", False, str(e)))
            continue
        if not inputs_ok:
            checks.append(Check(f"delta {qid}", None, "inputs differ from the recorded ones: not recomputed"))
            continue
        checks.append(_check_delta(run_dir, qid, queries.get(qid, {}), saved, task, fisher, latents, config, record))
        checks.append(_check_scores(qid, saved.delta, result.scores, task, data, config, sample_batches))
    return _report(run_dir, record, checks)


def _report(run_dir: Path, record: dict[str, Any], checks: list[Check]) -> dict[str, Any]:
    """The JSON-able report of a run's checks: verified when every check that could run passed."""
    ran = [c for c in checks if c.ok is not None]
    return {
        "run_dir": str(run_dir),
        "verified": bool(ran) and all(c.ok for c in ran),
        "checks": [dataclasses.asdict(c) for c in checks],
        "songtrace_version": record.get("songtrace_version"),
        "seeds": record.get("seeds"),
        "inputs": record.get("inputs", {}),
    }


def _query_file(run_dir: Path, qid: str, meta: dict[str, Any], record: dict[str, Any]) -> str | None:
    """The spec to resolve a query again from: `train:ID`, its latent file, or the generated track saved in the run."""
    kind = meta.get("kind")
    if kind == "train":
        return qid
    if kind == "latent" and meta.get("source"):
        return str(meta["source"])
    if kind == "prompt":
        delta_file = next((d["file"] for d in record.get("deltas", []) if d["query_id"] == qid), None)
        if delta_file is not None:
            stem = Path(delta_file).name.removesuffix(".safetensors")
            saved = run_dir / "queries" / f"{stem}.latent.safetensors"
            return str(saved) if saved.exists() else None
    return None


def _check_delta(run_dir: Path, qid: str, meta: dict[str, Any], saved: Any, task: Any, fisher: Fisher, latents: LatentSet,
                 config: AttributeConfig, record: dict[str, Any]) -> Check:
    """Unlearn the query again and compare θ' − θ0 with the saved delta, bit for bit."""
    from songtrace.artifacts import hash_tensors

    spec = _query_file(run_dir, qid, meta, record)
    if spec is None or (not spec.startswith("train:") and not Path(spec).exists()):
        return Check(f"delta {qid}", None, f"the query's {meta.get('kind', '?')} source is not at hand: delta not recomputed")
    query = resolve_query(spec, QueryContext(latents, model=task))
    query.batch.ids = [qid]
    if hash_tensors({"latent": query.batch.latents, "text": query.batch.text}) != saved.meta["query_hash"]:
        if meta.get("kind") == "train":
            return Check(f"delta {qid}", False, f"{spec} is not the query the run unlearned (content hash differs)")
        return Check(f"delta {qid}", None, f"{spec} resolves to another query than the run's (changed, or given a --caption): "
                                           "delta not recomputed")
    fresh = unlearn(task, fisher, query.batch, config.unlearn)
    same = set(fresh) == set(saved.delta) and all(torch.equal(fresh[k], saved.delta[k]) for k in fresh)
    worst = max((float((fresh[k].double() - saved.delta[k].double()).abs().max()) for k in fresh if k in saved.delta), default=0.0)
    return Check(f"delta {qid}", same, f"{len(fresh)} tensors of θ' − θ0 " + ("equal bit for bit" if same else f"differ (max {worst:.3g})"))


def _check_scores(qid: str, delta: dict[str, torch.Tensor], recorded: torch.Tensor, task: Any, data: LatentSet, config: AttributeConfig,
                  sample_batches: int) -> Check:
    """Score a sample of batches again from the saved delta and compare τ with scores.parquet, bit for bit."""
    batches = _row_batches(len(data), config.score.batch_size)
    rows_checked, mismatched, worst = 0, 0, 0.0
    for i in verify_batches(len(batches), sample_batches):
        rows = batches[i]
        base, losses = loss_pass(task, [delta], rows_of(data, range(rows.start, rows.stop)), config.score, config.unlearn.mask_loss,
                                 with_base=True, desc="verify scores")
        assert base is not None
        tau = losses[0] - base
        want = recorded[rows].to(torch.float64)
        rows_checked += len(tau)
        mismatched += int((tau != want).sum())
        worst = max(worst, float((tau - want).abs().max()))
    return Check(f"scores {qid}", mismatched == 0, f"{rows_checked} of {len(data)} scores recomputed: "
                 + ("equal bit for bit" if mismatched == 0 else f"{mismatched} differ (max {worst:.3g})"))

