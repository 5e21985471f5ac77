"""songtrace.optout"""
