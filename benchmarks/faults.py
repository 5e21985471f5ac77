"""Fault injection: issue 15's sweep of bad inputs, plus kill -9 at random moments of the long stages.

    SONGTRACE_THREADS=1 .venv/bin/python benchmarks/faults.py [--work DIR] [--only NAME,...] [--no-kills] [--kills N] [--out FILE]

1. The sweep (`fault_cases.py`): every case runs `songtrace ARGV` (in this process, through the
   same entry point as the console script) on its own copy of a quick demo home, and is tallied as
   - clear: refused with exit code 2 and one line `error: ...` (what a bad input must give);
   - handled: exit 0 and the result checks out (what a good or repairable input must give);
   - traceback: an uncaught exception (or exit code 1);
   - silent: exit 0 where a refusal was due, or a result that does not check out (NaN saved as finished, ...);
   - unclear: refused, but not in one line; wrongly refused: a valid input refused;
   - lost: a finished artifact of the home (world, codec, latents, model, Fisher) changed that the
     case had no right to change (counted on top of the outcome above).
2. Kills (`fault_kills.py`): Fisher, scoring (attribute), the self-influence grid and training run
   as `python -m songtrace.cli ...` subprocesses, are killed with SIGKILL at random moments, rerun
   until they finish, and their artifacts compared with an uninterrupted run, bit for bit.

Writes the tally and every case's outcome to benchmarks/results/faults.json (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("SONGTRACE_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).parent))

from fault_cases import Case, Env, cases
from fault_kills import run_kills

RESULTS = Path(__file__).parent / "results"
PROTECTED = ("worlds/demo", "codecs/demo", "latents/demo", "models/demo", "fisher/demo")


def build_home(work: Path) -> Path:
    """The quick demo home every case copies (built once per work folder)."""
    home = work / "base-home"
    if not (home / "demo" / "summary.json").exists():
        env = {**os.environ, "SONGTRACE_QUIET": "1"}
        subprocess.run([sys.executable, "-m", "songtrace.cli", "demo", "--quick", "--home", str(home)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    return home


def fingerprint(home: Path) -> dict[str, str]:
    """sha256 of every file of the protected artifacts (a change is data lost unless the case may change it)."""
    out = {}
    for rel in PROTECTED:
        root = home / rel
        for p in sorted(root.rglob("*")) if root.is_dir() else []:
            if p.is_file() and not p.name.startswith("."):
                out[str(p.relative_to(home))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], env: Env, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`songtrace ARGV` in this process: exit code, stdout, stderr and the traceback of an uncaught exception."""
    from songtrace.cli import main

    saved = {k: os.environ.get(k) for k in (extra_env or {})}
    os.environ.update(extra_env or {})
    out, err = io.StringIO(), io.StringIO()
    tb = None
    cwd = os.getcwd()
    try:
        os.chdir(env.work)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                rc = 0
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                tb = traceback.format_exc()
                rc = 1
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "traceback": tb}


def classify(case: Case, result: dict[str, Any], problem: str | None) -> str:
    """The outcome of one case (see the module doc)."""
    if result["traceback"] is not None or result["rc"] not in (0, 2, 130) or "Traceback (most recent call last)" in result["stderr"]:
        return "traceback"
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    if case.expect == "refuse":
        if result["rc"] == 0:
            return "silent"
        errors = [ln for ln in lines if ln.startswith("error:")]
        return "clear" if len(errors) == 1 and result["rc"] == 2 and len(lines[-1]) > 10 else "unclear"
    if result["rc"] != 0:
        return "wrongly_refused"
    return "silent" if problem else "handled"


