"""Benchmarks: `python -m bench.<name>` writes JSON to bench/results/<name>.json."""
