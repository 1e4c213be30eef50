"""Benchmarks against the simulator: ``make bench`` (``python -m bench``) → ``bench/REPORT.md`` + ``bench/results.json``."""
