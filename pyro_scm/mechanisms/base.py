"""The mechanism protocol: a module that, given its parents, returns a distribution over its node.

A *mechanism* is an :class:`torch.nn.Module` holding the parameters of one structural equation
x = f(u; pa). Called with the values of its parents it returns a :class:`MechanismDistribution`,
an ordinary Pyro distribution over the node that also knows its exogenous noise:

- ``noise``: the distribution of u, of shape ``(*batch, *noise_event)``;
- ``generate(u)``: x = f(u; pa), differentiable in u;
- ``abduct(x)``: u = f⁻¹(x; pa) (a sample from p(u | x, pa) where f is not invertible);
- ``log_prob(x)`` where tractable, and ``loss(x)``, the mechanism kind's training loss per unit.

This is the lazy-distribution pattern of zuko: parameters live in the module, the maths in the
distribution it returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import Transform

from ..errors import ShapeError

__all__ = [
    "Mechanism",
    "MechanismDistribution",
    "TransformedMechanismDistribution",
    "WrappedMechanismDistribution",
    "flatten_parents",
]


class MechanismDistribution:
    """Protocol mixed into the distributions that mechanisms return.

    Subclasses set ``mechanism`` (the module that built them) and implement ``noise``,
    ``generate`` and ``abduct``. ``loss`` defaults to the negative log-likelihood.
    """

    mechanism: Mechanism
    #: True when ``abduct`` is a deterministic inverse (flows, loc-scale), False when it samples.
    deterministic_abduction: bool = True

    @property
    def noise(self) -> dist.Distribution:
        """Distribution of the exogenous noise u, batch shape equal to the node's."""
        raise NotImplementedError

    def generate(self, u: Tensor) -> Tensor:
        """x = f(u; pa). ``u``: ``(*batch, *noise_event)`` -> ``(*batch, *event)``."""
        raise NotImplementedError

    def abduct(self, x: Tensor) -> Tensor:
        """u = f⁻¹(x; pa). ``x``: ``(*batch, *event)`` -> ``(*batch, *noise_event)``."""
        raise NotImplementedError

    def loss(self, x: Tensor) -> Tensor:
        """Training loss per unit, ``(*batch,)``; the negative log-likelihood by default."""
        return -self.log_prob(x)  # type: ignore[attr-defined]


class WrappedMechanismDistribution(MechanismDistribution):
    """A mechanism distribution built on another: same noise, shapes and module.

    Subclasses change ``generate`` (an intervention on the mechanism, a relaxation, ...);
    ``abduct`` and ``loss`` defer to the wrapped distribution.
    """

    def __init__(self, base: MechanismDistribution):
        self.base = base
        self.mechanism = base.mechanism
        self.parents = getattr(base, "parents", ())

    @property
    def noise(self) -> dist.Distribution:
        return self.base.noise

    @property
    def batch_shape(self) -> torch.Size:
        return self.base.batch_shape

    @property
    def event_shape(self) -> torch.Size:
        return self.base.event_shape

    def abduct(self, x: Tensor) -> Tensor:
        return self.base.abduct(x)

    def loss(self, x: Tensor) -> Tensor:
        return self.base.loss(x)


class TransformedMechanismDistribution(MechanismDistribution, dist.TransformedDistribution):
    """x = T(u) with u ~ N(0, I): the shape of every invertible mechanism.

    Being a Pyro ``TransformedDistribution`` over a standard normal base, it works with
    ``pyro.infer.reparam.TransformReparam`` and with ChiRho's counterfactual handlers.

    Args:
        transform: the bijection u -> x, event dim ``len(event_shape)``.
        batch_shape: the batch shape of the node (that of its parents).
        event_shape: the node's event shape.
        mechanism: the module that built this distribution.
        like: a tensor giving dtype and device.
    """

    def __init__(
        self,
        transform: Transform,
        batch_shape: torch.Size,
        event_shape: torch.Size,
        mechanism: Mechanism,
        like: Tensor,
    ):
        # Lazy, and cheaper than TransformedDistribution.__init__: the shapes are known, the
        # base N(0, I) is built on first use, and nothing is validated per call.
        self.transforms = [transform]
        self.transform = transform
        self.mechanism = mechanism
        self._like_tensor = like
        self._base: dist.Distribution | None = None
        torch.distributions.Distribution.__init__(
            self, torch.Size(batch_shape), torch.Size(event_shape), validate_args=False
        )

    @property
    def base_dist(self) -> dist.Distribution:
        """N(0, I) of shape ``(*batch, *event)``, event dims ``len(event_shape)``."""
        if self._base is None:
            like = self._like_tensor
            zeros = torch.zeros((), dtype=like.dtype, device=like.device)
            shape = self.batch_shape + self.event_shape
            base = dist.Normal(zeros, 1.0, validate_args=False).expand(shape)
            self._base = base.to_event(len(self.event_shape))
        return self._base

    @base_dist.setter
    def base_dist(self, value: dist.Distribution) -> None:
        self._base = value

    @property
    def noise(self) -> dist.Distribution:
        return self.base_dist

    def generate(self, u: Tensor) -> Tensor:
        return self.transform(u)

    def abduct(self, x: Tensor) -> Tensor:
        return self.transform.inv(x)


