"""The layer order of ARCHITECTURE.md holds: no module imports from a package in a higher layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "songtrace"
DOC = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"


def layers() -> dict[str, int]:
    """Package (or base module) -> layer number, read from ARCHITECTURE.md's table."""
    out: dict[str, int] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]+)\|", line)
        if m:
            for name in re.findall(r"`([a-z_]+)/?`", m.group(2)):
                out[name] = int(m.group(1))
    return out


def unit_of(module: str) -> str:
    """The layer unit of a dotted module name: its top-level package or base module under songtrace."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every songtrace import in a file, including those inside functions."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("songtrace"):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("songtrace"))
    return found


def test_every_package_has_a_layer():
    table = layers()
    units = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if not p.name.startswith("__") and p.name != "__pycache__"}
    units = {u for u in units if (SRC / u).is_dir() or (SRC / f"{u}.py").is_file()}
    assert units - set(table) == set(), "packages missing from ARCHITECTURE.md's layer table"


def test_imports_only_run_downwards():
    table = layers()
    wrong = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        here = unit_of(".".join(rel.parts))
        if here in ("", "__init__", "__main__"):
            continue
        for line, module in imports(path):
            there = unit_of(module)
            if there in ("", here):
                continue
            if table[there] > table[here]:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {module} (layer {table[there]} > {table[here]})")
    assert not wrong, "imports running upwards:\n" + "\n".join(sorted(wrong))


def test_the_check_sees_an_upward_import(tmp_path):
    """The reader of imports finds function-level imports too (so the check above can fail)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from songtrace.cli import main\n")
    assert imports(f) == [(2, "songtrace.cli")]
