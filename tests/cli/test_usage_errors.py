"""Every refusal of the real entry point (`songtrace.cli.main`) is one line on stderr and exit code 2, never a traceback.

Most cases call `main(argv)` in this process (the same function the `songtrace` console script runs); two run
the installed entry points in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from songtrace.cli import main
from songtrace.data.latents import LatentSet


def _refused(capsys, argv: list[str]) -> str:
    """Run main(argv); assert it exits 2 with one `error:` line and no traceback; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture()
def home(tmp_path, tiny_world, tiny_codec, tiny_latents, tiny_model) -> Path:
    """A data directory whose `demo` artifacts are the tiny fixtures."""
    home = tmp_path / "home"
    for stage, src in (("worlds", tiny_world), ("codecs", tiny_codec), ("latents", tiny_latents), ("models", tiny_model)):
        (home / stage).mkdir(parents=True)
        (home / stage / "demo").symlink_to(src, target_is_directory=True)
    return home


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--lr", "abc"], "'--lr'"),
        (["train", "--bogus", "1"], "No such option: --bogus"),
        (["attribute"], "'--query'"),
        (["world", "import"], "'directory'"),
        (["nosuch"], "No such command 'nosuch'"),
        (["world", "nosuch"], "No such command 'nosuch'"),
        (["fisher", "--timesteps"], "'--timesteps' requires an argument"),
        (["world", "build", "--tracks", "4.5"], "'--tracks'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, expected):
    line = _refused(capsys, argv)
    assert expected in line and "(see `songtrace" in line


def test_usage_error_names_the_command_whose_help_explains_it(capsys):
    assert _refused(capsys, ["world", "import"]).endswith("(see `songtrace world import --help`)")


def test_bad_choices_are_one_line_and_exit_2(capsys, home, tmp_path):
    train_id = LatentSet.load(home / "latents" / "demo").subset("train").ids[0]
    common = ["--home", home]
    lines = [
        _refused(capsys, ["generate", "--prompt", "x", "--sampler", "bogus", "--seconds", "0.5", "--out", tmp_path / "g.wav", *common]),
        _refused(capsys, ["attribute", "-q", f"train:{train_id}", "--mask", "M_U", "--out", tmp_path / "a", *common]),
        _refused(capsys, ["baseline", "--method", "bogus", "-q", f"train:{train_id}", "--out", tmp_path / "b", *common]),
        _refused(capsys, ["fd", "world:demo", "world:demo", "--per", "bogus", *common]),
    ]
    assert lines == [
        "error: unknown sampler 'bogus'; valid: dpmpp-2m, ddim",
        "error: unknown mask 'M_U'; valid: none, both, M_L, mixed",
        "error: unknown attribution method 'bogus'; valid: activations, attribute_by_unlearning, embedding, fast, gradient, mucs, "
        "representer, unlearning, version",
        "error: unknown FD unit 'bogus'; valid: window, track",
    ]


def test_home_or_out_that_is_a_file_is_refused_naming_the_path(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    assert str(a_file) in _refused(capsys, ["world", "info", "--home", a_file])
    assert str(a_file) in _refused(capsys, ["attribute", "-q", "train:x", "--out", a_file, "--home", tmp_path])
    assert str(a_file) in _refused(capsys, ["selfinfluence", "--out", a_file, "--home", tmp_path])
    assert str(tmp_path) in _refused(capsys, ["generate", "--prompt", "x", "--out", tmp_path, "--home", tmp_path])
    assert str(a_file) in _refused(capsys, ["generate", "--prompt", "x", "--out", a_file / "g.wav", "--home", tmp_path])


def test_songtrace_home_that_is_a_file_is_refused_naming_the_path(capsys, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("SONGTRACE_HOME", str(a_file))
    line = _refused(capsys, ["world", "info"])
    assert str(a_file) in line and "directory" in line


def test_a_home_that_cannot_be_written_is_refused_naming_the_path(capsys, tmp_path, monkeypatch):
    """A read-only home: as root a chmod does not stop writes, so the write is refused the way the OS refuses it."""
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o555)
    if os.access(home, os.W_OK):  # running as root: inject the PermissionError the OS raises for other users
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kw):
            if self != home and home in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kw)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    try:
        line = _refused(capsys, ["world", "build", "--tracks", "2", "--home", home])
    finally:
        home.chmod(0o755)
    assert str(home) in line and "permission denied" in line


def test_bad_songtrace_threads_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("SONGTRACE_THREADS", "many")
    assert "SONGTRACE_THREADS" in _refused(capsys, ["world", "--help"])


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run(list(argv), capture_output=True, text=True, env=full_env)


def test_python_m_songtrace_cli_reports_a_usage_error_in_one_line():
    proc = _run(sys.executable, "-m", "songtrace.cli", "train", "--lr", "abc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: Invalid value for '--lr': Input should be a valid number, unable to parse "
                                                "string as a number (see `songtrace train --help`)"]


def test_importing_the_cli_changes_nothing_and_main_tunes_openmp_before_torch_loads():
    """`import songtrace.cli` and building the app load no torch and set no environment; main() sets OMP_WAIT_POLICY
    before torch is imported, and SONGTRACE_THREADS sets torch's threads."""
    script = """
import os, sys
import songtrace.cli
assert "torch" not in sys.modules, "import songtrace.cli loaded torch"
assert "OMP_WAIT_POLICY" not in os.environ, "import songtrace.cli changed the environment"
songtrace.cli.build_app()
assert "torch" not in sys.modules, "a command module imports torch at its top (keeps --help and usage errors slow)"
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Watch())
try:
    songtrace.cli.main(["world", "--help"])
except SystemExit as e:
    assert e.code == 0, e.code
import torch
print("RESULT", seen[0], torch.get_num_threads())
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": os.pathsep.join(sys.path), "SONGTRACE_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].split() == ["RESULT", "PASSIVE", "1"]
