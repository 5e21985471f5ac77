"""Embedders: audio (and text) -> vectors for the metrics and the embedding baselines."""

from songtrace.embedders.base import Embedder, scaled_windows, split_windows
from songtrace.embedders.dsp import DspEmbedder
from songtrace.embedders.registry import EMBEDDERS, detect_kind, load_embedder

__all__ = [
    "EMBEDDERS",
    "DspEmbedder",
    "Embedder",
    "detect_kind",
    "load_embedder",
    "scaled_windows",
    "split_windows",
]
