"""songtrace.groundtruth: counterfactual ground truth by retraining (LDS subsets, leave-one-out, leave-one-artist-out).

    gt = build_ground_truth(GroundTruthConfig(), latents_dir, world_dir, codec_dir, out_dir, workers=2)
    table = evaluate_methods(gt, methods, EvaluateConfig())      # LDS / LOO / artist Spearman with bootstrap CIs

It sits above `selfinfluence` (the unlearning method is scored at the self-influence search's best
configuration) and below `compare`.
"""

from songtrace.groundtruth.config import MICRO_DIT, MICRO_TRAIN, GroundTruthConfig
from songtrace.groundtruth.plan import Job, plan_jobs, subset_masks
from songtrace.groundtruth.run import GroundTruth, build_ground_truth, load_ground_truth

__all__ = ["MICRO_DIT", "MICRO_TRAIN", "GroundTruth", "GroundTruthConfig", "Job", "build_ground_truth", "load_ground_truth",
           "plan_jobs", "subset_masks"]
