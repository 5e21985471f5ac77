"""songtrace.selfinfluence: the Train-to-Train self-influence protocol of seed 002, Table 1 (targets, grid, metrics, best configuration)."""
