"""`torchrun --nproc-per-node 2 songtrace fisher | attribute | index build` with gloo on the CPU: merged results = one process's.

Scores and the index: bit for bit (every shard is whole batches, so each batch holds the same items, shapes and
code path as in one process, one torch thread each). Fisher: the ranks' float64 sums are added in
another order than one process adds its batches (relative error ~1e-16), so the float32 F agrees to
within one unit in the last place (in practice nearly every entry is identical).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from songtrace.artifacts import load_safetensors, read_json, verify_artifact
from songtrace.cli import app
from songtrace.data.latents import LatentSet

pytestmark = pytest.mark.slow


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    """`songtrace ARGS` under torchrun with `nproc` CPU processes of one torch thread each."""
    env = {**os.environ, "SONGTRACE_THREADS": "1", "OMP_NUM_THREADS": "1", "SONGTRACE_QUIET": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "songtrace.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)


def test_two_gloo_ranks_give_the_single_process_fisher_and_scores(tmp_path, tiny_model, tiny_latents):
    home = tmp_path / "home"
    common = ["--home", str(home), "--model", str(tiny_model), "--latents", str(tiny_latents)]
    fisher_args = ["fisher", *common, "--timesteps", "2", "--batch-size", "2", "--sample-chunk", "4"]
    one = CliRunner().invoke(app, [*fisher_args, "--name", "one", "--json"])
    assert one.exit_code == 0, one.output
    two = torchrun([*fisher_args, "--name", "two", "--json"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout)["n_items"] == json.loads(one.stdout)["n_items"]  # rank 0 alone printed its summary
    f1, f2 = (load_safetensors(home / "fisher" / name / "fisher.safetensors") for name in ("one", "two"))
    assert sorted(f1) == sorted(f2)
    for k in f1:
        assert torch.allclose(f2[k], f1[k], rtol=2.5e-7, atol=0), k
    assert read_json(home / "fisher" / "two" / "config.json")["ranks"] == 2
    assert not (home / "fisher" / "two" / "partial").exists()
    assert verify_artifact(home / "fisher" / "two", level="full") == []  # the completion marker lists exactly what rank 0 left

    train = LatentSet.load(tiny_latents).subset("train")
    queries = ["--query", f"train:{train.ids[0]}", "--query", f"train:{train.ids[3]}"]
    attr_args = ["attribute", *common, "--fisher", "one", *queries, "--lr", "0.01", "--timesteps", "8", "--score-timesteps", "2",
                 "--batch-size", "2", "--json"]
    one = CliRunner().invoke(app, [*attr_args, "--out", str(tmp_path / "a1"), "--no-cache"])
    assert one.exit_code == 0, one.output
    two = torchrun([*attr_args, "--out", str(tmp_path / "a2")])
    assert two.returncode == 0, two.stderr[-3000:]
    s1, s2 = pd.read_parquet(tmp_path / "a1" / "scores.parquet"), pd.read_parquet(tmp_path / "a2" / "scores.parquet")
    assert s1[["query_id", "train_id", "rank"]].equals(s2[["query_id", "train_id", "rank"]])
    assert (s1["score"].to_numpy() == s2["score"].to_numpy()).all()  # bit for bit
    record = read_json(tmp_path / "a2" / "config.json")
    assert record["ranks"] == 2 and not (tmp_path / "a2" / "shards").exists()
    assert verify_artifact(tmp_path / "a1", level="full") == [] and verify_artifact(tmp_path / "a2", level="full") == []
    assert len(list((home / "cache" / "base_losses").glob("*.safetensors"))) == 1  # the sharded base losses were merged into the cache

    index_args = ["index", "build", *common, "--fisher", "one", "-k", "16", "--projection", "gaussian", "--timesteps", "2",
                  "--batch-size", "2", "--shard-items", "4", "--json"]
    one = CliRunner().invoke(app, [*index_args, "--name", "i1"])
    assert one.exit_code == 0, one.output
    two = torchrun([*index_args, "--name", "i2"])
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout)["complete"] and read_json(home / "index" / "i2" / "config.json")["ranks"] == 2
    assert verify_artifact(home / "index" / "i2", level="full") == []
    shards1, shards2 = (sorted((home / "index" / name / "shards").glob("*.npy")) for name in ("i1", "i2"))
    assert [p.name for p in shards1] == [p.name for p in shards2] and len(shards1) > 1
    assert all(np.array_equal(np.load(a), np.load(b)) for a, b in zip(shards1, shards2, strict=True))
