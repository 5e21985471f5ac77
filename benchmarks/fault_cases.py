"""The demanding user's bad inputs (issue 15's sweep): each case is a command line, what it should do, and how to tell.

A case runs `songtrace ARGV` on its own copy of a quick demo home. `expect="refuse"` means it must
end in exit code 2 with one line `error: ...`; `expect="ok"` means exit 0 and `check` (when given)
finds nothing wrong with the result. The finished artifacts of the home (world, codec, latents,
model, Fisher) are fingerprinted before and after: a change the case is not allowed to make
(`may_change`) is data lost. Placeholders in ARGV: {home}, {work} (the case's scratch folder),
{gen} (a generated latent of the demo), {wav} (a demo track).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ATTR = ["--timesteps", "8", "--score-timesteps", "32", "--lr", "1e-6", "--steps", "1"]  # a quick attribution
TRAIN = ["--steps", "4", "--width", "16", "--depth", "2", "--heads", "2", "--batch-size", "4"]  # a quick training run
SI = ["--targets", "2", "--stage-a-targets", "2", "--lrs", "1e-6", "--lr-mode", "absolute", "--steps", "1", "--groups", "all",
      "--masks", "mixed", "--no-fd", "--score-timesteps", "2", "--unlearn-timesteps", "4", "--no-save-best"]


@dataclasses.dataclass
class Env:
    """Where a case runs: its home copy and scratch folder; `run` runs another command there (setup), `clean` on a fresh copy."""

    home: Path
    work: Path
    runner: Callable[[list[str], Env], dict[str, Any]]
    fresh: Callable[[], Env]

    def run(self, argv: list[str], allow_fail: bool = False) -> dict[str, Any]:
        """Run a command in this case's home (a setup step); an unexpected failure stops the case."""
        result = self.runner(self.fill(argv), self)
        if result["rc"] != 0 and not allow_fail:
            raise RuntimeError(f"setup command {argv[:2]} failed: {result['stderr'][-300:]}")
        return result

    def clean(self, argv: list[str]) -> tuple[Env, dict[str, Any]]:
        """Run a command on a fresh copy of the home (a reference result)."""
        env = self.fresh()
        return env, env.runner(env.fill(argv), env)

    @property
    def gen(self) -> Path:
        return sorted((self.home / "demo" / "generations").glob("*.latent.safetensors"))[0]

    @property
    def wav(self) -> Path:
        return sorted((self.home / "worlds" / "demo" / "audio").glob("*.wav"))[0]

    def fill(self, argv: list[str]) -> list[str]:
        return [a.format(home=self.home, work=self.work, gen=self.gen, wav=self.wav) for a in argv]


