"""Sharding (attribution/shard.py): plans, shard files as completion markers, a dead rank's rerun, merged = single process.

The ranks of a job run here one after another without a process group (`Job(rank, world)`), which
is exactly what a rerun after a dead rank sees: some ranks' shards on disk, the others missing.
The real multi-process runs (torchrun, gloo) are in test_attribution_torchrun.py.
"""

import numpy as np
import pytest
import torch

import songtrace.attribution.fisher as fisher_module
from fixtures_model import synthetic_latent_set, tiny_dit
from songtrace.artifacts import load_safetensors
from songtrace.attribution import (
    FisherConfig,
    ScoreConfig,
    base_losses,
    compute_fisher,
    fit_fisher,
    score_many,
    split_params,
    target_params,
)
from songtrace.attribution.index import IndexConfig, build_index, shard_path
from songtrace.attribution.shard import (
    SINGLE,
    Job,
    ShardsPending,
    ShardStore,
    SumShards,
    aligned,
    batches_of,
    default_shard_rows,
    map_shards,
    merge_spans,
    missing_spans,
    shard_ranges,
)
from songtrace.data.latents import LatentSet
from songtrace.errors import SongtraceError
from songtrace.model.registry import load_model


def test_shard_plans_blocks_and_spans():
    assert shard_ranges(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert aligned(5, 4) == 8 and aligned(8, 4) == 8
    assert default_shard_rows(1000, 16, 2) % 16 == 0
    items = list(range(7))
    blocks = [Job(r, 3).block(items) for r in range(3)]
    assert [i for b in blocks for i in b] == items and max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert merge_spans([(4, 6), (0, 2), (2, 3), (5, 8)]) == [(0, 3), (4, 8)]
    assert missing_spans(10, [(2, 4), (6, 7)]) == [(0, 2), (4, 6), (7, 10)]
    assert batches_of([(4, 13)], 4) == [range(4, 8), range(8, 12), range(12, 13)]
    assert batches_of([(5, 9)], 4) == [range(5, 8), range(8, 9)]  # cut at multiples of the batch size, as one process cuts
    with pytest.raises(SongtraceError, match="rank 2 of world 2"):
        Job(2, 2)


def test_map_shards_skips_finished_shards_and_merges_in_row_order(tmp_path):
    calls = []

    def compute(rows):
        calls.append(rows)
        return {"x": torch.arange(rows.start, rows.stop, dtype=torch.float64) ** 2, "y": torch.ones(2, len(rows))}

    store = ShardStore(tmp_path / "s")
    with pytest.raises(ShardsPending, match="not finished"):
        map_shards(10, 3, compute, Job(1, 2), store)  # rank 1 of 2 alone: its block only
    assert calls == [range(6, 9), range(9, 10)]
    assert store.done(range(6, 9)) and not store.done(range(0, 3))
    calls.clear()
    out = map_shards(10, 5, compute, SINGLE, store)  # the recorded plan (3 rows) wins over a new shard size
    assert calls == [range(0, 3), range(3, 6)]
    assert torch.equal(out["x"], torch.arange(10, dtype=torch.float64) ** 2) and out["y"].shape == (2, 10)
    with pytest.raises(ShardsPending):
        map_shards(10, 3, compute, Job(0, 2))  # no store, no process group: the other rank's rows are nowhere


def test_sharded_scores_equal_the_single_process_ones_bit_for_bit(tmp_path):
    model = tiny_dit()
    data = synthetic_latent_set(n=20)
    config = ScoreConfig(n_timesteps=3, batch_size=2, timestep_chunk=2)
    g = torch.Generator().manual_seed(0)
    target, _ = split_params(model, target_params(model, "all"))
    deltas = [{k: 1e-2 * torch.randn(v.shape, generator=g) for k, v in target.items()} for _ in range(2)]
    whole = score_many(model, deltas, data, config, False)
    store = ShardStore(tmp_path / "scores")
    with pytest.raises(ShardsPending):
        score_many(model, deltas, data, config, False, job=Job(0, 2), store=store)
    finished = sorted(store.root.glob("rows-*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in finished}
    merged = score_many(model, deltas, data, config, False, store=store)
    assert torch.equal(merged, whole)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the dead rank's finished shards were reused


def test_sharded_base_losses_resume_from_their_cache_shards(tmp_path):
    model = tiny_dit()
    data = synthetic_latent_set(n=20)
    config = ScoreConfig(n_timesteps=3, batch_size=2, timestep_chunk=3)
    whole = base_losses(model, data, config, True)
    with pytest.raises(ShardsPending):
        base_losses(model, data, config, True, cache_dir=tmp_path, job=Job(1, 2))
    assert not list(tmp_path.glob("*.safetensors")) and list(tmp_path.glob("*.shards/rows-*"))
    assert torch.equal(base_losses(model, data, config, True, cache_dir=tmp_path), whole)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and not list(tmp_path.glob("*.shards"))


def test_a_fisher_rank_that_died_leaves_its_rows_done_and_the_rerun_computes_only_the_rest(tmp_path, monkeypatch, tiny_model,
                                                                                           tiny_latents):
    config = FisherConfig(n_timesteps=2, batch_size=2, sample_chunk=8)
    out = tmp_path / "fisher"
    fit_fisher(tiny_model, tiny_latents, config, out, job=Job(1, 2))  # rank 1's half; rank 0 "died"
    shards = SumShards(out / "partial")
    done = shards.covered()
    assert done and not (out / "config.json").exists()
    computed = []
    real = fisher_module.batch_square_sums

    def counting(task, target, frozen, batch, cfg):
        computed.extend(batch.ids)
        return real(task, target, frozen, batch, cfg)

    monkeypatch.setattr(fisher_module, "batch_square_sums", counting)
    fit_fisher(tiny_model, tiny_latents, config, out)  # one process finishes the job
    train = LatentSet.load(tiny_latents).subset("train")
    assert len(computed) == len(train) - sum(b - a for a, b in done)
    merged = load_safetensors(out / "fisher.safetensors")
    whole = compute_fisher(load_model(tiny_model), LatentSet.load(tiny_latents), config)
    for k, f in whole.diag.items():
        # only the order of the float64 additions differs, ~1e-16 relative: the float32 F agrees to its last bit or one ulp
        assert torch.allclose(merged[k], f, rtol=2.5e-7, atol=0), k
    assert not (out / "partial").exists()


def test_index_build_ranks_build_their_blocks_and_a_rerun_finishes(tmp_path, tiny_model, tiny_latents):
    fisher = tmp_path / "fisher"
    fit_fisher(tiny_model, tiny_latents, FisherConfig(n_timesteps=2, batch_size=2, sample_chunk=8), fisher)
    config = IndexConfig(dim=16, projection="gaussian", score=ScoreConfig(n_timesteps=2, batch_size=2), shard_items=2, sample_chunk=8)
    n = len(LatentSet.load(tiny_latents).subset("train"))
    ranges = [(a, min(n, a + 2)) for a in range(0, n, 2)]
    out = tmp_path / "index"
    assert build_index(tiny_model, tiny_latents, fisher, config, out, job=Job(1, 2)) is None  # rank 1's block only
    built = [shard_path(out, a, b).exists() for a, b in ranges]
    assert built == [i >= len(ranges) // 2 for i in range(len(ranges))]
    index = build_index(tiny_model, tiny_latents, fisher, config, out)  # one process finishes rank 0's block
    whole = build_index(tiny_model, tiny_latents, fisher, config, tmp_path / "whole")
    assert index is not None and whole is not None
    assert all(np.array_equal(a, b) for a, b in zip(index.shards(), whole.shards(), strict=True))


class _SlowReader(ShardStore):
    """A store whose rank-1 reads start late: rank 0 is done and clears the store first unless map_shards waits."""

    def __init__(self, root, rank):
        super().__init__(root)
        self.rank = rank

    def load(self, rows):
        if self.rank == 1:
            import time

            time.sleep(1.0)
        return super().load(rows)


def _map_then_clear(rank, world, init_file, root, out_file):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        job = Job(rank, world, joined=True)
        store = _SlowReader(root, rank)
        out = map_shards(8, 2, lambda rows: {"x": torch.arange(rows.start, rows.stop, dtype=torch.float64)}, job, store)
        if job.main:
            store.clear()  # as base_losses and attribute do once the merged result is written
        torch.save(out["x"].tolist(), f"{out_file}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_no_rank_clears_the_shard_store_before_every_rank_has_read_it(tmp_path):
    init_file, root, out_file = tmp_path / "init", tmp_path / "shards", tmp_path / "out"
    torch.multiprocessing.spawn(_map_then_clear, args=(2, str(init_file), str(root), str(out_file)), nprocs=2, join=True)
    for rank in range(2):
        assert torch.load(f"{out_file}.{rank}") == list(range(8))


def test_map_shards_shows_a_progress_bar_over_the_pending_shards(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SONGTRACE_QUIET", "0")
    store = ShardStore(tmp_path / "s")
    out = map_shards(4, 2, lambda rows: {"x": torch.arange(rows.start, rows.stop, dtype=torch.float64)}, SINGLE, store,
                     desc="unlearn", unit="query")
    assert torch.equal(out["x"], torch.arange(4, dtype=torch.float64))
    err = capsys.readouterr().err
    assert "unlearn" in err and "/2" in err and "query" in err  # the bar counts the 2 pending shards, in the unit given


def test_single_process_attribution_keeps_deltas_in_memory(tmp_path):
    """One process writes no δ to the shard store (a full copy of the targeted weights per query); only score shards."""
    from toy_attribution_model import TwoLayer

    from songtrace.attribution import AttributeConfig, QueryContext, UnlearnConfig, attribute_queries, resolve_query

    model = TwoLayer(channels=3, hidden=5, frames=6)
    latents = synthetic_latent_set(n=12, channels=3, length=6)
    fisher = compute_fisher(model, latents, FisherConfig(n_timesteps=4))
    queries = [resolve_query(f"train:{i}", QueryContext(latents=latents)) for i in ("s000", "s001")]
    config = AttributeConfig(unlearn=UnlearnConfig(lr=1e-3, n_timesteps=8, mask="none"), score=ScoreConfig(n_timesteps=4))
    in_memory = attribute_queries(model, fisher, latents, queries, config)
    stored = attribute_queries(model, fisher, latents, queries, config, shard_dir=tmp_path / "shards")
    assert not (tmp_path / "shards" / "deltas").exists()
    assert sorted((tmp_path / "shards" / "scores").glob("rows-*.safetensors"))  # scoring still resumes from its shards
    for a, b in zip(in_memory, stored, strict=True):
        assert torch.equal(a.scores, b.scores) and all(torch.equal(a.delta[k], b.delta[k]) for k in a.delta)
