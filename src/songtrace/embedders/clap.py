"""Real CLAP behind the `Embedder` interface, loaded from weights on disk (never from the hub).

- `clap`: a transformers `ClapModel` folder (`config.json`, weights, and the `ClapProcessor` files),
  e.g. what `ClapModel.from_pretrained("laion/clap-htsat-unfused").save_pretrained(dir)` plus the
  processor's `save_pretrained(dir)` wrote on a machine with hub access.
- `laion-clap`: a LAION-CLAP checkpoint file (`*.pt`) for the `laion_clap` package.

The paper's CLAP baseline uses 10 s windows with a 1 s hop at 48 kHz; those are the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from songtrace.artifacts import hash_json, read_json, sha256_file
from songtrace.data.windows import l2_normalise
from songtrace.embedders.base import Embedder
from songtrace.errors import SongtraceError, missing_package
from songtrace.extras import check_safetensors_weights, pretrained_options

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HOW_TO_GET = (
    "on a machine with hub access run: `from transformers import ClapModel, ClapProcessor; "
    "ClapModel.from_pretrained('laion/clap-htsat-unfused').save_pretrained(DIR); "
    "ClapProcessor.from_pretrained('laion/clap-htsat-unfused').save_pretrained(DIR)` and copy DIR here"
)


def weights_hash(files: Sequence[Path]) -> str:
    """Content hash of weight files (their names and bytes)."""
    return hash_json({p.name: sha256_file(p) for p in sorted(files)})


def _first_tensor(out):
    """transformers 4 returns a tensor from get_*_features, transformers 5 an output with `pooler_output`."""
    return out if hasattr(out, "detach") else out.pooler_output


def check_clap_dir(path: Path) -> list[Path]:
    """The weight files of a transformers CLAP folder, or a clear error saying what is missing."""
    if not path.exists():
        raise SongtraceError(f"{path}: no CLAP weights here; {HOW_TO_GET}")
    if not path.is_dir() or not (path / "config.json").exists():
        raise SongtraceError(f"{path}: not a transformers ClapModel folder (no config.json); {HOW_TO_GET}")
    model_type = read_json(path / "config.json").get("model_type")
    if model_type != "clap":
        raise SongtraceError(f"{path / 'config.json'}: model_type is {model_type!r}, expected 'clap'")
    weights = [path / f for f in WEIGHT_FILES if (path / f).exists()] or sorted(path.glob("model-*.safetensors"))
    if not weights:
        raise SongtraceError(f"{path}: config.json but no weights ({', '.join(WEIGHT_FILES)}); {HOW_TO_GET}")
    check_safetensors_weights(path, "the CLAP weights")
    if not (path / "preprocessor_config.json").exists() and not (path / "processor_config.json").exists():
        raise SongtraceError(f"{path}: no ClapProcessor files (preprocessor_config.json); save the processor beside the model")
    return weights


class ClapEmbedder(Embedder):
    """transformers `ClapModel` + `ClapProcessor` from a local folder; audio and text."""

    def __init__(self, path: str | Path, window_seconds: float | None = None, hop_seconds: float = 1.0,
                 batch_size: int = 16, name: str = "clap") -> None:
        path = Path(path)
        weights = check_clap_dir(path)
        try:
            import torch
            from transformers import ClapModel, ClapProcessor
        except ImportError:
            raise missing_package("transformers", "the clap embedder") from None
        self._torch = torch
        # offline without touching os.environ; safetensors weights only unless pickles are allowed
        self.model = ClapModel.from_pretrained(str(path), local_files_only=True, **pretrained_options()).eval()
        self.processor = ClapProcessor.from_pretrained(str(path), local_files_only=True)
        extractor = self.processor.feature_extractor
        self.name = name
        self.path = path
        self.content_hash = weights_hash(weights)
        self.sample_rate = int(extractor.sampling_rate)
        self.window_seconds = float(window_seconds or extractor.nb_max_samples / extractor.sampling_rate)
        self.hop_seconds = float(hop_seconds)
        self.batch_size = int(batch_size)
        self.dim = int(self.model.config.projection_dim)

    @property
    def has_text(self) -> bool:
        return True

    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        """CLAP audio embeddings of a track's windows at 48 kHz, in batches."""
        windows = self.windows(wave)
        out = []
        with self._torch.no_grad():
            for i in range(0, len(windows), self.batch_size):
                inputs = self.processor(audio=windows[i : i + self.batch_size], sampling_rate=self.sample_rate, return_tensors="pt")
                out.append(_first_tensor(self.model.get_audio_features(**inputs)).float().numpy())
        return np.concatenate(out)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """CLAP text embeddings `[B, D]` (normalised)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._torch.no_grad():
            inputs = self.processor(text=list(texts), padding=True, return_tensors="pt")
            emb = _first_tensor(self.model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
        emb = emb.float().numpy()
        return l2_normalise(emb.astype(np.float32))


class LaionClapEmbedder(Embedder):
    """A LAION-CLAP checkpoint (`laion_clap.CLAP_Module`); audio and text.

    `laion_clap` builds its text tower with `RobertaModel.from_pretrained('roberta-base')`, so that
    model must also be in the local Hugging Face cache.
    """

    def __init__(self, checkpoint: str | Path, amodel: str = "HTSAT-base", enable_fusion: bool = False,
                 window_seconds: float = 10.0, hop_seconds: float = 1.0, name: str = "laion-clap") -> None:
        checkpoint = Path(checkpoint)
        if checkpoint.is_dir():
            found = sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.ckpt"))
            if not found:
                raise SongtraceError(f"{checkpoint}: no LAION-CLAP checkpoint (*.pt) in this folder; download one "
                                     "(e.g. music_audioset_epoch_15_esc_90.14.pt) on a machine with internet and copy it here")
            checkpoint = found[0]
        if not checkpoint.exists():
            raise SongtraceError(f"{checkpoint}: LAION-CLAP checkpoint not found; download one (e.g. "
                                 "music_audioset_epoch_15_esc_90.14.pt) on a machine with internet and copy it here")
        from songtrace.artifacts import refuse_pickle

        refuse_pickle(checkpoint, "a LAION-CLAP checkpoint (torch pickle)")
        try:
            import laion_clap
        except ImportError:
            raise missing_package("laion_clap", "the laion-clap embedder") from None
        self.model = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel)
        self.model.load_ckpt(str(checkpoint))
        self.name = name
        self.content_hash = weights_hash([checkpoint])
        self.sample_rate = 48000
        self.window_seconds = float(window_seconds)
        self.hop_seconds = float(hop_seconds)
        self.dim = 512

    @property
    def has_text(self) -> bool:
        return True

    def _embed_track(self, wave: np.ndarray) -> np.ndarray:
        """LAION-CLAP audio embeddings of a track's (equal-length) 48 kHz windows."""
        return np.asarray(self.model.get_audio_embedding_from_data(x=np.stack(self.windows(wave)), use_tensor=False), dtype=np.float32)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """LAION-CLAP text embeddings `[B, D]` (normalised)."""
        emb = np.asarray(self.model.get_text_embedding(list(texts), use_tensor=False), dtype=np.float32)
        return l2_normalise(emb)
