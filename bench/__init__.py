"""Developer benchmarks (not deployed)."""
