"""kill -9 at random moments of Fisher, scoring, the self-influence grid and training; two writers at once.

Each stage runs as a subprocess on a copy of the quick demo home, sized to take several seconds.
An uninterrupted run gives the reference. Then the same command is started and killed (SIGKILL)
at a random moment once it is at work (0-3 s after it first wrote to its artifact: its pending
record, a checkpoint, a grid row), again and again, and finally rerun to the end: the rerun must finish, every file
left behind by a kill must be readable or absent (no torn file), and the result must equal the
reference bit for bit (the tensors or scores, and the content hash the artifact records).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRAIN_DRIVER = (
    "import sys; from songtrace.model.train import TrainConfig, train_model; "
    "train_model(TrainConfig(steps=120, batch_size=8, checkpoint_every=10, valid_every=1000, log_every=10), "
    "{'width': 16, 'depth': 2, 'heads': 2}, sys.argv[1] + '/latents/demo', sys.argv[1] + '/models/k')"
)


def stages(home: Path, work: Path) -> dict[str, dict[str, Any]]:
    """name -> the command and the files whose bytes must equal the uninterrupted run's."""
    cli = [sys.executable, "-m", "songtrace.cli"]
    h = ["--home", str(home)]
    return {
        "fisher": {"cmd": [*cli, "fisher", "--name", "k", "--timesteps", "96", "--batch-size", "2", "--checkpoint-every", "1", *h],
                   "dir": home / "fisher" / "k", "tensors": ["fisher.safetensors"]},
        "scoring": {"cmd": [*cli, "attribute", "-q", "train:t0000", "-q", "train:t0001", "--out", str(work / "run"), "--timesteps", "16",
                            "--lr", "1e-6", "--steps", "2", "--score-timesteps", "96", "--batch-size", "2", "--no-cache", *h],
                    "dir": work / "run", "tables": ["scores.parquet"]},
        "grid": {"cmd": [*cli, "selfinfluence", "--out", str(work / "si"), "--targets", "4", "--stage-a-targets", "2", "--lrs",
                         "1e-7,1e-6,1e-5", "--lr-mode", "absolute", "--steps", "1,2", "--groups", "all,to_kv", "--masks", "mixed,none",
                         "--no-fd", "--score-timesteps", "4", "--unlearn-timesteps", "8", "--no-save-best", *h],
                 "dir": work / "si", "tables": ["grid.parquet"]},
        "training": {"cmd": [sys.executable, "-c", TRAIN_DRIVER, str(home)], "dir": home / "models" / "k",
                     "tensors": ["model.safetensors"]},
    }


def _copy_home(base_home: Path, root: Path) -> tuple[Path, Path]:
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(base_home, root / "home", symlinks=True)
    (root / "work").mkdir(parents=True)
    return root / "home", root / "work"


def _env() -> dict[str, str]:
    return {**os.environ, "SONGTRACE_QUIET": "1", "SONGTRACE_THREADS": os.environ.get("SONGTRACE_THREADS", "1")}


def _run(cmd: list[str]) -> tuple[int, float, str]:
    start = time.perf_counter()
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    return p.returncode, time.perf_counter() - start, p.stderr[-500:]


