"""Benchmarks against the simulator: ``make bench`` (``python -m bench``) → ``bench/results.json`` +
``bench/RESULTS.md`` (tables); ``bench/REPORT.md`` (what they mean) is written by hand."""
