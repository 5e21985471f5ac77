"""Every built-in method is registered; a method module whose dependency is missing is an error naming it, not a missing method."""

from __future__ import annotations

import importlib

import pytest

from songtrace.baselines import base
from songtrace.errors import SongtraceError

REAL_IMPORT = importlib.import_module


def failing_import(broken: str, missing: str):
    real = REAL_IMPORT

    def fake(name: str, *args, **kwargs):
        if name == f"songtrace.baselines.{broken}":
            raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)
        return real(name, *args, **kwargs)

    return fake


def test_every_built_in_method_is_listed():
    assert set(base.METHOD_MODULES) <= set(base.method_names())


def test_a_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setattr(importlib, "import_module", failing_import("representer", "laion_clap"))
    expected = r"songtrace\.baselines\.representer needs the laion_clap package \(pip install 'songtrace\[real\]'"
    with pytest.raises(SongtraceError, match=expected):
        base.method_names()
    monkeypatch.setattr(importlib, "import_module", failing_import("gradient", "sklearn"))
    with pytest.raises(SongtraceError, match=r"needs the sklearn package \(pip install 'scikit-learn'\)"):
        base.get_method("gradient")


def test_a_missing_songtrace_module_is_not_hidden(monkeypatch):
    monkeypatch.setattr(importlib, "import_module", failing_import("version", "songtrace.nothing"))
    with pytest.raises(ModuleNotFoundError, match=r"songtrace\.nothing"):
        base.method_names()
