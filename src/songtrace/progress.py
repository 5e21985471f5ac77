"""Progress bars for long work (stderr, so `--json` output on stdout stays clean)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Wrap an iterable in a progress bar; silenced by `SONGTRACE_QUIET=1`."""
    disable = os.environ.get("SONGTRACE_QUIET") == "1"
    yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, leave=False)


def progress_bar(total: int, desc: str = "", unit: str = "it", initial: int = 0) -> tqdm:
    """A manual progress bar (call `.update(n)`; close it when done)."""
    disable = os.environ.get("SONGTRACE_QUIET") == "1"
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr, disable=disable, dynamic_ncols=True, leave=False)
