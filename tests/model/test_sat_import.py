"""`songtrace model import --sat`: a stable-audio-tools folder becomes a model directory whose loss is the library's training loss.

The reference is `DiffusionCondTrainingWrapper.training_step` (objective "v") on the library's whole
model, its own `MultiConditioner` (T5 included) on the batch metadata and its own
`get_alphas_sigmas`; the training package itself imports pytorch-lightning, so its `MSELoss` (with
`mask_key="padding_mask"` under `mask_padding`) is written out below line for line.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from fixtures_real import CAPTIONS, build_full_sat, working_directory
from songtrace.artifacts import artifact_hash, load_safetensors
from songtrace.data.batch import Batch
from songtrace.diffusion.loss import make_plan
from songtrace.errors import SongtraceError
from songtrace.model.importer import import_model
from songtrace.model.registry import load_task

pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools extra is not installed (make setup-sat)")


@pytest.fixture(scope="module")
def full(tiny_sat_dir, sat_t5_cwd):
    """The library's whole model (T5 conditioner, pretransform) with the saved weights."""
    config = json.loads((tiny_sat_dir / "model_config.json").read_text())
    with working_directory(sat_t5_cwd):
        model = build_full_sat(config)
    model.load_state_dict(load_safetensors(tiny_sat_dir / "model.safetensors"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def imported(tiny_sat_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "sat"
    return out, import_model("sat", tiny_sat_dir, out)


def library_conditioning(full, batch):
    """The library's `MultiConditioner` on the metadata its dataset would give for these items."""
    captions = [CAPTIONS[int(i[1:])] for i in batch.ids]  # item "x{k}" has caption k
    metadata = [{"prompt": c, "seconds_start": float(s), "seconds_total": float(tot)}
                for c, s, tot in zip(captions, batch.seconds_start, batch.seconds_total, strict=True)]
    with torch.no_grad():
        return full.conditioner(metadata, "cpu")


def cached_text(full):
    """What the latent cache holds per caption: the library T5's last_hidden_state (before proj_out) and mask."""
    t5 = full.conditioner.conditioners["prompt"]
    enc = t5.tokenizer(list(CAPTIONS), truncation=True, max_length=t5.max_length, padding="max_length", return_tensors="pt")
    mask = enc["attention_mask"].bool()
    with torch.no_grad():
        hidden = t5.model(input_ids=enc["input_ids"], attention_mask=mask)["last_hidden_state"]
    return hidden.float(), mask


def a_batch(full, n_frames=(16, 11, 7, 16)):
    text, mask = cached_text(full)
    g = torch.Generator().manual_seed(2)
    return Batch(ids=[f"x{i}" for i in range(4)], latents=torch.randn(4, 4, 16, generator=g), n_frames=torch.tensor(n_frames),
                 text=text, text_mask=mask, seconds_start=torch.tensor([0.0, 1.0, 0.0, 2.0]),
                 seconds_total=torch.tensor([8.0, 5.0, 3.0, 30.0]))


def library_training_loss(full, batch, t, noise, mask_padding):
    """`training_step`'s loss for one batch with given t [B] and noise, then MSELoss as the library computes it."""
    from stable_audio_tools.inference.sampling import get_alphas_sigmas

    conditioning = library_conditioning(full, batch)
    padding_masks = batch.frame_mask()
    alphas, sigmas = get_alphas_sigmas(t)
    alphas, sigmas = alphas[:, None, None], sigmas[:, None, None]
    diffusion_input = batch.latents
    noised_inputs = diffusion_input * alphas + noise * sigmas
    targets = noise * alphas - diffusion_input * sigmas
    extra_args = {"mask": padding_masks} if mask_padding else {}
    with torch.no_grad():
        output = full(noised_inputs, t, cond=conditioning, cfg_dropout_prob=0.0, **extra_args)
    mse_loss = F.mse_loss(output, targets, reduction="none")  # MSELoss.forward
    if mask_padding:
        m = padding_masks.unsqueeze(1).repeat(1, mse_loss.shape[1], 1)
        mse_loss = mse_loss[m]
    return mse_loss.mean()


def test_import_writes_a_model_directory_every_command_loads(imported, full, tiny_sat_dir):
    out, summary = imported
    task = load_task(out)
    assert task.kind == "stable-audio-tools" and task.latent_shape == (4, 16)
    assert task.identity() == summary["identity"] == artifact_hash(out)
    theirs = {k: v for k, v in full.state_dict().items() if not k.startswith("pretransform.")}
    ours = task.module.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert import_model("sat", tiny_sat_dir, out)["skipped"]


def test_conditioning_from_the_cache_equals_the_library_conditioner(imported, full):
    task = load_task(imported[0])
    batch = a_batch(full)
    theirs = library_conditioning(full, batch)
    ours = task.module.conditioning_tensors(batch.cond)
    assert set(ours) == set(theirs)
    for key in theirs:
        assert torch.equal(ours[key][0], theirs[key][0].float()), key
        assert torch.equal(ours[key][1].bool(), theirs[key][1].bool()), key


@pytest.mark.parametrize("mask_padding", [False, True])
def test_loss_equals_the_library_training_loss(imported, full, mask_padding):
    task = load_task(imported[0])
    batch = a_batch(full)
    plan = make_plan(batch.ids, 3, task.latent_shape, seed=0)
    with torch.no_grad():
        ours = task.loss(None, batch, plan, mask=mask_padding)  # [B, T]
    for j in range(3):
        t, noise = plan.t[:, j], plan.noise[:, j]
        ref = library_training_loss(full, batch, t, noise, mask_padding)
        # the library averages over every (real) element of the batch: the frame-weighted mean of our per-item losses
        weights = batch.n_frames.float() if mask_padding else torch.ones(4)
        assert torch.allclose((ours[:, j] * weights).sum() / weights.sum(), ref, rtol=1e-5, atol=1e-6)
        for i in range(4):  # and item by item
            one = batch.select([i])
            assert torch.allclose(ours[i, j], library_training_loss(full, one, t[i : i + 1], noise[i : i + 1], mask_padding), rtol=1e-5,
                                  atol=1e-6)


def test_layer_groups_use_the_checkpoint_names(imported):
    groups = load_task(imported[0]).layer_groups()
    prefix = "model.model.transformer.layers."
    assert groups["to_kv"] == [f"{prefix}{i}.cross_attn.to_kv.weight" for i in range(2)]
    assert set(groups["to_kv"]) < set(groups["cross_attn"]) < set(groups["all"])
    assert f"{prefix}0.self_attn.to_qkv.weight" in groups["self_attn"] and any(".ff.ff." in n for n in groups["all"])
    assert all(n.startswith(prefix) for n in groups["all"])


def test_a_ckpt_is_read_weights_only_and_training_wrappers_are_unwrapped(tiny_sat_dir, tmp_path):
    from songtrace.artifacts import allow_pickle
    from songtrace.extras import read_checkpoint as load_state_dict

    state = load_safetensors(tiny_sat_dir / "model.safetensors")
    wrapped = {f"diffusion.{k}": v for k, v in state.items()}
    wrapped.update({f"diffusion_ema.ema_model.{k[len('model.'):]}": v + 1 for k, v in state.items() if k.startswith("model.")})
    torch.save({"state_dict": wrapped}, tmp_path / "model.ckpt")
    with pytest.raises(SongtraceError, match="pickle-capable"):  # refused unless the user opts in
        load_state_dict(tmp_path / "model.ckpt")
    with allow_pickle():
        loaded = load_state_dict(tmp_path / "model.ckpt")
    assert set(loaded) == set(state)
    key = "model.model.transformer.project_in.weight"
    assert torch.equal(loaded[key], state[key] + 1)  # EMA preferred
    torch.save({"state_dict": state, "hook": print}, tmp_path / "evil.ckpt")
    with allow_pickle(), pytest.raises(SongtraceError, match="plain weights"):
        load_state_dict(tmp_path / "evil.ckpt")


def test_bad_folders_are_named(tmp_path, tiny_sat_dir):
    with pytest.raises(SongtraceError, match=r"model_config\.json"):
        import_model("sat", tmp_path, tmp_path / "out")
    config = json.loads((tiny_sat_dir / "model_config.json").read_text())
    config["model"]["conditioning"]["configs"].append({"id": "genre", "type": "list", "config": {"options": ["a"]}})
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(SongtraceError, match="genre"):
        import_model("sat", bad, tmp_path / "out")
