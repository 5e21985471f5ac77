"""songtrace.evaluate"""
