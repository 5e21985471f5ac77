"""songtrace.baselines"""
