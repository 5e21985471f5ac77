"""songtrace.attribution"""
