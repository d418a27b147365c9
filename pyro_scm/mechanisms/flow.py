"""Flow mechanisms: a node's structural equation as a conditional normalizing flow (zuko).

The node's value x and its parents' context c are standardised with statistics learnt at fit
time; then an unbounded conditional affine layer and the user's flow map x to the noise u:

    s = (x - μ_x) / σ_x,   r = (s - a(c)) / σ(c),   u = T(r; c),   σ(c) = softplus(b(c)),

so x = μ_x + σ_x · (a(c) + σ(c) · T⁻¹(u; c)). Spline flows (NSF) are the identity outside
their bound. The training loss adds the Gaussian negative log-likelihood of the residual r, so
the affine layer learns the conditional location and scale (a heteroscedastic additive-noise
model) and the flow only the remaining shape; a unit beyond the spline's bound is then abducted
and predicted by that additive-noise model (u = r), not by an identity map of standardised x.
This does not bias the fit inside the bound, where the flow can absorb any affine layer. The
scale is a softplus rather than an exponential of the network's output: a network extrapolates
about linearly off the training support, and so does the scale, where an exponential would grow
the counterfactual spread exponentially with the distance from the data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from pyro.distributions import constraints
from torch import Tensor, nn
from torch.distributions import Transform

from ..errors import MechanismError
from ..nets import MLP, Standardizer, positive_scale
from .base import Mechanism, TransformedMechanismDistribution, flatten_parents

__all__ = ["FlowDistribution", "FlowMechanism"]


class FlowMechanism(Mechanism):
    r"""A mechanism x = f(u; pa) given by any zuko flow, invertible in u.

    Args:
        flow: a zuko lazy flow (``zuko.flows.NSF``, ``MAF``, ``NAF``, ...) with ``features``
            equal to the node's size and ``context`` equal to the total size of its parents
            (0 for a root).
        context: the flow's context size; inferred from the flow when omitted.
        event_shape: the node's event shape; ``()`` (a scalar node) when the flow has one feature,
            else ``(features,)``.
        tails: add the unbounded conditional affine layer around the flow (recommended).
        hidden: hidden sizes of the network giving the affine layer's shift and log-scale.

    Example:
        >>> import zuko, torch
        >>> mech = FlowMechanism(zuko.flows.NSF(features=1, context=1))
        >>> d = mech(torch.randn(5))
        >>> torch.allclose(d.generate(d.abduct(torch.ones(5))), torch.ones(5), atol=1e-5)
        True
    """

    def __init__(
        self,
        flow: nn.Module,
        *,
        context: int | None = None,
        event_shape: Sequence[int] | None = None,
        tails: bool = True,
        hidden: Sequence[int] = (32,),
    ):
        super().__init__()
        self.flow = flow
        self.features = _flow_features(flow)
        self.context_features = _flow_context(flow, self.features) if context is None else context
        if event_shape is None:
            event_shape = () if self.features == 1 else (self.features,)
        self.event_shape = torch.Size(event_shape)
        if self.event_shape.numel() != self.features:
            raise MechanismError(
                f"event shape {tuple(self.event_shape)} does not hold the flow's "
                f"{self.features} features"
            )
        self.x_std = Standardizer(self.features)
        self.c_std = Standardizer(max(self.context_features, 1))
        self.tails: nn.Module | None = None
        if tails and self.context_features > 0:
            self.tails = MLP(self.context_features, 2 * self.features, hidden, zero_last=True)
        elif tails:
            self.tail_params = nn.Parameter(torch.zeros(2 * self.features))
        self._root_cache: dict | None = None

    @contextmanager
    def fixed_parameters(self) -> Iterator[None]:
        """Within: the parameters are constants (not updated, no gradient to them), so a root
        node's transform, which depends on nothing else, is built once (without autograd
        graph) and reused by every call; samplers that run the program thousands of times
        with fixed weights use this. Gradients to the noise and the parents are unchanged."""
        outer, self._root_cache = self._root_cache, {}
        try:
            yield
        finally:
            self._root_cache = outer

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        """Learn the standardisation of the node (``(n, *event)``) and of its parents."""
        self.x_std.fit(value.reshape(*value.shape[: value.dim() - len(self.event_shape)], -1))
        context, _ = flatten_parents(parents, self.context_features)
        if context is not None:
            self.c_std.fit(context)

    def forward(self, *parents: Tensor) -> FlowDistribution:
        """The node's distribution given its parents' values.

        Lazy, as zuko's flows: the networks (tails, hyper-networks) run on first use of the
        transform (``generate``, ``abduct``, ``log_prob``, ``loss``), not here.
        """
        context, batch_shape = flatten_parents(parents, self.context_features)
        transform = _FlowTransform(self, context)
        return FlowDistribution(transform, batch_shape, self.event_shape, self, self.x_std.loc)

    def _affine(self, context: Tensor | None) -> tuple[Tensor, Tensor] | None:
        if self.tails is not None:
            shift, raw = self.tails(context).chunk(2, dim=-1)
        elif hasattr(self, "tail_params"):
            shift, raw = self.tail_params.chunk(2, dim=-1)
        else:
            return None
        return shift, positive_scale(raw).log()

    def _bijector(self, context: Tensor | None) -> Transform:
        return (self.flow() if context is None else self.flow(context)).transform


class _FlowTransform(Transform):
    """The bijection u -> x of a :class:`FlowMechanism` under a fixed context.

    ``context`` is the raw (unstandardised) context ``(*batch, C)``; it is standardised and the
    networks are evaluated on first use of ``affine`` or ``bijector``.
    """

    bijective = True

    def __init__(self, mechanism: FlowMechanism, context: Tensor | None):
        super().__init__(cache_size=1)
        self.mechanism = mechanism
        self.raw_context = context
        self._event_dim = len(mechanism.event_shape)
        self._built: tuple | None = None

    def _build(self) -> tuple:
        if self._built is None:
            m, c = self.mechanism, self.raw_context
            cache = m._root_cache
            if c is None and cache is not None:  # a root under fixed parameters: built once
                if "built" not in cache:
                    with torch.no_grad():
                        affine = m._affine(None)  # views of a parameter: detached copies
                        affine = None if affine is None else tuple(t.detach() for t in affine)
                        cache["built"] = (affine, m._bijector(None))
                self._built = cache["built"]
            else:
                c = m.c_std(c) if c is not None else None
                self._built = (m._affine(c), m._bijector(c))
        return self._built

    @property
    def affine(self) -> tuple[Tensor, Tensor] | None:
        """(shift, log-scale) of the unbounded affine layer, ``(*batch, F)`` each, or None."""
        return self._build()[0]

    @property
    def bijector(self) -> Transform:
        """The zuko flow's transform under the context."""
        return self._build()[1]

    @property
    def domain(self):
        return constraints.independent(constraints.real, self._event_dim)

    @property
    def codomain(self):
        return constraints.independent(constraints.real, self._event_dim)

    def _flat(self, v: Tensor) -> Tensor:
        return v.unsqueeze(-1) if self._event_dim == 0 else v

    def _unflat(self, v: Tensor) -> Tensor:
        return v.squeeze(-1) if self._event_dim == 0 else v

    def _call(self, u: Tensor) -> Tensor:
        r = self.bijector.inv(self._flat(u))
        if self.affine is not None:
            shift, log_scale = self.affine
            r = shift + log_scale.exp() * r
        return self._unflat(self.mechanism.x_std.inverse(r))

    def x_to_u(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The noise of ``x``, ``log |du/dx|`` per unit, and the residual r ``(*batch, F)``."""
        s = self.mechanism.x_std(self._flat(x))
        ladj = -self.mechanism.x_std.log_scale()
        if self.affine is not None:
            shift, log_scale = self.affine
            s = (s - shift) * (-log_scale).exp()
            ladj = ladj - log_scale.sum(-1)
        u, flow_ladj = self.bijector.call_and_ladj(s)
        return self._unflat(u), ladj + flow_ladj, s

    def _inverse(self, x: Tensor) -> Tensor:
        return self.x_to_u(x)[0]

    def log_abs_det_jacobian(self, u: Tensor, x: Tensor) -> Tensor:
        return -self.x_to_u(x)[1]


class FlowDistribution(TransformedMechanismDistribution):
    """The distribution a :class:`FlowMechanism` returns; ``log_prob`` in one pass of the flow."""

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x | pa), ``(*batch, *event)`` -> ``(*batch,)``."""
        u, ladj, _ = self.transform.x_to_u(x)
        return self.base_dist.log_prob(u) + ladj

    def loss(self, x: Tensor) -> Tensor:
        """NLL of x, plus the Gaussian NLL of the affine residual when the mechanism has tails."""
        u, ladj, r = self.transform.x_to_u(x)
        nll = -(self.base_dist.log_prob(u) + ladj)
        if self.transform.affine is None:
            return nll
        log_scale = self.transform.affine[1]
        return nll + (0.5 * r.square() + log_scale).sum(-1)


def _flow_features(flow: nn.Module) -> int:
    base = getattr(flow, "base", None)
    try:
        return int(base().event_shape[-1])
    except Exception as e:  # a flow without a lazy base distribution
        raise MechanismError(
            f"cannot read the number of features of {type(flow).__name__}; pass a zuko flow"
        ) from e


def _flow_context(flow: nn.Module, features: int) -> int:
    """The context size of a zuko flow, read off its first hyper-network (0 if it has none)."""
    for transform in flow.modules():
        hyper = getattr(transform, "hyper", None)
        if isinstance(hyper, nn.Module):
            first = next((m for m in hyper.modules() if hasattr(m, "in_features")), None)
            if first is None:  # an unconditional parameter vector
                return 0
            # autoregressive hyper-networks read x and the context; element-wise ones the context
            elementwise = type(transform).__name__ == "ElementWiseTransform"
            return first.in_features - (0 if elementwise else features)
    return 0