class Mechanism(nn.Module):
    """Base class of mechanisms: ``forward(*parents)`` returns a :class:`MechanismDistribution`.

    Attributes:
        event_shape: the node's event shape; ``()`` for a scalar node.
        min_patience: the fewest epochs without a better validation loss after which ``fit``
            decays this mechanism's learning rate or stops it, whatever its ``patience``: a
            mechanism whose loss is a noisy estimate (a diffusion model's denoising loss) needs
            more than a likelihood does.
        random_loss: whether the training loss draws random numbers (a diffusion model's t and
            ε); :func:`~pyro_scm.selection.select_mechanisms` then gives each candidate's draws
            a generator of its own, so the fit does not depend on the global RNG or on the
            number of workers.
    """

    event_shape: torch.Size = torch.Size()
    min_patience: int = 0
    random_loss: bool = False
    _fitted: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_mark_loaded)

    @property
    def fitted(self) -> bool:
        """Whether the weights mean something: set by ``fit``, ``load`` or :meth:`mark_fitted`.

        A mechanism without trainable parameters (fixed equations) is fitted by construction.
        """
        return self._fitted or not any(p.requires_grad for p in self.parameters())

    def mark_fitted(self, fitted: bool = True) -> Mechanism:
        """Declare the mechanism fitted (weights set by hand) or not; returns the mechanism."""
        self._fitted = bool(fitted)
        return self

    def __call__(self, *parents: Tensor) -> MechanismDistribution:
        d = super().__call__(*parents)
        d.parents = parents  # what the program passed: the graph's edges
        return d

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        """Set data-dependent state (standardisation) from training data before fitting.

        ``value``: ``(n, *event)``; ``parents``: the parents as the program passes them.
        """

    @property
    def kind(self) -> str:
        """Short name of the mechanism kind, shown in the graph and in ``repr(scm)``."""
        return type(self).__name__.removesuffix("Mechanism").lower()

    def _anchor(self) -> Tensor:
        """A tensor on the module's device and dtype (a parameter or buffer, else a float)."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.zeros(())


def _mark_loaded(module: Mechanism, incompatible_keys) -> None:
    """Weights loaded with ``load_state_dict`` count as fitted."""
    module.mark_fitted()


def flatten_parents(
    parents: Sequence[Tensor], context_features: int | None = None
) -> tuple[Tensor | None, torch.Size]:
    """Concatenate the parents' values into one context vector per unit.

    A scalar parent has shape ``(*batch,)`` and a vector parent ``(*batch, d)``; the batch shape
    is that of the lowest-dimensional parent, unless ``context_features`` says every parent
    carries an event dimension.

    Returns:
        ``(context, batch_shape)`` with context ``(*batch, context_features)``, or
        ``(None, ())`` when there are no parents.
    """
    if not parents:
        if context_features:
            raise ShapeError(f"the mechanism expects {context_features} context features, got none")
        return None, torch.Size()
    parents = [p if isinstance(p, Tensor) else torch.as_tensor(p) for p in parents]
    if len(parents) == 1 and context_features is not None:  # the common case, kept cheap
        p = parents[0]
        if context_features == 1 and p.dim() > 0 and p.shape[-1] != 1:
            return p.unsqueeze(-1), p.shape
    batch_ndim = min(p.dim() for p in parents)
    size = _context_size(parents, batch_ndim)
    if (
        context_features is not None
        and size != context_features
        and batch_ndim > 0
        and _context_size(parents, batch_ndim - 1) == context_features
    ):
        batch_ndim -= 1
    try:
        batch_shape = torch.broadcast_shapes(*(p.shape[:batch_ndim] for p in parents))
    except RuntimeError as e:
        shapes = [tuple(p.shape) for p in parents]
        raise ShapeError(f"parents have incompatible batch shapes {shapes}") from e
    flat = [
        p.expand(batch_shape + p.shape[batch_ndim:]).reshape(*batch_shape, -1)
        if p.dim() > batch_ndim
        else p.expand(batch_shape).unsqueeze(-1)
        for p in parents
    ]
    context = torch.cat(flat, dim=-1) if len(flat) > 1 else flat[0]
    if context_features is not None and context.shape[-1] != context_features:
        shapes = [tuple(p.shape) for p in parents]
        raise ShapeError(
            f"the mechanism expects {context_features} context features, "
            f"but its parents {shapes} give {context.shape[-1]}"
        )
    return context, batch_shape


def _context_size(parents: Sequence[Tensor], batch_ndim: int) -> int:
    return sum(math.prod(p.shape[batch_ndim:]) for p in parents)
