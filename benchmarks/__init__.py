"""Benchmarks (`make bench`, not part of `make test`): see docs/performance.md."""
