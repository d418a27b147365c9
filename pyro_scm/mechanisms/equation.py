"""Equation mechanisms: a known structural equation x = f(u; pa) and, where it exists, its inverse.

The ground truth of synthetic benchmarks as an ordinary mechanism, so that a known SCM is an
ordinary pyro_scm program and its samples, interventions and true counterfactuals go through the
same query code as learned models. Noise is N(0, I) or U(ε, 1) (ε = ``UNIFORM_LOW``) per element.
The density, where the equation is invertible, is by change of variables:
log p(x | pa) = log p_u(f⁻¹(x; pa)) + log |∂f⁻¹/∂x| (a constant −log |scale| per element for an
additive equation x = loc(pa) + scale · u).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import pyro.distributions as dist
import torch
from torch import Tensor

from ..errors import MechanismError
from .base import Mechanism, MechanismDistribution

__all__ = [
    "UNIFORM_LOW",
    "Equation",
    "EquationDistribution",
    "EquationMechanism",
    "additive",
    "general",
    "root",
]

NoiseKind = Literal["normal", "uniform"]
UNIFORM_LOW = 1e-6
"""Lower end of the uniform noises ``U(UNIFORM_LOW, 1)`` (Causal-NF's large-backdoor SCM)."""


@dataclass(frozen=True)
class Equation:
    """One structural equation ``x = generate(u, *parents)``, parents in topological order.

    ``abduct(x, *parents)`` returns ``u`` where the equation is invertible in its noise (else
    ``None``, with the reason in ``not_invertible``). Additive equations also keep ``loc`` and
    ``scale`` with ``x = loc(*parents) + scale * u``; ``scale`` may be negative (a sign flip).
    """

    parents: tuple[str, ...]
    generate: Callable[..., Tensor]
    abduct: Callable[..., Tensor] | None = None
    loc: Callable[..., Tensor | float] | None = None
    scale: float | None = None
    not_invertible: str = ""


def additive(
    parents: Iterable[str], loc: Callable[..., Tensor | float], scale: float = 1.0
) -> Equation:
    """The additive-noise equation ``x = loc(*parents) + scale * u``."""

    def generate(u: Tensor, *pa: Tensor) -> Tensor:
        return loc(*pa) + scale * u

    def abduct(x: Tensor, *pa: Tensor) -> Tensor:
        return (x - loc(*pa)) / scale

    return Equation(tuple(parents), generate, abduct, loc, scale)


def root(loc: float = 0.0, scale: float = 1.0) -> Equation:
    """A root ``x = loc + scale * u``."""
    return additive((), lambda: loc, scale)


def general(
    parents: Iterable[str],
    generate: Callable[..., Tensor],
    abduct: Callable[..., Tensor] | None = None,
    not_invertible: str = "",
) -> Equation:
    """A non-additive equation ``x = generate(u, *parents)``, inverted by ``abduct`` if given."""
    if abduct is None and not not_invertible:
        not_invertible = "its noise cannot be recovered from the node and its parents"
    return Equation(tuple(parents), generate, abduct, None, None, not_invertible)


class EquationMechanism(Mechanism):
    """A mechanism given by a known :class:`Equation` (no parameters to learn).

    Args:
        equation: the structural equation and, if invertible, its inverse.
        event_shape: the node's event shape.
        parent_event_dims: the number of event dims of each parent, in the equation's order.
        noise: ``"normal"`` (N(0, 1)) or ``"uniform"`` (U(1e-6, 1)) noise per element.
        name: the node, for error messages.
        dtype: the dtype of the noise.

    Example:
        >>> import torch
        >>> y = EquationMechanism(additive(["x"], lambda x: 2 * x, 0.5), parent_event_dims=(0,))
        >>> y(torch.tensor([1.0])).generate(torch.tensor([2.0]))
        tensor([3.])
    """

    def __init__(
        self,
        equation: Equation,
        event_shape: Sequence[int] = (),
        parent_event_dims: Sequence[int] | None = None,
        noise: NoiseKind = "normal",
        name: str = "",
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if noise not in ("normal", "uniform"):
            raise MechanismError(f"noise must be 'normal' or 'uniform', got {noise!r}")
        self.equation, self.noise_kind, self.name = equation, noise, name
        self.event_shape = torch.Size(event_shape)
        dims = parent_event_dims if parent_event_dims is not None else [0] * len(equation.parents)
        self.parent_event_dims = tuple(dims)
        self.register_buffer("_like", torch.zeros((), dtype=dtype or torch.get_default_dtype()))

    @property
    def invertible(self) -> bool:
        """Whether the equation is invertible in its noise (abduction and ``log_prob`` exist)."""
        return self.equation.abduct is not None

    def forward(self, *parents: Tensor) -> EquationDistribution:
        """The node's distribution given its parents' values (nothing is evaluated yet)."""
        if len(parents) != len(self.parent_event_dims):
            raise MechanismError(
                f"node {self.name!r}: its equation takes {len(self.parent_event_dims)} parents, "
                f"got {len(parents)}"
            )
        shapes = [p.shape[: p.dim() - d] for p, d in zip(parents, self.parent_event_dims)]
        batch_shape = torch.broadcast_shapes(*shapes) if shapes else torch.Size()
        return EquationDistribution(self, parents, batch_shape)

    @property
    def kind(self) -> str:
        return "equation"


class EquationDistribution(MechanismDistribution, dist.TorchDistribution):
    """The distribution an :class:`EquationMechanism` returns under fixed parents."""

    arg_constraints: dict = {}  # noqa: RUF012

    def __init__(self, mechanism: EquationMechanism, parents: Sequence[Tensor], batch_shape):
        self.mechanism, self.args = mechanism, tuple(parents)
        super().__init__(torch.Size(batch_shape), mechanism.event_shape, validate_args=False)

    @property
    def noise(self) -> dist.Distribution:
        like = self.mechanism._like
        zero = torch.zeros((), dtype=like.dtype, device=like.device)
        shape = self.batch_shape + self.event_shape
        if self.mechanism.noise_kind == "normal":
            base = dist.Normal(zero, 1.0, validate_args=False)
        else:
            base = dist.Uniform(zero + UNIFORM_LOW, zero + 1.0, validate_args=False)
        return base.expand(shape).to_event(len(self.event_shape))

    def generate(self, u: Tensor) -> Tensor:
        """x = f(u; pa)."""
        return self.mechanism.equation.generate(u, *self.args)

    def abduct(self, x: Tensor) -> Tensor:
        """u = f⁻¹(x; pa).

        Raises:
            MechanismError: the equation is not invertible in its noise.
        """
        return self._inverse()(x, *self.args)

    def _inverse(self) -> Callable[..., Tensor]:
        eq = self.mechanism.equation
        if eq.abduct is None:
            raise MechanismError(
                f"node {self.mechanism.name!r}: its equation is not invertible in its noise "
                f"({eq.not_invertible})"
            )
        return eq.abduct

    def noise_log_prob(self, u: Tensor) -> Tensor:
        """log p(u) summed over the event, ``(*batch,)``."""
        nev = len(self.event_shape)
        flat = u.reshape(*u.shape[: u.dim() - nev], -1)
        if self.mechanism.noise_kind == "normal":
            return (-0.5 * flat**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
        inside = ((flat >= UNIFORM_LOW) & (flat <= 1)).all(-1)
        density = -math.log(1 - UNIFORM_LOW) * flat.shape[-1]
        return torch.where(inside, density, -math.inf).to(flat.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x | pa) by change of variables, ``(*batch,)``.

        Raises:
            MechanismError: the equation is not invertible, or it is a non-additive equation of a
                vector node (its Jacobian is not elementwise).
        """
        eq, event = self.mechanism.equation, self.event_shape
        if eq.scale is not None:
            u = self.abduct(x)
            return self.noise_log_prob(u) - math.log(abs(eq.scale)) * event.numel()
        if len(event) > 0:
            raise MechanismError(
                f"log_prob of non-additive vector node {self.mechanism.name!r} is not supported"
            )
        inverse = self._inverse()
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            u = inverse(xg, *(p.detach() for p in self.args))
            (grad,) = torch.autograd.grad(u.sum(), xg)
        return self.noise_log_prob(u.detach()) + grad.abs().log()

    def sample(self, sample_shape=torch.Size()) -> Tensor:  # noqa: B008
        """x = equation(u) with u drawn from the noise distribution."""
        with torch.no_grad():
            return self.generate(self.noise.sample(sample_shape))
