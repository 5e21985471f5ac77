"""The issue 15 cases on the tiny stack, through the command line where the user meets them: one line and exit 2 for bad input,
nothing lost, corrupt artifacts recomputed, a failed run's corrected rerun just works, the base-loss cache verified over
the whole set, and `songtrace verify` reproducing a run bit for bit."""

import json
import shutil

import pandas as pd
import pytest
import torch

from songtrace.artifacts import load_safetensors, read_json, safetensors_metadata, save_safetensors
from songtrace.attribution import AttributeConfig, FisherConfig, ScoreConfig, UnlearnConfig, attribute, base_losses, fit_fisher
from songtrace.attribution.score import _loss_sha, verify_batches
from songtrace.attribution.verify import verify_run
from songtrace.cli import main
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_task

FISHER = FisherConfig(n_timesteps=2, batch_size=2, sample_chunk=8)
CONFIG = AttributeConfig(unlearn=UnlearnConfig(lr=1e-2, n_timesteps=8), score=ScoreConfig(n_timesteps=4, batch_size=3))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model, tiny_latents, tiny_codec):
    """A home holding the tiny stack under the names a user would use (demo)."""
    home = tmp_path_factory.mktemp("rel") / "home"
    for stage, src in (("models", tiny_model), ("latents", tiny_latents), ("codecs", tiny_codec)):
        shutil.copytree(src, home / stage / "demo")
    fit_fisher(home / "models" / "demo", home / "latents" / "demo", FISHER, home / "fisher" / "demo")
    return home


