"""Attribution methods behind one interface: unlearning and the paper's non-counterfactual baselines.

`get_method(name, **options)` builds one: `unlearning` (seed 002, Eq. 6), `embedding` (CLAP-like),
`version` (CLEWS-like), `activations` (LPIPS-like), `representer` (RPS) and `gradient`
(TRAK/D-TRAK-like). Each scores a `QueryItem` against a `TrainingSet`: one score per training item.
"""

from songtrace.baselines.base import (
    METHODS,
    AttributionMethod,
    QueryItem,
    TrainingSet,
    build_method,
    get_method,
    method_names,
    prepare_method,
    register_method,
    score_many,
)

__all__ = [
    "METHODS",
    "AttributionMethod",
    "QueryItem",
    "TrainingSet",
    "build_method",
    "get_method",
    "method_names",
    "prepare_method",
    "register_method",
    "score_many",
]
