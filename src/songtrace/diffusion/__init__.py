"""songtrace.diffusion"""
