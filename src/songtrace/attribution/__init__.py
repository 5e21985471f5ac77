"""songtrace.attribution: training-data attribution by unlearning (seed 002).

    fisher = compute_fisher(model, latents, FisherConfig(group="all", n_timesteps=16))   # diag F (§2.2)
    delta = unlearn(model, fisher, query.batch, UnlearnConfig(lr=1.0, mask="mixed"))      # θ' − θ0 (Eq. 6)
    base = base_losses(model, latents, ScoreConfig(), mask_loss=False)                    # L(z_i, θ0), cacheable
    tau = influence(model, delta, latents, ScoreConfig(), mask_loss=False, base=base)     # τ(ẑ, z_i) (Eq. 2)

or all at once: `attribute_queries(model, fisher, latents, queries, AttributeConfig())`; from artifact
directories: `fit_fisher(...)` and `attribute(...)` (the `songtrace fisher` / `songtrace attribute` commands).
"""

from songtrace.attribution.best_config import (
    best_config_path,
    default_unlearn_config,
    find_best_config,
    resolve_unlearn_config,
    save_best_config,
)
from songtrace.attribution.delta import UnlearnedDelta, load_delta, save_delta
from songtrace.attribution.fisher import (
    PER_SAMPLE_METHODS,
    Fisher,
    FisherConfig,
    accumulate_squares,
    check_fisher,
    check_fits,
    check_inputs,
    compute_fisher,
    fisher_diag,
    fit_fisher,
    per_sample_grads,
)
from songtrace.attribution.groups import is_regex, split_params, target_params
from songtrace.attribution.query import QUERY_KINDS, Query, QueryContext, make_query, query_kind, resolve_query
from songtrace.attribution.run import (
    AttributeConfig,
    Attribution,
    AttributionRun,
    attribute,
    attribute_queries,
    credits_table,
    item_titles,
    load_attribution,
    load_run_delta,
    ranking_table,
    recompute_scores,
)
from songtrace.attribution.score import (
    ScoreConfig,
    base_losses,
    credit_shares,
    influence,
    item_losses,
    loss_pass,
    ranks,
    score_many,
)
from songtrace.attribution.unlearn import (
    MASKS,
    UnlearnConfig,
    apply_delta,
    damping_value,
    delta_norm,
    first_query_gradient,
    mask_setting,
    query_gradient,
    unlearn,
    unlearn_iterates,
    unlearn_step,
)

__all__ = [
    "MASKS",
    "PER_SAMPLE_METHODS",
    "QUERY_KINDS",
    "AttributeConfig",
    "Attribution",
    "AttributionRun",
    "Fisher",
    "FisherConfig",
    "Query",
    "QueryContext",
    "ScoreConfig",
    "UnlearnConfig",
    "UnlearnedDelta",
    "accumulate_squares",
    "apply_delta",
    "attribute",
    "attribute_queries",
    "base_losses",
    "best_config_path",
    "check_fisher",
    "check_fits",
    "check_inputs",
    "compute_fisher",
    "credit_shares",
    "credits_table",
    "damping_value",
    "default_unlearn_config",
    "delta_norm",
    "find_best_config",
    "first_query_gradient",
    "fisher_diag",
    "fit_fisher",
    "influence",
    "is_regex",
    "item_losses",
    "item_titles",
    "load_attribution",
    "load_delta",
    "load_run_delta",
    "loss_pass",
    "make_query",
    "mask_setting",
    "per_sample_grads",
    "query_gradient",
    "query_kind",
    "ranking_table",
    "ranks",
    "recompute_scores",
    "resolve_query",
    "resolve_unlearn_config",
    "save_best_config",
    "save_delta",
    "score_many",
    "split_params",
    "target_params",
    "unlearn",
    "unlearn_iterates",
    "unlearn_step",
]
