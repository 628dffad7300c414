"""Benchmarks that print JSON figures (``nes2net-stream bench``)."""