@dataclasses.dataclass
class Case:
    """One bad (or tricky) input and what songtrace must do with it."""

    name: str
    group: str
    argv: list[str]
    expect: str = "refuse"  # "refuse" (exit 2, one line) or "ok" (exit 0, check passes)
    setup: Callable[[Env], None] | None = None
    check: Callable[[Env, dict[str, Any]], str | None] | None = None  # a problem with an "ok" result, or None
    may_change: tuple[str, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    issue: bool = False  # named in issue 15's list


# --------------------------------------------------------------------------- file mutations


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def _save(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def poison(path: Path, where: str = "middle") -> None:
    """Put a NaN into the largest float tensor of a safetensors file (same size: only a content check sees it)."""
    t = _tensors(path)
    name = max((k for k, v in t.items() if v.is_floating_point()), key=lambda k: t[k].numel())
    flat = t[name].flatten().clone()
    flat[{"middle": flat.numel() // 2, "first": 0, "last": -1}[where]] = float("nan")
    t[name] = flat.reshape(t[name].shape)
    _save(path, t, _metadata(path))  # the header kept: the same size, so only a content check can see the NaN


def latent_variant(env: Env, out: Path, **changes: Any) -> None:
    """The demo's first generated latent with some tensors replaced (a callable gets the old tensor)."""
    t = _tensors(env.gen)
    for k, v in changes.items():
        if v is None:
            t.pop(k, None)
        else:
            t[k] = v(t[k]) if callable(v) else v
    _save(out, t)


def write_wav(path: Path, data: np.ndarray, sr: int = 16000) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, format="WAV", subtype="FLOAT" if not np.isfinite(data).all() else "PCM_16")


def tone(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.2 * np.sin(2 * np.pi * 220 * (1 + seed) * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def import_folder(env: Env, rows: list[tuple[str, str, str]] | None = None, n: int = 4, extra: Callable[[Path], None] | None = None,
                  header: str = "file,caption,artist") -> None:
    """A folder `{work}/music` of n short tone WAVs and `captions.csv` (rows: file, caption, artist)."""
    music = env.work / "music"
    music.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_wav(music / f"t{i}.wav", tone(1.0, seed=i))
    rows = rows if rows is not None else [(f"t{i}.wav", f"a tone number {i}", f"artist{i % 2}") for i in range(n)]
    lines = [header] + [",".join(r) for r in rows]
    (music / "captions.csv").write_text("\n".join(lines) + "\n")
    if extra is not None:
        extra(music)


IMPORT = ["world", "import", "{work}/music", "--captions", "{work}/music/captions.csv", "--name", "mine", "--home", "{home}",
          "--max-seconds", "2"]


# --------------------------------------------------------------------------- result checks


def _scores(run: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(run / "scores.parquet").to_pandas()


def finite_scores(run_rel: str) -> Callable[[Env, dict[str, Any]], str | None]:
    def check(env: Env, out: dict[str, Any]) -> str | None:
        df = _scores(env.work / run_rel)
        s = df["score"].to_numpy()
        if not np.isfinite(s).all():
            return f"{int((~np.isfinite(s)).sum())} non-finite scores saved as a finished run"
        if not np.abs(s).max() > 0:
            return "every score is 0"
        return None

    return check


def same_scores_as_clean(run_rel: str, argv: list[str]) -> Callable[[Env, dict[str, Any]], str | None]:
    """The run's scores equal those of the same command on a clean copy of the home, with no cache."""

    def check(env: Env, out: dict[str, Any]) -> str | None:
        bad = finite_scores(run_rel)(env, out)
        if bad:
            return bad
        ref_env, ref = env.clean([*argv, "--no-cache"])
        if ref["rc"] != 0:
            return f"the reference run failed: {ref['stderr'][-200:]}"
        a, b = _scores(env.work / run_rel)["score"].to_numpy(), _scores(ref_env.work / run_rel)["score"].to_numpy()
        return None if np.array_equal(a, b) else f"scores differ from a clean run (max |diff| {np.abs(a - b).max():.3g})"

    return check


def loads_finite(rel: str, file: str) -> Callable[[Env, dict[str, Any]], str | None]:
    """The artifact's tensor file is complete and finite after the command."""

    def check(env: Env, out: dict[str, Any]) -> str | None:
        try:
            t = _tensors(env.home / rel / file)
        except Exception as e:
            return f"{rel}/{file} unreadable after the command ({type(e).__name__})"
        for k, v in t.items():
            if v.is_floating_point() and not bool(v.isfinite().all()):
                return f"{rel}/{file} still holds NaN in {k} (kept as finished)"
        return None

    return check


def exit_ok(env: Env, out: dict[str, Any]) -> str | None:
    return None


def imported_durations(min_seconds: float) -> Callable[[Env, dict[str, Any]], str | None]:
    def check(env: Env, out: dict[str, Any]) -> str | None:
        import pyarrow.parquet as pq

        df = pq.read_table(env.home / "worlds" / "mine" / "manifest.parquet").to_pandas()
        short = df[df["duration"] < min_seconds]
        return f"imported {len(short)} track(s) shorter than {min_seconds} s" if len(short) else None

    return check


def no_outside_files(env: Env, out: dict[str, Any]) -> str | None:
    import pyarrow.parquet as pq

    manifest = env.home / "worlds" / "mine" / "manifest.parquet"
    if not manifest.exists():
        return None
    sources = pq.read_table(manifest).to_pandas()["source"].tolist()
    outside = [s for s in sources if s.startswith("/") or ".." in Path(s).parts]
    return f"imported files from outside the folder: {outside}" if outside else None


# --------------------------------------------------------------------------- the cases


def cases() -> list[Case]:
    h = ["--home", "{home}"]
    out: list[Case] = []

    def add(name: str, group: str, argv: list[str], **kw: Any) -> None:
        out.append(Case(name, group, argv, **kw))

    # ---- usage errors (typer's vendored click exceptions)
    add("lr-not-a-number", "usage", ["train", "--lr", "abc", *h], issue=True)
    add("unknown-option", "usage", ["attribute", "--bogus", *h], issue=True)
    add("missing-query", "usage", ["attribute", *h], issue=True)
    add("unknown-command", "usage", ["frobnicate"], issue=True)
    add("generate-without-prompt", "usage", ["generate", *h])
    add("timesteps-not-int", "usage", ["fisher", "--timesteps", "2.5", *h])
    add("world-import-missing-dir", "usage", ["world", "import", *h])
    add("extra-argument", "usage", ["world", "info", "surplus", *h])
    add("home-is-a-file", "usage", ["world", "info", "--home", "{work}/a-file"], setup=lambda e: (e.work / "a-file").write_text("x"),
        issue=True)
    add("out-is-a-file", "usage", ["attribute", "-q", "train:t0000", "--out", "{work}/a-file", *ATTR, *h],
        setup=lambda e: (e.work / "a-file").write_text("x"), issue=True)
    add("threads-not-a-number", "usage", ["world", "info", *h], env={"SONGTRACE_THREADS": "many"})
    add("read-only-home", "usage", ["world", "info", "--home", "/proc/songtrace-home"], issue=True)

    # ---- numeric options: NaN, inf, zero, negative, absurd
    for v, exp in (("nan", "refuse"), ("inf", "refuse"), ("-1", "refuse"), ("0", "refuse"), ("1e30", "refuse")):
        add(f"train-lr-{v}", "numbers", ["train", "--name", "x", *TRAIN, "--lr", v, *h], expect=exp, issue=v in ("nan",))
    add("train-steps-0", "numbers", ["train", "--name", "x", *TRAIN[2:], "--steps", "0", *h])
    add("train-steps-negative", "numbers", ["train", "--name", "x", *TRAIN[2:], "--steps", "-5", *h])
    add("train-batch-0", "numbers", ["train", "--name", "x", *TRAIN[:-2], "--batch-size", "0", *h])
    add("train-width-0", "numbers", ["train", "--name", "x", "--steps", "4", "--width", "0", *h])
    gen = ["generate", "--prompt", "a chorale", "--out", "{work}/g.wav", *h]
    for v in ("nan", "inf", "-1", "0"):
        add(f"generate-seconds-{v}", "numbers", [*gen, "--seconds", v], issue=v == "nan")
    add("generate-seconds-too-long", "numbers", [*gen, "--seconds", "1000"])
    add("generate-steps-0", "numbers", [*gen, "--seconds", "1", "--steps", "0"], issue=True)
    add("generate-steps-negative", "numbers", [*gen, "--seconds", "1", "--steps", "-3"], issue=True)
    for v in ("nan", "inf"):
        add(f"generate-cfg-{v}", "numbers", [*gen, "--seconds", "1", "--cfg", v], issue=True)
    add("generate-sampler-bogus", "numbers", [*gen, "--seconds", "1", "--sampler", "euler-x"])
    add("generate-empty-prompt", "numbers", ["generate", "--prompt", "", "--seconds", "1", "--out", "{work}/g.wav", *h])
    add("generate-ok", "numbers", [*gen, "--seconds", "1", "--steps", "4"], expect="ok", check=exit_ok)
    fis = ["fisher", "--name", "f2", "--timesteps", "2", *h]
    add("fisher-checkpoint-every-0", "numbers", [*fis, "--checkpoint-every", "0"], issue=True)
    add("fisher-timesteps-0", "numbers", ["fisher", "--name", "f2", "--timesteps", "0", *h])
    add("fisher-batch-negative", "numbers", [*fis, "--batch-size", "-1"])
    add("fisher-sample-chunk-0", "numbers", [*fis, "--sample-chunk", "0"])
    add("fisher-group-bogus", "numbers", [*fis, "--group", "bogus"])
    add("fisher-group-bad-regex", "numbers", [*fis, "--group", "re:("])
    add("fisher-group-regex-no-match", "numbers", [*fis, "--group", "re:^nothing$"])
    att = ["attribute", "-q", "train:t0000", "--out", "{work}/run", *h]
    base_attr = ["--timesteps", "8", "--score-timesteps", "32", "--steps", "1"]
    for v in ("nan", "inf", "1e30", "-1", "0"):
        add(f"attribute-lr-{v}", "numbers", [*att, *base_attr, "--lr", v], issue=v in ("nan", "inf", "1e30"))
    for v in ("nan", "-1", "inf"):
        add(f"attribute-damping-{v}", "numbers", [*att, *ATTR, "--damping", v], issue=v == "nan")
    add("attribute-steps-0", "numbers", [*att, *ATTR[:-2], "--steps", "0"])
    add("attribute-steps-9", "numbers", [*att, *ATTR[:-2], "--steps", "9"])
    add("attribute-timesteps-0", "numbers", [*att, "--timesteps", "0", "--lr", "1e-6"])
    add("attribute-score-timesteps-0", "numbers", [*att, "--timesteps", "8", "--score-timesteps", "0", "--lr", "1e-6"])
    add("attribute-top-0", "numbers", [*att, *ATTR, "--top", "0"])
    add("attribute-batch-0", "numbers", [*att, *ATTR, "--batch-size", "0"])
    add("attribute-mask-bogus", "numbers", [*att, *ATTR, "--mask", "sometimes"])
    add("attribute-damping-mode-bogus", "numbers", [*att, *ATTR, "--damping-mode", "sideways"])
    add("attribute-group-bogus", "numbers", [*att, *ATTR, "--group", "bogus"])
    add("attribute-seconds-nan", "numbers", ["attribute", "-q", "prompt:a chorale@0", "--seconds", "nan", "--out", "{work}/run", *ATTR, *h])
    add("attribute-ok", "numbers", [*att, *ATTR], expect="ok", check=finite_scores("run"))
    add("selfinfluence-targets-0", "numbers", ["selfinfluence", "--out", "{work}/si", *SI[2:], "--targets", "0", *h])
    add("selfinfluence-lrs-nan", "numbers", ["selfinfluence", "--out", "{work}/si", *[a if a != "1e-6" else "nan" for a in SI], *h])
    add("selfinfluence-damping-nan", "numbers", ["selfinfluence", "--out", "{work}/si", *SI, "--damping", "nan", *h])
    add("selfinfluence-steps-0", "numbers", ["selfinfluence", "--out", "{work}/si", *[a if a != "1" else "0" for a in SI], *h])
    add("world-build-tracks-0", "numbers", ["world", "build", "--tracks", "0", "--name", "w", *h])
    add("world-build-tracks-negative", "numbers", ["world", "build", "--tracks", "-3", "--name", "w", *h])
    add("world-build-max-seconds-nan", "numbers", ["world", "build", "--tracks", "2", "--max-seconds", "nan", "--name", "w", *h])
    add("world-build-rate-0", "numbers", ["world", "build", "--tracks", "2", "--sample-rate", "0", "--name", "w", *h])
    add("world-build-workers-0", "numbers", ["world", "build", "--tracks", "2", "--workers", "0", "--name", "w", *h])
    add("codec-steps-0", "numbers", ["codec", "train", "--steps", "0", "--name", "c", *h])
    add("encode-batch-0", "numbers", ["encode", "--batch-size", "0", "--name", "l", *h])
    add("embedder-window-nan", "numbers", ["embedder", "train", "--window", "nan", "--name", "e", *h])
    add("compare-queries-0", "numbers", ["compare", "--queries", "0", "--out", "{work}/cmp", *h])
    add("compare-cfg-nan", "numbers", ["compare", "--queries", "1", "--cfg-scale", "nan", "--out", "{work}/cmp", *h])
    add("baseline-method-bogus", "numbers", ["baseline", "--method", "bogus", "-q", "train:t0000", *h])
    add("baseline-top-0", "numbers", ["baseline", "--method", "embedding", "-q", "train:t0000", "--top", "0", *h])
    add("optout-lr-nan", "numbers", ["optout", "--artist", "Kilfenora Road", "--method", "ga", "--lr", "nan", "--name", "o", *h])
    add("optout-steps-0", "numbers", ["optout", "--artist", "Kilfenora Road", "--method", "ga", "--steps", "0", "--name", "o", *h])

    # ---- queries
    add("query-train-unknown", "queries", [*att[:2], "train:nope", *att[3:], *ATTR])
    add("query-file-missing", "queries", ["attribute", "-q", "{work}/none.latent.safetensors", "--out", "{work}/run", *ATTR, *h])
    add("query-unknown-form", "queries", ["attribute", "-q", "{work}/notes.txt", "--out", "{work}/run", *ATTR, *h])
    add("query-empty-prompt", "queries", ["attribute", "-q", "prompt:@0", "--out", "{work}/run", *ATTR, *h], issue=True)
    add("query-blank-prompt", "queries", ["attribute", "-q", "prompt:   @0", "--out", "{work}/run", *ATTR, *h])
    add("query-prompt-no-seed", "queries", ["attribute", "-q", "prompt:a chorale", "--out", "{work}/run", *ATTR, *h])
    add("query-prompt-bad-seed", "queries", ["attribute", "-q", "prompt:a chorale@x", "--out", "{work}/run", *ATTR, *h])
    q = ["attribute", "-q", "{work}/q.latent.safetensors", "--out", "{work}/run", *ATTR, *h]

    def latent_case(name: str, issue: bool = False, **changes: Any) -> None:
        add(name, "queries", q, setup=lambda e: latent_variant(e, e.work / "q.latent.safetensors", **changes), issue=issue)

    import torch

    def with_nan(t: Any) -> Any:
        t = t.clone()
        t.view(-1)[t.numel() // 2] = float("nan")
        return t

    def with_inf(t: Any) -> Any:
        t = t.clone()
        t.view(-1)[0] = float("inf")
        return t

    latent_case("latent-nan", issue=True, latents=with_nan)
    latent_case("latent-inf", latents=with_inf)
    latent_case("latent-n-frames-negative", issue=True, n_frames=torch.tensor([-5]))
    latent_case("latent-n-frames-0", issue=True, n_frames=torch.tensor([0]))
    latent_case("latent-n-frames-empty", issue=True, n_frames=torch.zeros(0, dtype=torch.long))
    latent_case("latent-0-frames", issue=True, latents=lambda t: t[..., :0], n_frames=None)
    latent_case("latent-wrong-channels", latents=lambda t: t[:, :3])
    latent_case("latent-too-long", latents=lambda t: torch.cat([t, t], dim=-1))
    latent_case("latent-text-wrong-width", issue=True, text=lambda t: t[..., :100])
    latent_case("latent-text-mask-wrong-length", text_mask=lambda t: t[:, :5])
    latent_case("latent-text-nan", text=with_nan)
    latent_case("latent-seconds-total-nan", issue=True, seconds_total=torch.tensor([float("nan")]))
    latent_case("latent-seconds-total-negative", seconds_total=torch.tensor([-3.0]))
    latent_case("latent-seconds-start-inf", seconds_start=torch.tensor([float("inf")]))
    latent_case("latent-n-frames-above-stored", n_frames=torch.tensor([10**6]))
    latent_case("latent-missing-latents", latents=None)
    latent_case("latent-3d-batch-of-2", latents=lambda t: torch.cat([t, t]))
    add("latent-random-bytes", "queries", q, setup=lambda e: (e.work / "q.latent.safetensors").write_bytes(os.urandom(4096)))
    add("latent-truncated", "queries", q, setup=lambda e: (e.work / "q.latent.safetensors").write_bytes(
        e.gen.read_bytes()[: e.gen.stat().st_size // 2]))
    add("latent-is-a-directory", "queries", q, setup=lambda e: (e.work / "q.latent.safetensors").mkdir())
    add("latent-ok", "queries", q, expect="ok", setup=lambda e: latent_variant(e, e.work / "q.latent.safetensors"),
        check=finite_scores("run"))
    w = ["attribute", "-q", "{work}/q.wav", "--out", "{work}/run", *ATTR, *h]

    def wav_case(name: str, make: Callable[[Path], None], issue: bool = False, expect: str = "refuse", check: Any = None) -> None:
        add(name, "queries", w, setup=lambda e: make(e.work / "q.wav"), issue=issue, expect=expect, check=check)

    def nan_wav(p: Path) -> None:
        x = tone(1.0)
        x[100:200] = np.nan
        write_wav(p, x)

    def truncated_wav(p: Path) -> None:
        write_wav(p, tone(1.0))
        truncate(p, 0.02)

    wav_case("wav-nan", nan_wav, issue=True)
    wav_case("wav-truncated", truncated_wav, issue=True)
    wav_case("wav-empty", lambda p: write_wav(p, np.zeros(0, dtype=np.float32)))
    wav_case("wav-shorter-than-a-frame", lambda p: write_wav(p, tone(0.002)))
    wav_case("wav-not-audio", lambda p: p.write_text("this is not audio\n" * 100))
    wav_case("wav-header-only", lambda p: (write_wav(p, tone(1.0)), p.write_bytes(p.read_bytes()[:44])))
    wav_case("wav-ok", lambda p: write_wav(p, tone(1.0)), expect="ok", check=finite_scores("run"))
    wav_case("wav-streaming", lambda p: (write_wav(p, tone(1.0)), _open_data_size(p)), expect="ok", check=finite_scores("run"))
    add("query-twice", "queries", ["attribute", "-q", "train:t0000", "-q", "train:t0000", "--out", "{work}/run", *ATTR, *h])

    # ---- artifacts: truncated, NaN, missing, overwritten across kinds, pending state, caches
    add("items-parquet-truncated", "artifacts", [*att, *ATTR], setup=lambda e: truncate(e.home / "latents/demo/items.parquet"),
        issue=True, may_change=("latents/demo",))
    add("manifest-parquet-truncated", "artifacts", ["world", "info", *h],
        setup=lambda e: truncate(e.home / "worlds/demo/manifest.parquet"), issue=True, may_change=("worlds/demo",))

    def finished_run(e: Env) -> None:
        e.run([*att, *ATTR])
        truncate(e.work / "run" / "scores.parquet")

    add("scores-parquet-truncated", "artifacts", [*att, *ATTR], setup=lambda e: finished_run(e), issue=True)
    add("latents-safetensors-truncated", "artifacts", [*att, *ATTR], may_change=("latents/demo",),
        setup=lambda e: truncate(e.home / "latents/demo/latents.safetensors"))
    add("latents-nan", "artifacts", ["fisher", "--name", "f2", "--timesteps", "2", *h], may_change=("latents/demo",),
        setup=lambda e: poison(e.home / "latents/demo/latents.safetensors"))
    add("latents-n-frames-0", "artifacts", ["fisher", "--name", "f2", "--timesteps", "2", *h], may_change=("latents/demo",),
        setup=lambda e: _set_n_frames(e.home / "latents/demo/latents.safetensors", 0))
    add("latents-items-rows-mismatch", "artifacts", [*att, *ATTR], may_change=("latents/demo",),
        setup=lambda e: _drop_item_row(e.home / "latents/demo/items.parquet"))
    add("latents-missing-tensors", "artifacts", [*att, *ATTR], may_change=("latents/demo",),
        setup=lambda e: (e.home / "latents/demo/latents.safetensors").unlink())
    tr = ["train", "--name", "demo", "--latents", "demo", "--steps", "30", "--width", "16", "--depth", "2", *h]
    add("model-truncated-rerun", "artifacts", ["attribute", "-q", "train:t0000", "--out", "{work}/run", *ATTR, *h],
        may_change=("models/demo",), setup=lambda e: truncate(e.home / "models/demo/model.safetensors"))
    add("model-nan-attribute", "artifacts", [*att, *ATTR], may_change=("models/demo",),
        setup=lambda e: poison(e.home / "models/demo/model.safetensors"))
    add("model-nan-generate", "artifacts", [*gen, "--seconds", "1"], may_change=("models/demo",),
        setup=lambda e: poison(e.home / "models/demo/model.safetensors"))
    add("model-truncated-train-overwrite", "artifacts", [*tr, "--overwrite"], expect="ok", issue=True, may_change=("models/demo",),
        setup=lambda e: truncate(e.home / "models/demo/model.safetensors"), check=loads_finite("models/demo", "model.safetensors"))
    add("model-nan-train-overwrite", "artifacts", [*tr, "--overwrite"], expect="ok", issue=True, may_change=("models/demo",),
        setup=lambda e: poison(e.home / "models/demo/model.safetensors"), check=loads_finite("models/demo", "model.safetensors"))
    add("model-nan-train-same-config", "artifacts", tr, issue=True, may_change=("models/demo",),
        setup=lambda e: poison(e.home / "models/demo/model.safetensors"))
    add("model-config-missing", "artifacts", [*att, *ATTR], may_change=("models/demo",),
        setup=lambda e: (e.home / "models/demo/config.json").unlink())
    add("model-config-not-json", "artifacts", [*att, *ATTR], may_change=("models/demo",),
        setup=lambda e: (e.home / "models/demo/config.json").write_text("{not json"))
    fi = ["fisher", "--name", "demo", "--timesteps", "2", *h]
    add("fisher-truncated-rerun-overwrite", "artifacts", [*fi, "--overwrite"], expect="ok", issue=True, may_change=("fisher/demo",),
        setup=lambda e: truncate(e.home / "fisher/demo/fisher.safetensors"), check=loads_finite("fisher/demo", "fisher.safetensors"))
    add("fisher-nan-rerun-overwrite", "artifacts", [*fi, "--overwrite"], expect="ok", issue=True, may_change=("fisher/demo",),
        setup=lambda e: poison(e.home / "fisher/demo/fisher.safetensors"), check=loads_finite("fisher/demo", "fisher.safetensors"))
    add("fisher-nan-rerun-same-config", "artifacts", fi, issue=True, may_change=("fisher/demo",),
        setup=lambda e: poison(e.home / "fisher/demo/fisher.safetensors"))
    add("fisher-nan-attribute", "artifacts", [*att, *ATTR], may_change=("fisher/demo",),
        setup=lambda e: poison(e.home / "fisher/demo/fisher.safetensors"))
    add("fisher-deleted-attribute", "artifacts", [*att, *ATTR], may_change=("fisher/demo",),
        setup=lambda e: (e.home / "fisher/demo/fisher.safetensors").unlink())
    add("attribute-out-into-model-overwrite", "artifacts", ["attribute", "-q", "train:t0000", "--out", "{home}/models/demo",
                                                            "--overwrite", *ATTR, *h], issue=True)
    add("attribute-out-into-latents-overwrite", "artifacts", ["attribute", "-q", "train:t0000", "--out", "{home}/latents/demo",
                                                              "--overwrite", *ATTR, *h])
    add("fisher-name-escapes-overwrite", "artifacts", ["fisher", "--name", "../latents/demo", "--timesteps", "2", "--overwrite", *h],
        issue=True)
    add("fisher-name-absolute", "artifacts", ["fisher", "--name", "{home}/models/demo", "--timesteps", "2", "--overwrite", *h])
    add("train-name-escapes-overwrite", "artifacts", ["train", "--name", "../fisher/demo", *TRAIN, "--overwrite", *h])
    add("world-build-name-escapes", "artifacts", ["world", "build", "--tracks", "2", "--name", "../models/demo", "--overwrite", *h])
    add("attribute-out-home-overwrite", "artifacts", ["attribute", "-q", "train:t0000", "--out", "{home}", "--overwrite", *ATTR, *h])
    add("attribute-out-other-run-overwrite", "artifacts", ["attribute", "-q", "train:t0001", "--out", "{work}/run", "--overwrite", *ATTR,
                                                           *h], expect="ok", setup=lambda e: e.run([*att, *ATTR]),
        check=finite_scores("run"))

    def failed_then(e: Env) -> None:
        e.run([*att, *base_attr, "--lr", "1e30"], allow_fail=True)

    add("failed-run-then-corrected", "artifacts", [*att, *ATTR], expect="ok", setup=failed_then, issue=True, check=finite_scores("run"))

    def failed_train_then(e: Env) -> None:
        e.run(["train", "--name", "x", *TRAIN, "--lr", "1e30", *h], allow_fail=True)

    add("failed-train-then-corrected", "artifacts", ["train", "--name", "x", *TRAIN, *h], expect="ok", setup=failed_train_then,
        check=loads_finite("models/x", "model.safetensors"))
    add("base-cache-value-changed", "artifacts", [*att, *ATTR], expect="ok", issue=True, setup=lambda e: _tamper_cache(e, "change"),
        check=same_scores_as_clean("run", [*att, *ATTR]))
    add("base-cache-nan-late", "artifacts", [*att, *ATTR], expect="ok", issue=True, setup=lambda e: _tamper_cache(e, "nan"),
        check=same_scores_as_clean("run", [*att, *ATTR]))
    add("base-cache-truncated", "artifacts", [*att, *ATTR], expect="ok", setup=lambda e: _tamper_cache(e, "truncate"),
        check=same_scores_as_clean("run", [*att, *ATTR]))
    add("fisher-of-other-model", "artifacts", [*att, *ATTR, "--model", "x"],
        setup=lambda e: e.run(["train", "--name", "x", *TRAIN, *h]))
    add("pending-of-killed-run-other-config", "artifacts", ["fisher", "--name", "p", "--timesteps", "4", *h],
        setup=lambda e: _pending(e.home / "fisher" / "p", "FisherConfig"))
    add("fisher-config-missing-overwrite", "artifacts", [*fi, "--overwrite"], expect="ok", may_change=("fisher/demo",),
        setup=lambda e: (e.home / "fisher/demo/config.json").unlink(), check=loads_finite("fisher/demo", "fisher.safetensors"))
    add("fisher-config-not-json-overwrite", "artifacts", [*fi, "--overwrite"], expect="ok", may_change=("fisher/demo",),
        setup=lambda e: (e.home / "fisher/demo/config.json").write_text("{not json"),
        check=loads_finite("fisher/demo", "fisher.safetensors"))
    add("fisher-config-not-json-rerun", "artifacts", fi, may_change=("fisher/demo",),
        setup=lambda e: (e.home / "fisher/demo/config.json").write_text("{not json"))

    def run_with_git(e: Env) -> None:
        e.run([*att, *ATTR])
        (e.work / "run" / ".git").mkdir()
        (e.work / "run" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")

    def git_kept(e: Env, out: dict[str, Any]) -> str | None:
        return exit_ok(e, out) or (None if (e.work / "run" / ".git" / "HEAD").exists() else "the user's .git was deleted")

    add("overwrite-keeps-hidden-files", "artifacts", [*att, *ATTR, "--lr", "2e-6", "--overwrite"], expect="ok", setup=run_with_git,
        check=git_kept)
    add("generate-out-onto-model-weights", "artifacts", [*gen, "--seconds", "1", "--out", "{home}/models/demo/model.safetensors"])
    add("generate-out-into-model-folder", "artifacts", [*gen, "--seconds", "1", "--out", "{home}/models/demo/x.wav"])
    add("generate-out-existing-file", "artifacts", [*gen, "--seconds", "1"], setup=lambda e: (e.work / "g.wav").write_bytes(b"mine"))
    add("verify-batches-1", "artifacts", ["verify", "{home}/demo/attribution", "--batches", "1"], expect="ok", check=exit_ok)
    add("world-missing", "artifacts", ["world", "info", "--name", "nowhere", *h])
    add("verify-not-an-artifact", "artifacts", ["verify", "{work}"])
    add("verify-a-model", "artifacts", ["verify", "{home}/models/demo"], expect="ok", check=exit_ok)
    add("verify-a-run", "artifacts", ["verify", "{home}/demo/attribution", "--json"], expect="ok", check=exit_ok)

    # ---- world import: untrusted folders
    add("import-ok", "import", IMPORT, expect="ok", setup=lambda e: import_folder(e), check=imported_durations(0.5))
    add("import-absolute-path", "import", IMPORT, issue=True, check=no_outside_files, setup=lambda e: import_folder(
        e, rows=[("t0.wav", "a", "x"), (str(e.home / "worlds/demo/audio" / "t0000.wav"), "b", "y")], n=1))
    add("import-dotdot-path", "import", IMPORT, issue=True, check=no_outside_files, setup=lambda e: (_outside(e), import_folder(
        e, rows=[("t0.wav", "a", "x"), ("../outside.wav", "b", "y")], n=1)))
    add("import-symlink-out", "import", IMPORT, setup=lambda e: (_outside(e), import_folder(
        e, rows=[("t0.wav", "a", "x"), ("link.wav", "b", "y")], n=1, extra=lambda m: (m / "link.wav").symlink_to(e.work / "outside.wav"))))
    add("import-symlinked-dir-out", "import", IMPORT, setup=lambda e: (_outside(e), import_folder(
        e, rows=[("t0.wav", "a", "x"), ("sub/outside.wav", "b", "y")], n=1, extra=lambda m: (m / "sub").symlink_to(e.work))))
    add("import-truncated-wav", "import", IMPORT, issue=True,
        setup=lambda e: import_folder(e, extra=lambda m: truncate(m / "t1.wav", 0.01)))
    add("import-nan-wav", "import", IMPORT,
        setup=lambda e: import_folder(e, extra=lambda m: write_wav(m / "t1.wav", _nan(tone(1.0)))))
    add("import-shorter-than-a-frame", "import", IMPORT,
        setup=lambda e: import_folder(e, extra=lambda m: write_wav(m / "t1.wav", tone(0.003))))
    add("import-empty-wav", "import", IMPORT, setup=lambda e: import_folder(e, extra=lambda m: write_wav(m / "t1.wav", np.zeros(0))))
    add("import-not-audio", "import", IMPORT, setup=lambda e: import_folder(e, extra=lambda m: (m / "t1.wav").write_text("nope " * 50)))
    add("import-empty-folder", "import", IMPORT, setup=lambda e: (e.work / "music").mkdir(parents=True))
    add("import-missing-columns", "import", IMPORT, setup=lambda e: import_folder(e, header="file,caption,who"))
    add("import-binary-csv", "import", IMPORT, setup=lambda e: (import_folder(e), (e.work / "music/captions.csv").write_bytes(
        os.urandom(3000))))
    add("import-huge-csv", "import", IMPORT, setup=lambda e: (import_folder(e), _huge_csv(e.work / "music/captions.csv")))
    add("import-huge-wav-header", "import", IMPORT, setup=lambda e: import_folder(e, extra=lambda m: _huge_wav(m / "t1.wav")))
    add("import-duplicate-rows", "import", IMPORT, setup=lambda e: import_folder(
        e, rows=[("t0.wav", "a", "x"), ("t0.wav", "b", "y")], n=1))
    add("import-empty-caption", "import", IMPORT, setup=lambda e: import_folder(e, rows=[("t0.wav", "", "x")], n=1))
    add("import-csv-missing", "import", [*IMPORT[:4], "{work}/none.csv", *IMPORT[5:]], setup=lambda e: import_folder(e))
    add("import-dir-is-file", "import", IMPORT, setup=lambda e: (e.work / "music").write_text("x"))
    add("import-max-seconds-nan", "import", [*IMPORT[:-1], "nan"], setup=lambda e: import_folder(e))
    add("import-unlisted-file", "import", IMPORT, setup=lambda e: import_folder(e, rows=[("t0.wav", "a", "x")], n=2))
    add("import-bpm-not-number", "import", IMPORT, setup=lambda e: import_folder(
        e, rows=[("t0.wav", "a", "x", "fast")], n=1, header="file,caption,artist,bpm"))
    add("import-nul-in-path", "import", IMPORT, setup=lambda e: import_folder(e, rows=[("t0\x00.wav", "a", "x")], n=1))

    # ---- commands added after the issue was filed: ground truth, fast index, model import, external codecs, opt-out,
    # ---- localisation and the report (the same standard: a clear refusal before any work, or a checked result)
    gt = ["groundtruth", "--name", "g", "--subsets", "3", "--loo-items", "0", "--no-loao", "--generated", "0", "--no-evaluate", *h]
    add("groundtruth-alpha-nan", "new-commands", [*gt, "--alpha", "nan"])
    add("groundtruth-alpha-1", "new-commands", [*gt, "--alpha", "1"])
    add("groundtruth-subsets-2", "new-commands", [*gt[:3], "--subsets", "2", *gt[5:]])
    add("groundtruth-measure-timesteps-odd", "new-commands", [*gt, "--measure-timesteps", "3"])
    add("groundtruth-seeds-not-numbers", "new-commands", [*gt, "--loo-seeds", "a,b"])
    add("groundtruth-name-escapes", "new-commands", [*gt[:1], "--name", "../models/demo", *gt[3:], "--overwrite"])
    ix = ["index", "build", "--name", "i", "--timesteps", "2", *h]
    add("index-dim-0", "new-commands", [*ix, "--dim", "0"])
    add("index-damping-nan", "new-commands", [*ix, "--damping", "nan"])
    add("index-damping-inf", "new-commands", [*ix, "--damping", "inf"])
    add("index-timesteps-0", "new-commands", [*ix[:4], "--timesteps", "0", *h])
    add("index-projection-bogus", "new-commands", [*ix, "--projection", "bogus"])
    add("index-shard-out-of-range", "new-commands", [*ix, "--shard", "7"])
    add("index-name-escapes", "new-commands", [*ix[:2], "--name", "../models/demo", *ix[4:], "--overwrite"])
    add("attribute-fast-without-index", "new-commands", [*att, "--mode", "fast", "--index", "nowhere", *ATTR])
    add("model-import-no-source", "new-commands", ["model", "import", "--name", "m", *h])
    add("model-import-missing-folder", "new-commands", ["model", "import", "--diffusers", "{work}/nowhere", "--name", "m", *h])
    add("model-import-not-a-pipeline", "new-commands", ["model", "import", "--diffusers", "{work}/pipe", "--name", "m", *h],
        setup=lambda e: _fake_pipeline(e.work / "pipe", "{not json"))
    add("model-import-diffusers-pickle-weights", "new-commands", ["model", "import", "--diffusers", "{work}/pipe", "--name", "m", *h],
        setup=lambda e: _fake_pipeline(e.work / "pipe"))
    # (a valid stable-audio-tools config with a pickled .ckpt is refused unless --allow-pickle: tests/model/test_sat_import.py)
    add("model-import-sat-config-incomplete", "new-commands", ["model", "import", "--sat", "{work}/sat", "--name", "m", *h],
        setup=lambda e: _fake_sat(e.work / "sat"))
    add("model-import-name-escapes", "new-commands", ["model", "import", "--sat", "{work}/sat", "--name", "../latents/demo", "--overwrite",
                                                      *h], setup=lambda e: _fake_sat(e.work / "sat"))
    add("encode-codec-unknown-kind", "new-commands", ["encode", "--codec", "bogus:{work}", "--name", "l", *h])
    add("encode-codec-missing-folder", "new-commands", ["encode", "--codec", "diffusers:{work}/nowhere", "--name", "l", *h])
    add("encode-codec-pickle-weights", "new-commands", ["encode", "--codec", "diffusers:{work}/pipe", "--name", "l", *h],
        setup=lambda e: _fake_pipeline(e.work / "pipe"))
    oo = ["optout", "--artist", "Kilfenora Road", "--name", "o", *h]
    add("optout-lr-inf", "new-commands", [*oo, "--method", "ga", "--lr", "inf"])
    add("optout-set-nan", "new-commands", [*oo, "--method", "bounded", "--set", "lam=nan"])
    add("optout-set-unknown", "new-commands", [*oo, "--method", "ga", "--set", "bogus=1"])
    add("optout-set-not-a-pair", "new-commands", [*oo, "--method", "ga", "--set", "lam"])
    add("optout-ids-missing-file", "new-commands", ["optout", "--ids", "{work}/none.txt", "--method", "ga", "--name", "o", *h])
    add("optout-regex-bad", "new-commands", ["optout", "--caption-regex", "(", "--method", "ga", "--name", "o", *h])
    add("optout-name-escapes", "new-commands", [*oo[:3], "--name", "../latents/demo", *h, "--method", "ga", "--steps", "1", "--overwrite"])
    add("optout-eval-missing-checkpoint", "new-commands", ["optout-eval", "nope", *h])
    add("optout-eval-timesteps-0", "new-commands", ["optout-eval", "demo", "--timesteps", "0", "--out", "{work}/ev", *h])
    add("optout-eval-sampler-steps-negative", "new-commands", ["optout-eval", "demo", "--sampler-steps", "-2", "--out", "{work}/ev", *h])
    loc = ["localise", "-q", "train:t0000", "--out", "{work}/loc", *ATTR, *h]
    for v in ("nan", "inf", "0", "-1"):
        add(f"localise-window-{v}", "new-commands", [*loc, "--window", v])
    add("localise-top-0", "new-commands", [*loc, "--top", "0"])
    add("localise-latent-nan", "new-commands", ["localise", "-q", "{work}/q.latent.safetensors", "--out", "{work}/loc", *ATTR, *h],
        setup=lambda e: latent_variant(e, e.work / "q.latent.safetensors", latents=with_nan))
    add("localise-ok", "new-commands", [*loc, "--window", "1"], expect="ok", check=exit_ok)
    rp = ["report", "--out", "{work}/r.html", *h]
    add("report-not-a-run", "new-commands", [*rp, "{work}"])
    add("report-run-missing", "new-commands", [*rp, "{work}/nothing"])
    add("report-top-0", "new-commands", [*rp, "{home}/demo/attribution", "--top", "0"])
    add("report-scores-truncated", "new-commands", [*rp, "{home}/demo/attribution"],
        setup=lambda e: truncate(e.home / "demo/attribution/scores.parquet"))
    add("report-ok", "new-commands", [*rp, "{home}/demo/attribution"], expect="ok", check=lambda e, o: None if (
        e.work / "r.html").stat().st_size > 1000 else "no report page written")
    latent_case("latent-no-seconds-total-ok", seconds_total=None)
    out[-1] = dataclasses.replace(out[-1], group="new-commands", expect="ok", check=seconds_from_frames("run"))

    # ---- other commands
    add("optout-unknown-artist", "other", ["optout", "--artist", "Nobody", "--method", "ga", "--name", "o", *h])
    add("optout-method-bogus", "other", ["optout", "--artist", "Kilfenora Road", "--method", "bogus", "--name", "o", *h])
    add("baseline-wav-nan", "other", ["baseline", "--method", "embedding", "-q", "{work}/q.wav", *h],
        setup=lambda e: nan_wav(e.work / "q.wav"))
    add("fd-unknown-set", "other", ["fd", "world:nowhere:train", "world:demo:train", *h])
    add("codec-missing-for-wav", "other", [*w, "--codec", "nope"], setup=lambda e: write_wav(e.work / "q.wav", tone(1.0)))
    add("world-info-ok", "other", ["world", "info", *h], expect="ok", check=exit_ok)
    add("selfinfluence-ok", "other", ["selfinfluence", "--out", "{work}/si", *SI, *h], expect="ok", check=exit_ok)
    return out


def seconds_from_frames(run_rel: str) -> Callable[[Env, dict[str, Any]], str | None]:
    """A bare latent (no seconds_total) is conditioned on its frames at the data's frame rate, never on a made-up duration."""

    def check(env: Env, out: dict[str, Any]) -> str | None:
        bad = finite_scores(run_rel)(env, out)
        if bad:
            return bad
        record = json.loads((env.work / run_rel / "config.json").read_text())
        got = [q.get("seconds") for q in record.get("queries", [])]
        t = _tensors(env.gen)
        want = float(t["seconds_total"].reshape(-1)[0])
        if not got or got[0] is None:
            return "the run does not record the seconds the query was conditioned on"
        return None if abs(float(got[0]) - want) <= 0.1 * want else f"seconds_total {got[0]} recorded, the track lasts {want:.3g} s"

    return check


def _fake_pipeline(folder: Path, index: str | None = None) -> None:
    """A diffusers StableAudioPipeline folder whose weights are pickle files (`.bin`), as an untrusted download may be."""
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(index if index is not None else json.dumps({"_class_name": "StableAudioPipeline"}))
    for part in ("transformer", "projection_model", "scheduler", "vae", "text_encoder", "tokenizer"):
        (folder / part).mkdir()
        (folder / part / "config.json").write_text("{}")
        (folder / part / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04" + os.urandom(256))


def _fake_sat(folder: Path) -> None:
    """A stable-audio-tools folder whose weights are a pickle-capable `.ckpt` (of random bytes)."""
    folder.mkdir(parents=True)
    (folder / "model_config.json").write_text(json.dumps({"model_type": "diffusion_cond", "sample_rate": 44100, "sample_size": 65536}))
    (folder / "model.ckpt").write_bytes(b"PK\x03\x04" + os.urandom(512))


def _nan(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[10:20] = np.nan
    return x


def _outside(e: Env) -> None:
    write_wav(e.work / "outside.wav", tone(1.0, seed=9))


def _huge_csv(path: Path) -> None:
    """A captions CSV of 300 MB (sparse: no disk used), which pandas would read whole."""
    with open(path, "r+b") as f:
        f.seek(300 * 1024 * 1024)
        f.write(b"\n")


def _huge_wav(path: Path) -> None:
    """A WAV whose header claims 2^31 samples but holds 1 s: a reader trusting the header allocates gigabytes."""
    write_wav(path, tone(1.0))
    data = bytearray(path.read_bytes())
    i = data.find(b"data")
    data[i + 4 : i + 8] = struct.pack("<I", 0x7FFFFFF0)
    path.write_bytes(bytes(data))


def _open_data_size(path: Path) -> None:
    """Make a WAV a streaming one (as ffmpeg/sox write to a pipe): its RIFF and data sizes 0xFFFFFFFF, the samples to the end."""
    raw = bytearray(path.read_bytes())
    at = raw.find(b"data")
    raw[4:8] = raw[at + 4: at + 8] = struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(bytes(raw))


def _set_n_frames(path: Path, value: int) -> None:
    t = _tensors(path)
    t["n_frames"] = t["n_frames"].clone()
    t["n_frames"][3] = value
    _save(path, t, _metadata(path))


def _drop_item_row(path: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)


def _tamper_cache(e: Env, how: str) -> None:
    """Change, NaN or truncate an entry of the base-loss cache after its first batch."""
    files = sorted((e.home / "cache" / "base_losses").glob("*.safetensors"))
    for path in files:
        if how == "truncate":
            truncate(path)
            continue
        t = _tensors(path)
        loss = t["loss"].clone()
        loss[-1] = float("nan") if how == "nan" else loss[-1] * 1.5
        t["loss"] = loss
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        from safetensors.torch import save_file

        save_file(t, str(path), metadata=meta)


def _pending(path: Path, stage: str) -> None:
    """An unfinished artifact of another config, as a failed run leaves it."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ".pending.json").write_text(json.dumps({"stage": stage, "config": {"n_timesteps": 99}, "inputs": {}}))
