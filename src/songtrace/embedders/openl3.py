"""openl3 behind the `Embedder` interface, from a local weights file: the embedder of FD_openl3.

Stable Audio's FD_openl3 (the paper's quality metric) uses openl3's music model (mel256, 512-d),
1 s frames at 48 kHz. The `openl3` package is TensorFlow-based and its build downloads the weights
from GitHub, so it cannot be installed offline; where it is installed, point this loader at a
`.h5` weights file (e.g. `openl3_audio_mel256_music.h5`) or a folder holding one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from songtrace.embedders.base import Embedder
from songtrace.embedders.clap import weights_hash
from songtrace.errors import SongtraceError, missing_package

INPUT_REPRS = ("linear", "mel128", "mel256")


def find_openl3_weights(path: Path, input_repr: str, content_type: str) -> Path:
    """The `.h5` weights file at `path` (a file, or a folder holding the one for this representation)."""
    hint = (f"openl3 weights not found at {path}; copy `openl3_audio_{input_repr}_{content_type}.h5` "
            "(shipped inside an installed openl3 package) there")
    if path.is_dir():
        preferred = path / f"openl3_audio_{input_repr}_{content_type}.h5"
        found = [preferred] if preferred.exists() else sorted(path.glob("*.h5"))
        if not found:
            raise SongtraceError(hint)
        return found[0]
    if not path.exists():
        raise SongtraceError(hint)
    return path


class OpenL3Embedder(Embedder):
    """openl3 audio embeddings (1 s frames at 48 kHz); audio only."""

    def __init__(self, weights: str | Path, input_repr: str = "mel256", content_type: str = "music",
                 embedding_size: int = 512, hop_seconds: float = 0.5, batch_size: int = 32, name: str = "openl3") -> None:
        if input_repr not in INPUT_REPRS:
            raise SongtraceError(f"unknown openl3 input_repr {input_repr!r}; valid: {', '.join(INPUT_REPRS)}")
        if embedding_size not in (512, 6144):
            raise SongtraceError(f"openl3 embedding_size must be 512 or 6144, got {embedding_size}")
        weights_file = find_openl3_weights(Path(weights), input_repr, content_type)
        try:
            import openl3
        except ImportError:
            raise missing_package("openl3", "the openl3 embedder", "it needs TensorFlow, and its build downloads weights from GitHub, "
                                  "so install it where internet is available") from None
        self._openl3 = openl3
        self.model = openl3.models.load_audio_embedding_model_from_path(str(weights_file), input_repr, embedding_size)
        self.name = name
        self.content_hash = weights_hash([weights_file])
        self.sample_rate = 48000
        self.window_seconds = 1.0  # fixed by the model
        self.hop_seconds = float(hop_seconds)
        self.batch_size = int(batch_size)
        self.dim = int(embedding_size)

    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        """openl3 frame embeddings, one per `hop_seconds`, frames not centred (as our windows)."""
        if len(wave) < self.window_samples:
            wave = np.pad(wave, (0, self.window_samples - len(wave)))
        emb, _ = self._openl3.get_audio_embedding(wave, self.sample_rate, model=self.model, hop_size=self.hop_seconds,
                                                  center=False, batch_size=self.batch_size, verbose=False)
        return np.asarray(emb, dtype=np.float32)
