"""The parts of `experiments/benchmark.py`, one job a module; none of them reads ``FLAGS``."""
