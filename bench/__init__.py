"""Benchmarks of ingestd: `python -m bench --help`."""
