"""`torchrun --nproc-per-node 2 songtrace selfinfluence` with gloo on the CPU: the grid equals one process's, bit for bit.

Every rank runs the same search; each scoring pass (base losses included) is sharded over the ranks in
whole batches and gathered, so every τ, and with it every rank statistic of the grid, is the single-process one
(the embedding similarities agree to rtol 1e-9: the audio embeddings are computed in another process).
The Fisher is fitted once beforehand and shared, so that the grids differ only by the sharding of the scoring.
"""

import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from songtrace.artifacts import verify_artifact
from songtrace.attribution import FisherConfig, fit_fisher
from songtrace.cli import app

pytestmark = pytest.mark.slow


def _home(root, tiny_world, tiny_codec, tiny_model, tiny_latents):
    for stage, src in (("worlds", tiny_world), ("codecs", tiny_codec), ("models", tiny_model), ("latents", tiny_latents)):
        (root / stage).mkdir(parents=True)
        (root / stage / "demo").symlink_to(src)
    return root


def test_two_gloo_ranks_give_the_single_process_grid(tmp_path, tiny_world, tiny_codec, tiny_model, tiny_latents):
    fisher = tmp_path / "fisher"
    fit_fisher(tiny_model, tiny_latents, FisherConfig(group="all", n_timesteps=2), fisher)
    args = ["selfinfluence", "--fisher", str(fisher), "--targets", "2", "--stage-a-targets", "1", "--lrs", "1e-4,1e-2", "--steps", "1",
            "--groups", "all", "--masks", "mixed", "--score-timesteps", "2", "--unlearn-timesteps", "4", "--embedder", "dsp", "--no-fd",
            "--no-save-best", "--json"]
    one_home, two_home = (_home(tmp_path / name, tiny_world, tiny_codec, tiny_model, tiny_latents) for name in ("h1", "h2"))
    one = CliRunner().invoke(app, [*args, "--home", str(one_home), "--out", str(tmp_path / "si1")])
    assert one.exit_code == 0, one.output
    env = {**os.environ, "SONGTRACE_THREADS": "1", "OMP_NUM_THREADS": "1", "SONGTRACE_QUIET": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "songtrace.cli", *args,
                          "--home", str(two_home), "--out", str(tmp_path / "si2")], capture_output=True, text=True, env=env, timeout=1800)
    assert two.returncode == 0, two.stderr[-3000:]
    assert verify_artifact(tmp_path / "si2", level="full") == []
    for name in ("grid.parquet", "targets.parquet"):
        a, b = pd.read_parquet(tmp_path / "si1" / name), pd.read_parquet(tmp_path / "si2" / name)
        keep = [c for c in a.columns if "seconds" not in c and "wall" not in c]
        exact = [c for c in keep if "rank" in c or a[c].dtype.kind not in "fc"]  # the settings and every rank statistic of τ
        assert len(a) > 0 and list(a.columns) == list(b.columns) and any("rank" in c for c in exact)
        pd.testing.assert_frame_equal(a[exact], b[exact], check_exact=True)
        # embedding similarities of the top-ranked items: the same items, embeddings computed in another process (last bits)
        pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=False, rtol=1e-9)
