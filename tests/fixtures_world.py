"""Session fixtures for the world stage (see conftest.py).

`tiny_world` is a real demo world built with `build_world`: 12 tracks of 1-2 s at 16 kHz. With so
few tracks the world keeps the first 4 artists of the table (3 tracks each: a choir singing Bach
chorales, voices in Palestrina, an Irish fiddle band, a pipe band with drums), 4 short tracks (1 s),
one planted version (a track re-played by another artist) and one valid track. It builds in a few
seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from songtrace.world import WorldConfig, build_world

TINY_WORLD = WorldConfig(tracks=12, seed=0, max_seconds=2.0, min_seconds=1.0)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """Path of a built 12-track demo world (read-only: copy it before changing anything)."""
    return build_world(TINY_WORLD, tmp_path_factory.mktemp("world") / "tiny")
