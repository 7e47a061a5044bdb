"""Benchmarks (not tests): they start the real stack and print figures. See BENCHMARKS.md."""
