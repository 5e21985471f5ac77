"""songtrace.report"""
