"""songtrace.compare: the Test-to-Train comparison of attribution methods (seed 002, Figs. 1-2)."""
