"""Benchmark datasets and generators (offline-first; online loaders where a dataset is not packaged)."""
