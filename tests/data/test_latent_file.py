"""The one reader (and writer) of `<stem>.latent.safetensors` query latents."""

from __future__ import annotations

import pytest
import torch

from songtrace.artifacts import save_safetensors
from songtrace.data.batch import Batch
from songtrace.data.latent_file import read_latent_file, write_latent_file
from songtrace.errors import SongtraceError


def one_item() -> Batch:
    latent = torch.zeros(4, 16)
    latent[:, :9] = torch.randn(4, 9)
    return Batch.single("x", latent, 9, torch.randn(3, 8), torch.tensor([True, True, False]), 0.5, 1.25)


def test_written_latents_read_back_as_the_same_batch(tmp_path):
    query = one_item()
    path = write_latent_file(tmp_path / "gen.latent.safetensors", query, metadata={"prompt": "a chorale", "seed": "3"})
    saved = read_latent_file(path)
    assert saved.id == "gen" and saved.n_frames == 9 and saved.metadata == {"prompt": "a chorale", "seed": "3"}
    assert saved.seconds_start == 0.5 and saved.seconds_total == 1.25
    back = saved.batch()
    assert back.ids == ["gen"] and saved.batch("q").ids == ["q"]
    for field in ("latents", "n_frames", "text", "text_mask", "seconds_start", "seconds_total"):
        got, want = getattr(back, field), getattr(query, field)
        assert got.dtype == want.dtype and torch.equal(got, want), field


def test_a_bare_latent_reads_with_what_it_lacks_as_none(tmp_path):
    path = tmp_path / "other.latent.safetensors"
    save_safetensors(path, {"latent": torch.randn(4, 10), "n_frames": torch.tensor([7])})
    saved = read_latent_file(path)
    assert saved.latent.shape == (4, 10) and saved.n_frames == 7
    assert saved.text is None and saved.text_mask is None and saved.seconds_total is None and saved.seconds_start == 0.0
    with pytest.raises(SongtraceError, match="no caption tokens or seconds_total"):
        saved.batch()


def test_n_frames_beyond_the_stored_frames_is_refused_not_clamped(tmp_path):
    """Review #13: a latent file claiming more real frames than it stores is refused naming the file (it was clamped, silently)."""
    path = tmp_path / "long.latent.safetensors"
    save_safetensors(path, {"latent": torch.randn(4, 10), "n_frames": torch.tensor([12])})
    with pytest.raises(SongtraceError, match=r"long\.latent\.safetensors: n_frames is 12, more than the 10 frames"):
        read_latent_file(path)
    save_safetensors(path, {"latent": torch.randn(4, 10), "n_frames": torch.tensor([10])})
    assert read_latent_file(path).n_frames == 10


def test_bad_latent_files_are_named(tmp_path):
    with pytest.raises(SongtraceError, match="not found"):
        read_latent_file(tmp_path / "missing.latent.safetensors")
    save_safetensors(tmp_path / "z.latent.safetensors", {"z": torch.randn(4, 4)})
    with pytest.raises(SongtraceError, match=r"z\.latent\.safetensors: no 'latents' tensor"):
        read_latent_file(tmp_path / "z.latent.safetensors")
    save_safetensors(tmp_path / "flat.latent.safetensors", {"latents": torch.randn(40)})
    with pytest.raises(SongtraceError, match=r"expected a latent \[C, F\]"):
        read_latent_file(tmp_path / "flat.latent.safetensors")
    save_safetensors(tmp_path / "t.latent.safetensors", {"latents": torch.randn(4, 4), "text": torch.randn(3, 8),
                                                          "text_mask": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(SongtraceError, match="caption tokens must be"):
        read_latent_file(tmp_path / "t.latent.safetensors")
    with pytest.raises(SongtraceError, match="must end in"):
        write_latent_file(tmp_path / "gen.safetensors", one_item())
