"""Backtracking conditionals P_B(u* | u) ∝ exp(−Σ_k λ_k d_k(u*_k, u_k)) as distances.

A distance scores how far counterfactual noise u* lies from the factual noise u, node by node:
``distance(node, u_star, u)`` returns ``(*batch,)``, summed over the node's noise event dims.
Besides scoring, a distance may offer

- ``quadratic_weights(node, u_star, u)``: diagonal weights w of a quadratic majoriser
  Σ w (u* − u)² of d at ``u_star`` (up to a constant), which the constraint-linearised mode
  solver uses (exact for :class:`SquaredL2`, iteratively reweighted for :class:`L1`); ``None``
  when the distance has none (then use a gradient solver);
- ``sample(node, u, prior)``: draws from P_B(· | u) (times the standard normal prior when
  ``prior``), used for latents that the antecedent does not constrain; ``None`` when the
  distance cannot sample them directly (they are then sampled by MCMC).

:func:`as_distance` turns ``None`` (the default squared distance), a distance or a plain
callable ``fn(u_star, u) -> (*batch, *event)`` into a :class:`Distance`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .errors import DistanceError

__all__ = ["L1", "CallableDistance", "Distance", "SquaredL2", "as_distance"]


class Distance:
    """Base class: per-node weighted distances between counterfactual and factual noise.

    Args:
        weights: node -> λ_k (a number, or a tensor broadcastable to the node's noise event);
            nodes not named get 1.
    """

    def __init__(self, weights: Mapping[str, float | Tensor] | None = None):
        self.weights = dict(weights or {})

    def weight(self, node: str, like: Tensor) -> Tensor:
        """λ of ``node`` as a tensor on ``like``'s device and dtype."""
        w = self.weights.get(node, 1.0)
        return torch.as_tensor(w, dtype=like.dtype, device=like.device)

    def elementwise(self, a: Tensor, b: Tensor) -> Tensor:
        """The unweighted distance per noise element, same shape as ``a``."""
        raise NotImplementedError

    def __call__(self, node: str, u_star: Tensor, u: Tensor, event_dim: int) -> Tensor:
        """λ d(u*, u) summed over the last ``event_dim`` dims: ``(*batch,)``."""
        d = self.weight(node, u_star) * self.elementwise(u_star, u)
        return d.sum(tuple(range(-event_dim, 0))) if event_dim else d

    def total(self, u_star: Mapping[str, Tensor], u: Mapping[str, Tensor], event_dims) -> Tensor:
        """Σ_k λ_k d_k over the nodes of ``u_star``: ``(*batch,)``."""
        return sum(self(k, u_star[k], u[k], event_dims[k]) for k in u_star)

    def quadratic_weights(self, node: str, u_star: Tensor, u: Tensor) -> Tensor | None:
        """Weights of a quadratic majoriser at ``u_star`` (shape of ``u_star``), or None."""
        return None

    def sample(self, node: str, u: Tensor, prior: bool) -> Tensor | None:
        """A draw from P_B(· | u) (times N(0, I) when ``prior``), or None if unavailable."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weights})"


class SquaredL2(Distance):
    """d(u*, u) = λ ‖u* − u‖²: P_B = N(u, 1/(2λ) I), the paper's default (λ = 1).

    Example:
        >>> d = SquaredL2(weights={"x": 2.0})
        >>> d("x", torch.tensor([1.0]), torch.tensor([0.0]), event_dim=0)
        tensor([2.])
    """

    def elementwise(self, a: Tensor, b: Tensor) -> Tensor:
        return (a - b).square()

    def quadratic_weights(self, node: str, u_star: Tensor, u: Tensor) -> Tensor:
        return self.weight(node, u_star).expand_as(u_star)

    def sample(self, node: str, u: Tensor, prior: bool) -> Tensor:
        precision = 2 * self.weight(node, u)
        mean = u
        if prior:  # N(u, 1/(2λ)) N(0, 1) ∝ N(2λ u / (2λ + 1), 1 / (2λ + 1))
            mean, precision = precision * u / (precision + 1), precision + 1
        return mean + torch.randn_like(u) / precision.sqrt()


class L1(Distance):
    """d(u*, u) = λ Σ (sqrt((u* − u)² + ε²) − ε): the absolute distance, smoothed by ε.

    P_B is close to a Laplace distribution with scale 1/λ, from which unconstrained latents are
    drawn (exactly a Laplace as ε -> 0); with ``prior`` they are sampled by MCMC.
    """

    def __init__(self, weights: Mapping[str, float | Tensor] | None = None, eps: float = 1e-3):
        super().__init__(weights)
        self.eps = eps

    def elementwise(self, a: Tensor, b: Tensor) -> Tensor:
        return ((a - b).square() + self.eps**2).sqrt() - self.eps

    def quadratic_weights(self, node: str, u_star: Tensor, u: Tensor) -> Tensor:
        # sqrt(r² + ε²) <= sqrt(r0² + ε²) + (r² − r0²) / (2 sqrt(r0² + ε²))
        r0 = ((u_star - u).square() + self.eps**2).sqrt()
        return self.weight(node, u_star) / (2 * r0)

    def sample(self, node: str, u: Tensor, prior: bool) -> Tensor | None:
        if prior:
            return None
        scale = 1 / self.weight(node, u)
        return torch.distributions.Laplace(u, scale.expand_as(u)).sample()


class CallableDistance(Distance):
    """A user's distance ``fn(u_star, u) -> (*batch, *event)`` (or ``fn(node, u_star, u)``).

    Used by gradient solvers and MCMC; it has no quadratic majoriser and no direct sampler.
    """

    def __init__(self, fn: Callable, weights: Mapping[str, float | Tensor] | None = None):
        super().__init__(weights)
        self.fn = fn
        try:
            import inspect

            self._takes_node = len(inspect.signature(fn).parameters) == 3
        except (TypeError, ValueError):
            self._takes_node = False

    def __call__(self, node: str, u_star: Tensor, u: Tensor, event_dim: int) -> Tensor:
        d = self.fn(node, u_star, u) if self._takes_node else self.fn(u_star, u)
        d = torch.as_tensor(d)
        batch_dim = u_star.dim() - event_dim
        if d.dim() > batch_dim:
            d = d.sum(tuple(range(batch_dim, d.dim())))
        return self.weight(node, u_star) * d

    def __repr__(self) -> str:
        return f"CallableDistance({getattr(self.fn, '__name__', self.fn)!r})"


def as_distance(distance: object) -> Distance:
    """``None`` -> :class:`SquaredL2`; a :class:`Distance` as is; a callable wrapped."""
    if distance is None:
        return SquaredL2()
    if isinstance(distance, Distance):
        return distance
    if callable(distance):
        return CallableDistance(distance)
    raise DistanceError(
        f"distance must be a pyro_scm.distances.Distance or a callable, not "
        f"{type(distance).__name__}"
    )
