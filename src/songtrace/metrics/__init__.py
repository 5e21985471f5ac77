"""songtrace.metrics: measurements of models and their outputs, each taking an `Embedder` where audio is compared.

FD with FD-infinity, text-audio alignment, windowed all-against-all similarity, retrieval and the
conditioning check; later LDS, leave-one-out and membership inference (counterfactual ground truth).
"""

from songtrace.embedders.retrieval import nearest_neighbour_accuracy, recall_at_k, retrieval_report
from songtrace.metrics.alignment import AlignmentResult, text_audio_alignment
from songtrace.metrics.conditioning import conditioning_check
from songtrace.metrics.fd import FDResult, embed_set, fd_between, fd_infinity, fd_result, frechet_distance, frechet_from_stats
from songtrace.metrics.similarity import cosine_matrix, embed_window_bank, window_similarity_matrix

__all__ = [
    "AlignmentResult",
    "FDResult",
    "conditioning_check",
    "cosine_matrix",
    "embed_set",
    "embed_window_bank",
    "fd_between",
    "fd_infinity",
    "fd_result",
    "frechet_distance",
    "frechet_from_stats",
    "nearest_neighbour_accuracy",
    "recall_at_k",
    "retrieval_report",
    "text_audio_alignment",
    "window_similarity_matrix",
]
