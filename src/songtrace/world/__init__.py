"""songtrace.world"""