def _snapshot(out_dir: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under `out_dir` but the lock: a change means the stage wrote its state."""
    if not out_dir.exists():
        return {}
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in out_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def _kill_during(cmd: list[str], out_dir: Path, delay: float, limit: float = 900.0) -> bool:
    """Start `cmd`, wait until it is at work (it wrote or changed a file of its artifact: its pending record, a checkpoint of
    partial sums, a grid row), then SIGKILL it `delay` s later; True when it was still running then (the kill landed
    mid-work). A fixed delay from the start would miss on a loaded machine, where start-up alone varies by tens of seconds."""
    before = _snapshot(out_dir)
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.perf_counter()
    while p.poll() is None and _snapshot(out_dir) == before and time.perf_counter() - t0 < limit:
        time.sleep(0.05)
    try:
        p.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def _torn(out_dir: Path) -> list[str]:
    """Files a kill left that cannot be read (a torn write)."""
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    bad = []
    for p in sorted(out_dir.rglob("*")) if out_dir.exists() else []:
        if not p.is_file() or p.name.endswith(".tmp") or p.name.endswith(".lock"):
            continue
        try:
            if p.suffix == ".safetensors":
                load_file(str(p))
            elif p.suffix == ".parquet":
                pq.read_table(p)
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".jsonl":
                for line in p.read_text().splitlines()[:-1]:  # a torn last line is repaired by the grid
                    json.loads(line)
        except Exception:
            bad.append(str(p.relative_to(out_dir)))
    return bad


def _result(spec: dict[str, Any]) -> dict[str, Any]:
    """What must be equal bit for bit: tensor bytes, table values and the recorded content hash."""
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    from songtrace.artifacts import hash_table

    d = spec["dir"]
    out: dict[str, Any] = {"content_hash": json.loads((d / "config.json").read_text()).get("content_hash")}
    for name in spec.get("tensors", []):
        out[name] = {k: hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in load_file(str(d / name)).items()}
    for name in spec.get("tables", []):
        df = pq.read_table(d / name).to_pandas()
        df = df.drop(columns=[c for c in df.columns if "seconds" in c])
        out[name] = hash_table(df)  # exact values (to_json keeps only 10 significant digits)
    return out


def run_kills(base_home: Path, work: Path, kills: int = 3, seed: int = 0) -> dict[str, Any]:
    """Kill each stage `kills` times at random moments, rerun it to the end, compare with the uninterrupted run."""
    rng = random.Random(seed)
    report: dict[str, Any] = {}
    for name in ("fisher", "scoring", "grid", "training"):
        ref_home, ref_work = _copy_home(base_home, work / f"{name}-ref")
        spec = stages(ref_home, ref_work)[name]
        rc, ref_seconds, err = _run(spec["cmd"])
        if rc != 0:
            report[name] = {"error": f"the uninterrupted run failed: {err}"}
            continue
        reference = _result(spec)
        home, wdir = _copy_home(base_home, work / f"{name}-killed")
        spec = stages(home, wdir)[name]
        moments, landed, torn = [], 0, []
        for _ in range(kills):
            delay = rng.uniform(0.0, 3.0)
            moments.append(round(delay, 2))
            landed += _kill_during(spec["cmd"], spec["dir"], delay)
            torn += _torn(spec["dir"])
        rc, seconds, err = _run(spec["cmd"])
        entry: dict[str, Any] = {"reference_seconds": round(ref_seconds, 1), "kill_delays_after_work_began_s": moments,
                                 "kills_landed": landed, "torn_files": sorted(set(torn)), "rerun_rc": rc,
                                 "rerun_seconds": round(seconds, 1)}
        if rc != 0:
            entry["rerun_error"] = err
        else:
            got = _result(spec)
            entry["bit_for_bit"] = got == reference
            entry["differs_in"] = sorted(k for k in reference if got.get(k) != reference[k])
        report[name] = entry
        shutil.rmtree(work / f"{name}-ref", ignore_errors=True)
        shutil.rmtree(work / f"{name}-killed", ignore_errors=True)
    report["concurrent_overwrite"] = concurrent_writers(base_home, work / "concurrent")
    stages_ok = [v for k, v in report.items() if k != "concurrent_overwrite" and isinstance(v, dict)]
    report["tally"] = {
        "stages": len(stages_ok),
        "kills": sum(v.get("kills_landed", 0) for v in stages_ok),
        "reruns_completed": sum(v.get("rerun_rc") == 0 for v in stages_ok),
        "bit_for_bit": sum(bool(v.get("bit_for_bit")) for v in stages_ok),
        "torn_files": sum(len(v.get("torn_files", [])) for v in stages_ok),
        "concurrent_lost": report["concurrent_overwrite"].get("lost", 0),
    }
    return report


def concurrent_writers(base_home: Path, root: Path) -> dict[str, Any]:
    """Two `fisher --overwrite` runs with different configs into one artifact at the same moment."""
    home, _ = _copy_home(base_home, root)
    cli = [sys.executable, "-m", "songtrace.cli", "fisher", "--name", "c", "--overwrite", "--batch-size", "2", "--home", str(home)]
    procs = [subprocess.Popen([*cli, "--timesteps", str(t), "--json"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for t in (12, 13)]
    outs = [p.communicate() for p in procs]
    rcs = [p.returncode for p in procs]
    record = json.loads((home / "fisher" / "c" / "config.json").read_text()) if (home / "fisher" / "c" / "config.json").exists() else {}
    on_disk = record.get("config", {}).get("n_timesteps")
    succeeded = [t for t, rc in zip((12, 13), rcs, strict=True) if rc == 0]
    # a writer that reported success but whose result is not what is on disk lost its result
    lost = sum(t != on_disk for t in succeeded) if len(succeeded) == 2 else 0
    shutil.rmtree(root, ignore_errors=True)
    return {"exit_codes": rcs, "on_disk_timesteps": on_disk, "lost": lost,
            "messages": [o[1].strip().splitlines()[-1][:200] if o[1].strip() else "" for o in outs]}
