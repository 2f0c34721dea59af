"""Benchmarks: one ``bench_*.py`` module per area, each with a ``main()`` that prints its figures."""