def _run(capsys, argv, stdout=None):
    """(exit code, the stderr lines) of `songtrace ARGV`; `stdout` (a list) gets what it printed there."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    if stdout is not None:
        stdout.append(captured.out)
    assert "Traceback" not in captured.err
    return e.value.code, [line for line in captured.err.splitlines() if line.strip()]


def _refused(capsys, argv, match):
    code, lines = _run(capsys, argv)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert match in lines[0], lines[0]
    return lines[0]


def _hashes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")}


GEN = ["generate", "--prompt", "a chorale", "--seconds", "1"]


@pytest.mark.parametrize(("args", "match"), [
    (["--seconds", "nan"], "seconds must be a finite number"),
    (["--seconds", "inf"], "seconds must be a finite number"),
    (["--steps", "0"], "sampler steps must be between 1"),
    (["--steps", "-3"], "sampler steps must be between 1"),
    (["--cfg", "nan"], "cfg_scale must be a finite number"),
    (["--cfg", "inf"], "cfg_scale must be a finite number"),
])
def test_generation_numbers_are_refused(capsys, stack, tmp_path, args, match):
    _refused(capsys, [*GEN, *args, "--out", tmp_path / "g.wav", "--home", stack], match)
    assert not (tmp_path / "g.wav").exists()


def test_an_empty_prompt_is_refused(capsys, stack, tmp_path):
    _refused(capsys, ["generate", "--prompt", "  ", "--seconds", "1", "--out", tmp_path / "g.wav", "--home", stack], "prompt is empty")
    _refused(capsys, ["attribute", "-q", "prompt: @0", "--out", tmp_path / "r", "--home", stack], "empty prompt")


@pytest.mark.parametrize(("argv", "match"), [
    (["train", "--name", "x", "--steps", "2", "--lr", "nan"], "lr must be a finite number"),
    (["train", "--name", "x", "--steps", "2", "--lr", "inf"], "lr must be a finite number"),
    (["fisher", "--name", "f", "--timesteps", "2", "--checkpoint-every", "0"], "checkpoint_every must be > 0"),
    (["fisher", "--name", "../latents/demo", "--timesteps", "2", "--overwrite"], "not a plain name"),
    (["fisher", "--name", "/tmp/x", "--timesteps", "2"], "not a plain name"),
    (["attribute", "-q", "train:nope", "--lr", "nan", "--out", "RUN"], "lr must be a finite number"),
    (["attribute", "-q", "train:nope", "--lr", "1e-3", "--damping", "nan", "--out", "RUN"], "damping must be a finite number"),
    (["attribute", "-q", "train:nope", "--lr", "1e-3", "--top", "0", "--out", "RUN"], "--top"),
])
def test_bad_numbers_and_names_are_refused_before_any_work(capsys, stack, tmp_path, argv, match):
    before = _hashes(stack)
    _refused(capsys, [str(tmp_path / "run") if a == "RUN" else a for a in argv] + ["--home", stack], match)
    assert _hashes(stack) == before


def test_overwrite_never_replaces_an_artifact_of_another_kind(capsys, stack, tmp_path):
    before = _hashes(stack)
    item = LatentSet.load(stack / "latents" / "demo").ids[0]
    for out in (stack / "models" / "demo", stack / "latents" / "demo", stack):
        _refused(capsys, ["attribute", "-q", f"train:{item}", "--out", out, "--overwrite", "--lr", "1e-3", "--timesteps", "2",
                          "--score-timesteps", "2", "--home", stack], str(out))
    assert _hashes(stack) == before


def test_a_failed_run_then_the_corrected_run_just_works(capsys, stack, tmp_path):
    first_id = LatentSet.load(stack / "latents" / "demo").subset("train").ids[0]
    run = ["attribute", "-q", f"train:{first_id}", "--out", tmp_path / "run", "--timesteps", "8", "--score-timesteps", "2",
           "--steps", "1", "--home", stack]
    _refused(capsys, [*run, "--lr", "1e35"], "diverged")
    assert read_json(tmp_path / "run" / ".pending.json")["failed"] is True
    code, lines = _run(capsys, [*run, "--lr", "1e-3"])
    assert code in (0, None), lines
    assert read_json(tmp_path / "run" / "config.json")["complete"]


def test_a_corrupt_fisher_is_refused_and_recomputed_with_overwrite(stack, tmp_path, capsys):
    out = tmp_path / "fisher"
    shutil.copytree(stack / "fisher" / "demo", out)
    good = (out / "fisher.safetensors").read_bytes()
    weights = load_safetensors(out / "fisher.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[0] = float("nan")
    save_safetensors(out / "fisher.safetensors", weights, metadata=safetensors_metadata(out / "fisher.safetensors"))  # same size, NaN
    args = (stack / "models" / "demo", stack / "latents" / "demo", FISHER, out)
    with pytest.raises(SongtraceError, match=r"corrupt: fisher\.safetensors has changed"):
        fit_fisher(*args)
    fit_fisher(*args, overwrite=True)
    assert (out / "fisher.safetensors").read_bytes() == good
    (out / "fisher.safetensors").write_bytes(good[:100])  # truncated
    with pytest.raises(SongtraceError, match=r"fisher\.safetensors has 100 bytes"):
        fit_fisher(*args)
    item = LatentSet.load(stack / "latents" / "demo").ids[0]
    _refused(capsys, ["attribute", "-q", f"train:{item}", "--fisher", out, "--lr", "1e-3", "--out", tmp_path / "r", "--home", stack],
             "fisher.safetensors has 100 bytes")


def test_a_nan_model_is_refused_when_read(stack, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(stack / "models" / "demo", out)
    weights = load_safetensors(out / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_safetensors(out / "model.safetensors", weights)
    with pytest.raises(SongtraceError, match="NaN/inf"):
        load_task(out)


def _tamper(path, how):
    t = load_safetensors(path)
    meta = safetensors_metadata(path)
    loss = t["loss"].clone()
    if how == "nan":
        loss[-1] = float("nan")
    else:  # a changed value, with a hash that agrees: only recomputing a batch near the end sees it
        loss[-1] *= 1.5
        meta["sha256"] = _loss_sha(loss)
    save_safetensors(path, {"loss": loss}, metadata=meta)


@pytest.mark.parametrize("how", ["consistent", "nan", "truncate"])
def test_the_base_loss_cache_is_checked_over_the_whole_set(stack, tmp_path, how):
    task = load_task(stack / "models" / "demo")
    data = LatentSet.load(stack / "latents" / "demo")
    score = ScoreConfig(n_timesteps=2, batch_size=2)
    fresh = base_losses(task, data, score, mask_loss=False)
    cached = base_losses(task, data, score, mask_loss=False, cache_dir=tmp_path)
    assert torch.equal(fresh, cached)
    (path,) = tmp_path.glob("*.safetensors")
    if how == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    else:
        _tamper(path, how)
    assert torch.equal(base_losses(task, data, score, mask_loss=False, cache_dir=tmp_path), fresh)
    assert torch.equal(load_safetensors(path)["loss"], fresh)  # rewritten


def test_verify_batches_spread_over_the_set():
    assert verify_batches(1) == [0] and verify_batches(3) == [0, 1, 2]
    assert verify_batches(10) == [0, 4, 9] and verify_batches(100, 5) == [0, 25, 50, 74, 99]


def test_verify_reproduces_a_run_bit_for_bit_and_finds_a_changed_score(stack, tmp_path, capsys):
    ids = LatentSet.load(stack / "latents" / "demo").subset("train").ids
    run = attribute([f"train:{ids[0]}", f"train:{ids[3]}"], CONFIG, stack / "models" / "demo", stack / "latents" / "demo",
                    stack / "fisher" / "demo", tmp_path / "run", home=stack)
    assert run.record["seeds"] == {"unlearn": 0, "score": 0, "fisher": 0}
    assert run.record["songtrace_version"] and set(run.record["inputs"]) == {"model", "latents", "fisher", "queries"}
    report = verify_run(tmp_path / "run")
    assert report["verified"], report
    names = {c["name"]: c for c in report["checks"]}
    assert names[f"delta train:{ids[0]}"]["ok"] and "bit for bit" in names[f"scores train:{ids[3]}"]["detail"]
    out: list[str] = []
    code, _ = _run(capsys, ["verify", tmp_path / "run", "--json", "--batches", "1"], stdout=out)  # review #4: 1 batch was 1/0
    assert code in (0, None) and json.loads(out[0])["verified"] is True
    code, lines = _run(capsys, ["verify", "models/demo", "--home", stack])  # review #16: --home is used (a path inside it)
    assert code in (0, None) and "verified" in " ".join(lines) and "NOT" not in " ".join(lines), lines
    scores = pd.read_parquet(tmp_path / "run" / "scores.parquet")
    scores.loc[len(scores) - 1, "score"] += 1e-9
    scores.to_parquet(tmp_path / "run" / "scores.parquet", index=False)
    report = verify_run(tmp_path / "run")
    assert not report["verified"]
    failed = {c["name"] for c in report["checks"] if c["ok"] is False}
    assert "files" in failed and f"scores train:{ids[3]}" in failed
    code, lines = _run(capsys, ["verify", tmp_path / "run"])
    assert code == 3 and "NOT verified" in lines[-1]
    whole = (tmp_path / "run" / "scores.parquet").read_bytes()
    (tmp_path / "run" / "scores.parquet").write_bytes(whole[: len(whole) // 2])  # review #8: unreadable, not an error
    report = verify_run(tmp_path / "run")
    assert not report["verified"] and {c["name"] for c in report["checks"] if c["ok"] is False} == {"files", "readable"}
    assert report["checks"][0]["name"] == "files" and "scores.parquet" in report["checks"][0]["detail"]
    code, lines = _run(capsys, ["verify", tmp_path / "run"])
    assert code == 3 and "NOT verified" in lines[-1]


def test_verify_batches_takes_one_or_none():
    assert verify_batches(10, 1) == [0] and verify_batches(10, 0) == [] and verify_batches(0, 1) == []


def test_generate_out_is_a_new_wav_outside_any_artifact(capsys, stack, tmp_path):
    """Review #6: --out must end in .wav, lie outside every songtrace artifact folder, and replace a file only with --overwrite."""
    weights = stack / "models" / "demo" / "model.safetensors"
    before = _hashes(stack)
    _refused(capsys, [*GEN, "--out", weights, "--home", stack], "give a path ending in .wav")
    _refused(capsys, [*GEN, "--out", stack / "models" / "demo" / "x.wav", "--home", stack], "lies inside the songtrace artifact")
    _refused(capsys, [*GEN, "--out", stack / "fisher" / "demo" / "sub" / "x.wav", "--home", stack], "lies inside the songtrace artifact")
    mine = tmp_path / "g.wav"
    mine.write_bytes(b"my recording")
    _refused(capsys, [*GEN, "--steps", "2", "--out", mine, "--home", stack], "already exists; pass --overwrite")
    assert mine.read_bytes() == b"my recording" and _hashes(stack) == before
    code, _ = _run(capsys, [*GEN, "--steps", "2", "--out", mine, "--overwrite", "--home", stack])
    assert code in (0, None) and mine.read_bytes()[:4] == b"RIFF" and (tmp_path / "g.latent.safetensors").exists()


def test_an_unknown_external_codec_kind_lists_the_valid_ones(capsys, stack, tmp_path):
    """Review #16: `encode --codec bogus:DIR` names the valid kinds, not a missing codec called "bogus:DIR"."""
    _refused(capsys, ["encode", "--codec", f"bogus:{tmp_path}", "--name", "x", "--home", stack], "diffusers:DIR, sat:DIR")
