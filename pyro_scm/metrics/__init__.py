"""Metrics: distances between samples, counterfactual errors, and query-specific scores.

One module per family: :mod:`~pyro_scm.metrics.tabular` (MMD, counterfactual and ATE errors,
held-out likelihood).
"""

from .tabular import *  # noqa: F403
from .tabular import __all__ as _tabular

__all__ = [*_tabular]
