"""Benchmarks: quality and speed, measured side by side with baselines."""
