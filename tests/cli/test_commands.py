"""Every command: a worked example in its --help, --home and --json; every command module registered; a missing extra named."""

from __future__ import annotations

import sys
from pathlib import Path

import typer.main
from typer.testing import CliRunner

import songtrace.cli
from songtrace.cli import COMMAND_MODULES, app, build_app
from songtrace.cli.errors import missing_extra_message


def _leaf_commands(command, path=("songtrace",)):
    subs = getattr(command, "commands", None)
    if subs is None:
        yield " ".join(path), command
        return
    for name, sub in subs.items():
        yield from _leaf_commands(sub, (*path, name))


def test_every_command_has_a_worked_example_home_and_json():
    commands = dict(_leaf_commands(typer.main.get_command(app)))
    assert len(commands) >= 16
    for path, command in commands.items():
        help_text = command.help or ""
        examples = [line.strip() for line in help_text.splitlines() if line.strip().startswith("Example: ")]
        assert examples, f"{path}: no 'Example: ' line in its help"
        assert all(e.removeprefix("Example: ").startswith(path + " ") for e in examples), (path, examples)
        options = {opt for p in command.params for opt in p.opts}
        assert {"--home", "--json"} <= options, f"{path} lacks --home or --json"


SHARED = ("--home", "--json", "--overwrite", "--seed", "--model", "--latents", "--world", "--codec", "--fisher", "--query")
UNLEARNING = ("--lr", "--steps", "--group", "--mask", "--damping", "--damping-mode", "--timesteps", "--score-timesteps")


def test_shared_options_are_declared_once():
    """The same flag means the same thing with the same help everywhere (the unlearning ones in attribute and compare)."""
    commands = dict(_leaf_commands(typer.main.get_command(app)))
    seen: dict[str, set[str]] = {}
    for path, command in commands.items():
        for p in command.params:
            flag = p.opts[0]
            if flag in SHARED or (flag in UNLEARNING and path in ("songtrace attribute", "songtrace compare")):
                seen.setdefault(flag, set()).add(p.help)
    assert set(seen) == set(SHARED) | set(UNLEARNING)
    assert {flag: helps for flag, helps in seen.items() if len(helps) > 1} == {}
    out_dirs = {path: c for path, c in commands.items() for p in c.params if p.opts[0] == "--out" and "directory" in (p.help or "")}
    assert len({p.help for c in out_dirs.values() for p in c.params if p.opts[0] == "--out"}) == 1
    for path, command in out_dirs.items():  # the shared --out help points to the description for the default
        assert "--out" in command.help, f"{path}: its description does not say where --out defaults to"


def test_the_readme_lists_every_command_with_its_example():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## The command line", 1)[1].split("\n## ", 1)[0]
    for path, command in _leaf_commands(typer.main.get_command(app)):
        example = next(line.strip() for line in command.help.splitlines() if line.strip().startswith("Example: "))
        assert f"`{path.removeprefix('songtrace ')}`" in section and f"`{example.removeprefix('Example: ')}`" in section, path


def test_the_example_shows_in_help():
    out = CliRunner().invoke(app, ["attribute", "--help"], terminal_width=200)
    assert out.exit_code == 0 and "Example: songtrace attribute --query" in out.output


def test_every_command_module_is_registered():
    cli_dir = Path(songtrace.cli.__file__).parent
    modules = {f"songtrace.cli.{p.stem}" for p in cli_dir.glob("*.py") if "def register(" in p.read_text()}
    assert modules == set(COMMAND_MODULES)


def test_a_missing_extra_is_named_not_a_silently_missing_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "st_fake_extra_cmds.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'laion_clap'\", name='laion_clap')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    built = build_app(("st_fake_extra_cmds", "songtrace.cli.world"))
    err = capsys.readouterr().err
    assert "st_fake_extra_cmds needs the `real` extra: pip install 'songtrace[real]'" in err
    assert "world" in typer.main.get_command(built).commands  # the other commands still work
    sys.modules.pop("st_fake_extra_cmds", None)


def test_a_command_run_without_its_extra_names_the_extra(capsys):
    import typer

    from songtrace.cli.errors import run_reporting_errors

    fake = typer.Typer()

    @fake.command("adapt")
    def adapt() -> None:
        raise ModuleNotFoundError("No module named 'diffusers'", name="diffusers")  # what `import diffusers` raises without it

    fake.command("other")(lambda: None)
    assert run_reporting_errors(lambda: fake, ["adapt"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: `songtrace adapt` needs the `diffusers` extra: pip install 'songtrace[diffusers]' (could not import diffusers)")


def test_missing_extra_message_names_the_extra_or_says_nothing():
    e = ModuleNotFoundError("No module named 'diffusers'", name="diffusers")
    assert missing_extra_message(e, "the diffusers adapter") == (
        "the diffusers adapter needs the `diffusers` extra: pip install 'songtrace[diffusers]' (could not import diffusers)")
    assert missing_extra_message(ModuleNotFoundError("x", name="not_an_extra_dep"), "x") is None
    assert missing_extra_message(ModuleNotFoundError("x", name="songtrace.nope"), "x") is None
    assert missing_extra_message(ModuleNotFoundError("x", name="sklearn"), "x") is None  # a core dependency, not an extra


def test_the_table_of_optional_packages_matches_pyproject():
    """errors.PACKAGES (what every "needs the X extra" message says) lists each package under an extra that installs it."""
    import tomllib
    from pathlib import Path

    from songtrace.errors import PACKAGES

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for module, (pip, extra) in PACKAGES.items():
        name = pip.split(">")[0].split("=")[0].split("<")[0]
        if extra is None:
            assert name in core, f"{module}: {name} is not a core dependency"
        else:
            assert any(r.startswith(name) for r in extras[extra]), f"{module}: extra {extra!r} does not install {name}"
