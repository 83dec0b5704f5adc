"""Benchmarks: each compares ours against a baseline measured in the same run."""
