"""Rung three by backtracking: the antecedent is reached by changing the exogenous noise, not by
intervening. The query itself is :func:`pyro_scm.infer.backtrack` (mode and stochastic DeepBC):
its free latents are the antecedent nodes and their ancestors, derived from the graph, and its
program stops after the antecedent."""

from __future__ import annotations

from collections.abc import Mapping

from ..infer.backtrack import backtrack as _solve
from ..results import QueryResult

__all__ = ["backtrack"]


def backtrack(scm, factual: object, antecedent: Mapping[str, object], **kwargs) -> QueryResult:
    """Backtracking counterfactual of ``scm``; see :func:`pyro_scm.infer.backtrack`."""
    return _solve(scm, factual, antecedent, **kwargs)
