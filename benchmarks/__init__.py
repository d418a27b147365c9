"""Benchmarks of pyro_scm against ground truth, published numbers and peer libraries.

Run ``python -m benchmarks.run --quick`` (or ``python benchmarks/run.py``); see ``run.py``.
"""
