"""Benchmarks of the platform on the direct runtime: `make bench` (`python -m bench.run`)."""
