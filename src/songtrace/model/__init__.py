"""songtrace.model"""
