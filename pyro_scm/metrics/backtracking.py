"""The DeepBC paper's counterfactual-explanation metrics (its Eq. 21): plausible, obs, causal.

For factual x with noise u and counterfactual x* with noise u* (both abducted by a reference
SCM, ideally the true one):

- ``plausible`` = −log p(x*) under the reference SCM (lower: closer to the data manifold);
- ``obs`` = Σ_i d(x*_i, x_i) over the chosen nodes (closeness in observation space);
- ``causal`` = Σ_i d(u*_i, u_i) (how much the exogenous noise had to change: the degree to which
  the mechanisms are preserved).

``d`` is ``"squared"`` (SQU) or ``"absolute"`` (ABS). Every function returns per-unit scores
``(units,)``; average them for the paper's table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro.poutine as poutine
import torch
from torch import Tensor

__all__ = ["causal_metric", "obs_metric", "plausible_metric"]


def _d(a: Tensor, b: Tensor, kind: str) -> Tensor:
    diff = (a - b).reshape(a.shape[0], -1)
    if kind == "squared":
        return diff.square().sum(-1)
    if kind == "absolute":
        return diff.abs().sum(-1)
    raise ValueError(f"unknown distance {kind!r}; use 'squared' or 'absolute'")


def obs_metric(
    counterfactual: Mapping[str, Tensor],
    factual: Mapping[str, Tensor],
    nodes: Sequence[str] | None = None,
    kind: str = "squared",
) -> Tensor:
    """Σ_i d(x*_i, x_i) per unit; values ``(units, *event)``."""
    nodes = list(nodes or factual)
    return sum(_d(counterfactual[n], factual[n], kind) for n in nodes)


def causal_metric(
    scm,
    counterfactual: Mapping[str, Tensor],
    factual: Mapping[str, Tensor],
    nodes: Sequence[str] | None = None,
    kind: str = "squared",
) -> Tensor:
    """Σ_i d(u*_i, u_i) per unit, the noise abducted by ``scm`` from both worlds."""
    nodes = list(nodes or factual)
    with torch.no_grad():
        u_cf, u_f = scm.abduct(dict(counterfactual)), scm.abduct(dict(factual))
    return sum(_d(u_cf[n], u_f[n], kind) for n in nodes)


def plausible_metric(
    scm, counterfactual: Mapping[str, Tensor], nodes: Sequence[str] | None = None
) -> Tensor:
    """−Σ_i log p(x*_i | pa*_i) per unit under ``scm`` (mechanisms with a tractable log_prob)."""
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.condition(scm.model, data=dict(counterfactual))).get_trace()
    nodes = list(nodes or counterfactual)
    return -sum(trace.nodes[n]["fn"].log_prob(trace.nodes[n]["value"]) for n in nodes)
