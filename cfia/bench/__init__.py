"""Benchmarks (`python -m cfia.bench.node`) and the fake processors they and the tests use."""
