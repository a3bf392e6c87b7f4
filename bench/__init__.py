"""Throughput and memory benchmarks of lit_rl; `python -m bench.run` (``make bench``) runs them all."""
