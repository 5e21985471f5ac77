"""songtrace.evaluate: embedders (songclap, dsp, real CLAP/openl3 loaders) and the metrics built on them.

FD with FD-infinity, text-audio alignment, windowed all-against-all similarity, retrieval and the
conditioning check all take an `Embedder`, so a user with real CLAP/openl3 weights plugs them in.
"""

from songtrace.evaluate.alignment import AlignmentResult, text_audio_alignment
from songtrace.evaluate.audio_sets import TrackSet, folder_tracks, parse_source, world_tracks
from songtrace.evaluate.conditioning import conditioning_check
from songtrace.evaluate.embed_world import EmbedWorldConfig, embed_world, load_world_embeddings
from songtrace.evaluate.embedders import EMBEDDERS, DspEmbedder, Embedder, load_embedder
from songtrace.evaluate.fd import FDResult, embed_set, fd_between, fd_infinity, fd_result, frechet_distance, frechet_from_stats
from songtrace.evaluate.retrieval import nearest_neighbour_accuracy, recall_at_k, retrieval_report
from songtrace.evaluate.similarity import WindowBank, cosine_matrix, max_similarity_matrix, window_similarity_matrix

__all__ = [
    "EMBEDDERS",
    "AlignmentResult",
    "DspEmbedder",
    "EmbedWorldConfig",
    "Embedder",
    "FDResult",
    "TrackSet",
    "WindowBank",
    "conditioning_check",
    "cosine_matrix",
    "embed_set",
    "embed_world",
    "fd_between",
    "fd_infinity",
    "fd_result",
    "folder_tracks",
    "frechet_distance",
    "frechet_from_stats",
    "load_embedder",
    "load_world_embeddings",
    "max_similarity_matrix",
    "nearest_neighbour_accuracy",
    "parse_source",
    "recall_at_k",
    "retrieval_report",
    "text_audio_alignment",
    "window_similarity_matrix",
    "world_tracks",
]