def run_case(case: Case, base_home: Path, scratch: Path) -> dict[str, Any]:
    """Run one case on a fresh copy of the home; its outcome record."""
    counter = {"n": 0}

    def fresh() -> Env:
        counter["n"] += 1
        root = scratch / f"{case.name}-{counter['n']}"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(base_home, root / "home", symlinks=True)
        (root / "work").mkdir(parents=True)
        return Env(root / "home", root / "work", lambda argv, e: run_cli(argv, e, case.env), fresh)

    env = fresh()
    started = time.perf_counter()
    record: dict[str, Any] = {"name": case.name, "group": case.group, "expect": case.expect, "issue": case.issue}
    try:
        if case.setup is not None:
            case.setup(env)
    except Exception as e:
        record.update(outcome="setup_failed", detail=f"{type(e).__name__}: {e}"[:400])
        return record
    before = fingerprint(env.home)
    result = run_cli(env.fill(case.argv), env, case.env)
    problem = None
    if result["rc"] == 0 and result["traceback"] is None and case.check is not None:
        try:
            problem = case.check(env, result)
        except Exception as e:
            problem = f"result unreadable: {type(e).__name__}: {e}"[:300]
    if result["rc"] == 0 and case.expect == "refuse" and case.check is not None:
        with contextlib.suppress(Exception):
            problem = case.check(env, result)
    after = fingerprint(env.home)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                     and not any(k.startswith(m + "/") for m in case.may_change))
    outcome = classify(case, result, problem)
    lines = [ln for ln in result["stderr"].splitlines() if ln.strip()]
    record.update(
        outcome=outcome,
        lost=changed[:5],
        rc=result["rc"],
        message=(lines[-1] if lines else "")[:300],
        problem=problem,
        traceback=(result["traceback"] or "").strip().splitlines()[-1:] if result["traceback"] else None,
        seconds=round(time.perf_counter() - started, 2),
    )
    shutil.rmtree(env.home.parent, ignore_errors=True)
    return record


def tally(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per outcome (and data lost), over all cases and over the ones issue 15 names."""

    def count(rows: list[dict[str, Any]]) -> dict[str, int]:
        out = {k: 0 for k in ("clear", "handled", "traceback", "silent", "unclear", "wrongly_refused", "setup_failed")}
        for r in rows:
            out[r["outcome"]] = out.get(r["outcome"], 0) + 1
        out["lost"] = sum(bool(r.get("lost")) for r in rows)
        out["cases"] = len(rows)
        out["survived"] = out["clear"] + out["handled"] - sum(bool(r.get("lost")) and r["outcome"] in ("clear", "handled") for r in rows)
        return out

    return {"all": count(records), "named_in_issue": count([r for r in records if r["issue"]]),
            "by_group": {g: count([r for r in records if r["group"] == g]) for g in dict.fromkeys(r["group"] for r in records)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/songtrace-faults", help="scratch folder (the quick demo home is built here once)")
    parser.add_argument("--only", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--no-kills", action="store_true", help="skip the kill -9 part")
    parser.add_argument("--kills", type=int, default=3, help="random kill moments per stage")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--label", default="after", help="what code this measures (before / after), stored in the JSON")
    parser.add_argument("--out", default=str(RESULTS / "faults.json"), help="JSON to write")
    parser.add_argument("--kills-from", default=None, help="take the kill -9 part from this earlier faults JSON instead of rerunning it")
    args = parser.parse_args()
    import songtrace

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base_home = build_home(work)
    chosen = [c for c in cases() if not args.only or c.name in args.only.split(",")]
    records = []
    started = time.perf_counter()
    for i, case in enumerate(chosen, 1):
        rec = run_case(case, base_home, work / "cases")
        records.append(rec)
        print(f"[{i}/{len(chosen)}] {rec['outcome']:>15}{' LOST' if rec.get('lost') else ''}  {case.name}: "
              f"{(rec.get('problem') or rec.get('message') or rec.get('detail') or '')[:150]}", flush=True)
    sweep_seconds = time.perf_counter() - started
    if args.kills_from:
        kills = json.loads(Path(args.kills_from).read_text())["kills"]
    else:
        kills = None if args.no_kills else run_kills(base_home, work / "kills", args.kills, args.seed)
    result = {
        "benchmark": "faults",
        "label": args.label,
        "songtrace_version": songtrace.__version__,
        "source": str(Path(songtrace.__file__).parent),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "sweep_seconds": round(sweep_seconds, 1),
        "tally": tally(records),
        "kills": kills,
        "cases": records,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(json.dumps({"tally": result["tally"]["all"], "named_in_issue": result["tally"]["named_in_issue"],
                      "kills": None if kills is None else kills["tally"]}, indent=2))


if __name__ == "__main__":
    main()
