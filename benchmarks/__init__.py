"""Benchmarks: side-by-side ratios measured in one run (not timed tests)."""
