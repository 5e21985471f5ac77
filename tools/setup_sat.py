"""Finish the stable-audio-tools extra (`make setup-sat`) and check that its model code imports.

The package index's torchaudio wheels are linked against CUDA torch; beside a CPU torch their
compiled extension cannot load and `import torchaudio` fails. stable-audio-tools' model code only
uses torchaudio's pure-Python transforms, so on a CPU torch this removes the extension (torchaudio
then runs without it). On a CUDA torch nothing is removed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def torchaudio_extension_files() -> list[Path]:
    """The compiled libraries of the installed torchaudio, found without importing it."""
    spec = importlib.util.find_spec("torchaudio")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchaudio is not installed; run `make setup-sat`")
    lib = Path(next(iter(spec.submodule_search_locations))) / "lib"
    return sorted(lib.glob("*.so"))


def main() -> None:
    import torch

    if torch.version.cuda is None:
        for path in torchaudio_extension_files():
            path.unlink()
            print(f"removed {path.name} (a CUDA-linked torchaudio extension cannot load beside CPU torch {torch.__version__})")
    from songtrace.extras import import_sat

    sat = import_sat()
    print(f"stable-audio-tools {sat.version} imports beside torch {torch.__version__}")


if __name__ == "__main__":
    sys.exit(main())
