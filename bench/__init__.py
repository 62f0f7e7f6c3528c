"""Benchmarks: each prints JSON results and compares with a baseline measured in the same run."""
