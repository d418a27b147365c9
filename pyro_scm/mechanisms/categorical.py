"""Categorical mechanisms: a Gumbel-max SCM for discrete nodes (class labels, digits).

x = one_hot(argmax_k(logits_k(pa) + g_k)) with g_k ~ Gumbel(0, 1). Abduction samples the Gumbel
noise from its posterior given the observed category (Oberst & Sontag 2019, "Counterfactual
off-policy evaluation with Gumbel-max structural causal models"): the maximum is
Gumbel(logsumexp(logits)) and the other perturbed logits are Gumbels truncated below it.
Values are one-hot vectors ``(*batch, K)``; data and interventions may also give class indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import MLP
from .base import (
    Mechanism,
    MechanismDistribution,
    WrappedMechanismDistribution,
    flatten_parents,
)

__all__ = ["CategoricalMechanism", "GumbelMaxDistribution", "RelaxedGumbelMax"]


class CategoricalMechanism(Mechanism):
    """A Gumbel-max mechanism over ``num_classes`` categories, one-hot valued.

    Args:
        num_classes: the number of categories K.
        context: total size of the parents (0 for a root).
        hidden: hidden sizes of the logits network (ignored for a root).

    Example:
        >>> import torch
        >>> digit = CategoricalMechanism(10)
        >>> digit().sample((3,)).shape
        torch.Size([3, 10])
    """

    def __init__(self, num_classes: int, context: int = 0, hidden: Sequence[int] = (64,)):
        super().__init__()
        self.num_classes, self.context_features = num_classes, context
        self.event_shape = torch.Size([num_classes])
        if context > 0:
            self.net = MLP(context, num_classes, hidden)
        else:
            self.root_logits = nn.Parameter(torch.zeros(num_classes))

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        """Start a root's logits at the empirical class frequencies."""
        if self.context_features == 0:
            freq = value.reshape(-1, self.num_classes).mean(0).clamp_min(1e-6)
            with torch.no_grad():
                self.root_logits.copy_(freq.log())

    def forward(self, *parents: Tensor) -> GumbelMaxDistribution:
        """The node's distribution given its parents' values (lazy: no network runs yet)."""
        context, batch_shape = flatten_parents(parents, self.context_features)
        return GumbelMaxDistribution(self, context, batch_shape)

    def logits(self, context: Tensor | None) -> Tensor:
        """The logits ``(*batch, K)`` of a context ``(*batch, C)`` (``(K,)`` for a root)."""
        return self.net(context) if context is not None else self.root_logits


class GumbelMaxDistribution(MechanismDistribution, dist.OneHotCategorical):
    """One-hot categorical distribution that exposes its Gumbel-max noise.

    Lazy: the logits network runs on first use of ``logits`` (``generate``, ``abduct``,
    ``log_prob``, ``loss``), not when the mechanism is called.
    """

    deterministic_abduction = False

    def __init__(
        self, mechanism: CategoricalMechanism, context: Tensor | None, batch_shape: torch.Size
    ):
        self.mechanism, self.context = mechanism, context
        self._cached: dist.Categorical | None = None
        event = torch.Size([mechanism.num_classes])
        torch.distributions.Distribution.__init__(
            self, torch.Size(batch_shape), event, validate_args=False
        )

    @property
    def _categorical(self) -> dist.Categorical:
        if self._cached is None:
            logits = self.mechanism.logits(self.context)
            self._cached = dist.Categorical(logits=logits, validate_args=False)
        return self._cached

    @_categorical.setter
    def _categorical(self, value: dist.Categorical) -> None:
        self._cached = value

    @property
    def noise(self) -> dist.Distribution:
        zero = torch.zeros((), dtype=self.logits.dtype, device=self.logits.device)
        return dist.Gumbel(zero, 1.0).expand(self.logits.shape).to_event(1)

    def generate(self, u: Tensor) -> Tensor:
        """One-hot of ``argmax(logits + u)``, ``(*batch, K)``."""
        index = (self.logits + u).argmax(-1)
        return F.one_hot(index, self.logits.shape[-1]).to(self.logits.dtype)

    def abduct(self, x: Tensor) -> Tensor:
        """A draw of the Gumbel noise from its posterior given the one-hot value ``x``."""
        logits = self.logits.expand(x.shape)
        top = torch.logsumexp(logits, -1, keepdim=True)
        top = top + dist.Gumbel(torch.zeros_like(top), 1.0).sample()
        g = logits + dist.Gumbel(torch.zeros_like(logits), 1.0).sample()
        below = -torch.log(torch.exp(-top) + torch.exp(-g))  # Gumbel truncated at `top`
        perturbed = torch.where(x > 0.5, top, below)
        return perturbed - logits


class RelaxedGumbelMax(WrappedMechanismDistribution):
    """softmax((logits + u) / τ): the differentiable relaxation of a Gumbel-max mechanism."""

    def __init__(self, base: GumbelMaxDistribution, temperature: float):
        super().__init__(base)
        self.temperature = temperature

    def generate(self, u: Tensor) -> Tensor:
        self.perturbed = self.base.logits + u  # read by a categorical antecedent's residual
        return F.softmax(self.perturbed / self.temperature, -1)
