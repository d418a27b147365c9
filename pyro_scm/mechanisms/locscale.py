"""Location-scale mechanisms: x = loc(pa) + scale(pa) · u with u ~ N(0, I).

The exact additive (and heteroscedastic) Gaussian structural equation. ``loc`` and ``scale`` are
modules, plain callables of the parents, or constants, so this class writes an SCM with known
equations as readily as it learns one (:meth:`LocScaleMechanism.learned`). An ensemble of
independently trained additive-noise fits is one mechanism too (:meth:`LocScaleMechanism.ensemble`):
its loc is the mean of the members' locs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from numbers import Number

import torch
from pyro.distributions.transforms import AffineTransform
from torch import Tensor, nn
from torch.distributions import Transform

from ..errors import ArgumentError, MechanismError
from ..nets import MLP, Standardizer, positive_scale, positive_scale_inverse
from .base import Mechanism, TransformedMechanismDistribution, flatten_parents

__all__ = ["HIDDEN", "LocScaleMechanism"]

Term = nn.Module | Callable[..., Tensor] | Number | Tensor


#: Hidden layers of a learned loc / scale network (``learned``, and ``anm`` / ``locscale`` in
#: ``make_mechanism``): three layers extrapolate the DCM benchmark's equations far better than
#: two at the same cost (``docs/accuracy.md``, "Network depth").
HIDDEN: tuple[int, ...] = (64, 64, 64)


class LocScaleMechanism(Mechanism):
    r"""x = loc(pa) + scale(pa) · u, u ~ N(0, I).

    Args:
        loc: a module or callable taking the parents (as the program passes them) and returning
            ``(*batch, *event)``, or a constant.
        scale: likewise, positive.
        event_shape: the node's event shape, ``()`` for a scalar node.

    Example:
        >>> import torch
        >>> y = LocScaleMechanism(loc=lambda x: 2 * x, scale=0.5)
        >>> y(torch.tensor([1.0])).generate(torch.tensor([2.0]))
        tensor([3.])
    """

    def __init__(self, loc: Term = 0.0, scale: Term = 1.0, event_shape: Sequence[int] = ()):
        super().__init__()
        self.event_shape = torch.Size(event_shape)
        self.loc = self._register("loc", loc)
        self.scale = self._register("scale", scale)
        if isinstance(self.scale, Tensor) and not bool((self.scale > 0).all()):
            raise MechanismError(f"scale must be positive, got {self.scale}")

    def _register(self, name: str, term: Term) -> Term:
        if isinstance(term, nn.Module) or callable(term):
            return term
        value = torch.as_tensor(term, dtype=torch.get_default_dtype())
        self.register_buffer(f"_{name}", value)
        return value

    def _term(self, name: str, parents: Sequence[Tensor]) -> Tensor:
        term = getattr(self, name)
        if isinstance(term, Tensor):
            return getattr(self, f"_{name}")  # the buffer, on the module's device
        return torch.as_tensor(term(*parents))

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        """Pass the training data to ``loc`` and ``scale`` modules that learn statistics."""
        for term in (self.loc, self.scale):
            if isinstance(term, (_StandardisedNet, _MeanNet)):
                term.prepare(value, *parents)

    def forward(self, *parents: Tensor) -> TransformedMechanismDistribution:
        """The node's distribution given its parents' values.

        Learned terms (:meth:`learned`) are lazy, as zuko's distributions: their networks run on
        first use (``generate``, ``abduct``, ``log_prob``, ``loss``); constants and plain
        callables are evaluated here.
        """
        shapes = [self._term_shape(name, parents) for name in ("loc", "scale")]
        shape = torch.broadcast_shapes(*shapes, self.event_shape)
        batch_shape = shape[: len(shape) - len(self.event_shape)]
        transform = _LazyAffine(self, parents)
        like = self._like(parents)
        return TransformedMechanismDistribution(
            transform, batch_shape, self.event_shape, self, like
        )

    def _term_shape(self, name: str, parents: Sequence[Tensor]) -> torch.Size:
        term = getattr(self, name)
        if isinstance(term, (_StandardisedNet, _MeanNet)):
            return term.output_shape(parents)
        return self._term(name, parents).shape

    def _like(self, parents: Sequence[Tensor]) -> Tensor:
        """A tensor with the dtype and device of the values this mechanism produces."""
        for t in self.parameters():
            return t
        for name in ("_loc", "_scale"):
            if hasattr(self, name):
                return getattr(self, name)
        for p in parents:
            if torch.is_tensor(p) and p.is_floating_point():
                return p
        return self._anchor()

    @classmethod
    def learned(
        cls,
        context_features: int,
        event_shape: Sequence[int] = (),
        hidden: Sequence[int] = HIDDEN,
        heteroscedastic: bool = True,
        members: int = 1,
    ) -> LocScaleMechanism:
        """A Gaussian mechanism with an MLP loc over standardised data.

        With ``heteroscedastic=True`` the scale is an MLP of the parents too; with ``False`` it
        is one learned value per feature, so that x = f(pa) + σ · u is an additive-noise model
        (ANM), the right model class (and a smaller one, which extrapolates more safely) when
        the noise is known to be additive.

        Args:
            context_features: total size of the parents (0 for a root).
            event_shape: the node's event shape.
            hidden: hidden layer sizes of the networks (default :data:`HIDDEN`).
            heteroscedastic: whether the scale depends on the parents.
            members: loc networks whose mean is the loc (the layout of an :meth:`ensemble`, so
                that a saved ensemble loads into it; trained here, they train jointly as one
                wider network, not as independent fits).
        """
        _check_members(members, context_features)
        event_shape = torch.Size(event_shape)
        scale_context = context_features if heteroscedastic else 0

        def loc() -> _StandardisedNet:
            return _StandardisedNet(context_features, event_shape, hidden, positive=False)

        return cls(
            loc=loc() if members == 1 else _MeanNet([loc() for _ in range(members)]),
            scale=_StandardisedNet(scale_context, event_shape, hidden, positive=True),
            event_shape=event_shape,
        )

    @classmethod
    def ensemble(
        cls, fits: Sequence[LocScaleMechanism], value: Tensor, *parents: Tensor
    ) -> LocScaleMechanism:
        r"""An additive-noise mechanism averaging independently trained ones.

        x = (1/K) Σ_k f_k(pa) + σ · u, u ~ N(0, I): the loc is the mean of the ``fits``' locs
        (their networks are copied, so the fits stay as they are), and σ is the root mean
        square residual of the mean on ``value`` given ``parents`` (the maximum-likelihood
        constant scale for that loc). Averaging fits that differ in their initial weights or
        their data cancels part of each fit's error off the training support, where a single
        network extrapolates about linearly in a direction its start decides
        (``docs/accuracy.md``, "An ensemble of fits").

        Args:
            fits: learned additive-noise mechanisms (``kind == "anm"``, the same layout), with
                parents.
            value: the node's training values ``(units, *event)``.
            parents: the parents' training values, as the program passes them.
        """
        if not fits or any(not isinstance(f, LocScaleMechanism) or f.kind != "anm" for f in fits):
            raise MechanismError(
                "an ensemble needs one or more learned additive-noise mechanisms "
                "(LocScaleMechanism.learned(..., heteroscedastic=False)) with parents"
            )
        nets = [net for f in fits for net in f.loc.nets]
        first = nets[0]
        for i, net in enumerate(nets):
            if net.context != first.context or net.event_shape != first.event_shape:
                raise MechanismError(
                    f"ensemble member {i} has {net.context} context features and event shape "
                    f"{tuple(net.event_shape)}; member 0 has {first.context} and "
                    f"{tuple(first.event_shape)}"
                )
        loc = _MeanNet([copy.deepcopy(net) for net in nets])
        scale = copy.deepcopy(fits[0].scale)
        with torch.no_grad():
            residual = value - loc(*parents)  # (units, *event)
            sigma = residual.reshape(-1, scale.net_params.numel()).square().mean(0).sqrt()
            scale.net_params.copy_(positive_scale_inverse(sigma / scale.x_std.scale))
        ensemble = cls(loc=loc, scale=scale, event_shape=first.event_shape)
        return ensemble.mark_fitted(all(f.fitted for f in fits))

    @property
    def kind(self) -> str:
        """``"anm"`` for a learned loc of the parents (one network or the mean of several) with a
        learned constant scale, else ``"locscale"``."""
        loc, scale = self.loc, self.scale
        learned = isinstance(loc, (_StandardisedNet, _MeanNet)) and isinstance(
            scale, _StandardisedNet
        )
        return "anm" if learned and loc.context > 0 and scale.context == 0 else "locscale"

    @property
    def members(self) -> int:
        """The number of loc networks averaged (1 for one network or a given loc)."""
        return len(self.loc.nets) if isinstance(self.loc, _MeanNet) else 1


def _check_members(members: object, context_features: int) -> None:
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise ArgumentError(f"members must be an int >= 1, got {members!r}")
    if members > 1 and context_features < 1:
        raise ArgumentError(
            f"members={members} averages loc networks of the parents; a root node has none "
            "(use members=1)"
        )


class _StandardisedNet(nn.Module):
    """An MLP from standardised parents to the node's loc (or scale) in data units.

    With ``context = 0`` it is a learned constant that ignores its arguments.
    """

    def __init__(
        self, context: int, event_shape: torch.Size, hidden: Sequence[int], positive: bool
    ):
        super().__init__()
        self.event_shape, self.context, self.positive = event_shape, context, positive
        features = max(event_shape.numel(), 1)
        self.x_std, self.c_std = Standardizer(features), Standardizer(max(context, 1))
        if context > 0:
            self.net = MLP(context, features, hidden)
        else:
            self.net_params = nn.Parameter(torch.zeros(features))

    @property
    def nets(self) -> list[_StandardisedNet]:
        """This network, as the one member of a loc (see :class:`_MeanNet`)."""
        return [self]

    def output_shape(self, parents: Sequence[Tensor]) -> torch.Size:
        """The shape :meth:`forward` returns for ``parents``, without running the network."""
        if self.context > 0:
            _, batch = flatten_parents(parents, self.context)
            return batch + self.event_shape
        return self.event_shape

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        self.x_std.fit(value.reshape(*value.shape[: value.dim() - len(self.event_shape)], -1))
        if self.context > 0:
            context, _ = flatten_parents(parents, self.context)
            self.c_std.fit(context)

    def forward(self, *parents: Tensor) -> Tensor:
        """``(*batch, *event)`` from the parents; ``(*event)`` when it has no context."""
        if self.context > 0:
            context, _ = flatten_parents(parents, self.context)
            out = self.net(self.c_std(context))
        else:  # a constant: the parents (if any) are ignored and broadcast later
            out = self.net_params
        out = self.x_std.scale * positive_scale(out) if self.positive else self.x_std.inverse(out)
        return out.reshape(out.shape[:-1] + self.event_shape)


class _MeanNet(nn.Module):
    """The mean of several loc networks ``(*batch, *event)``: an ensemble's loc."""

    positive = False

    def __init__(self, nets: Sequence[_StandardisedNet]):
        super().__init__()
        self.members = nn.ModuleList(nets)
        self.context, self.event_shape = nets[0].context, nets[0].event_shape

    @property
    def nets(self) -> list[_StandardisedNet]:
        return list(self.members)

    def output_shape(self, parents: Sequence[Tensor]) -> torch.Size:
        return self.members[0].output_shape(parents)

    def prepare(self, value: Tensor, *parents: Tensor) -> None:
        for net in self.members:
            net.prepare(value, *parents)

    def forward(self, *parents: Tensor) -> Tensor:
        return torch.stack([net(*parents) for net in self.members]).mean(0)


class _LazyAffine(AffineTransform):
    """x = loc(pa) + scale(pa) · u with ``loc`` and ``scale`` evaluated on first use."""

    def __init__(self, mechanism: LocScaleMechanism, parents: Sequence[Tensor]):
        Transform.__init__(self, cache_size=0)
        self.mechanism, self.parents = mechanism, parents
        self._event_dim = len(mechanism.event_shape)
        self._terms: tuple[Tensor, Tensor] | None = None

    def _evaluate(self) -> tuple[Tensor, Tensor]:
        if self._terms is None:
            m = self.mechanism
            self._terms = (m._term("loc", self.parents), m._term("scale", self.parents))
        return self._terms

    @property
    def loc(self) -> Tensor:  # type: ignore[override]
        return self._evaluate()[0]

    @property
    def scale(self) -> Tensor:  # type: ignore[override]
        return self._evaluate()[1]
