"""songtrace.codec"""
