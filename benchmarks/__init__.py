"""taskstream's benchmark suite: ``python -m benchmarks.run --quick`` (see run.py)."""
