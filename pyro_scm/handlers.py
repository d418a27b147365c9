"""Pyro effect handlers for causal queries, one small Messenger per job.

- :class:`Abduct` records the noise u = f⁻¹(x; pa) of every site whose value is given;
- :class:`ReplayNoise` sets each unvalued site to x = f(u; pa) from a given (or fresh) noise;
- :class:`Shift` replaces a site's mechanism by ``fn(value)`` (shift and soft interventions);
- :class:`Intervene` sets a site to an intervened value (``do(x := value)``);
- :class:`Record` keeps every sampled value, :class:`StopAfter` also stops the program once the
  named sites have values (raising :class:`Stopped`, which the caller catches);
- :class:`Relax` replaces Gumbel-max sites by their softmax relaxation (backtracking).

Fixed values use ``pyro.poutine.condition``; the query package (``pyro_scm.queries``) composes
these into the queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from pyro.poutine.messenger import Messenger
from torch import Tensor

from . import validation
from .errors import MechanismError
from .mechanisms.base import MechanismDistribution, WrappedMechanismDistribution
from .mechanisms.categorical import GumbelMaxDistribution, RelaxedGumbelMax

__all__ = [
    "Abduct",
    "Intervene",
    "Record",
    "Relax",
    "ReplayNoise",
    "Shift",
    "ShiftedDistribution",
    "StopAfter",
    "Stopped",
    "as_mechanism",
]


def as_mechanism(msg: dict) -> MechanismDistribution:
    """The site's distribution, checked to follow the mechanism protocol."""
    fn = msg["fn"]
    if not isinstance(fn, MechanismDistribution):
        raise MechanismError(
            f"node {msg['name']!r} is sampled from {type(fn).__name__}, which is not a mechanism; "
            "sample it from a pyro_scm mechanism (FlowMechanism, LocScaleMechanism, ...)"
        )
    return fn


class Abduct(Messenger):
    """Record the noise of every site whose value is given: ``noise[name] = fn.abduct(value)``.

    Use inside ``pyro.poutine.condition`` (or with observed sites). ``noise`` is filled in place.
    With ``nodes``, only those sites are abducted; the mechanisms of the others run no network.
    """

    def __init__(self, noise: dict[str, Tensor] | None = None, nodes: Iterable[str] | None = None):
        super().__init__()
        self.noise = {} if noise is None else noise
        self.nodes = None if nodes is None else frozenset(nodes)

    def _pyro_post_sample(self, msg: dict) -> None:
        if self.nodes is not None and msg["name"] not in self.nodes:
            return
        if msg["is_observed"] and msg["value"] is not None:
            self.noise[msg["name"]] = as_mechanism(msg).abduct(msg["value"])


class Intervene(Messenger):
    """Set each named site to its intervened value, ``do(x := value)``, before it is sampled.

    The site keeps its mechanism (so the graph and the trace are unchanged) but no noise is
    drawn for it and its mechanism runs no network. Unlike ``pyro.poutine.do`` it adds no
    extra site to the trace.

    Args:
        values: node -> value ``(*batch, *event)``.
    """

    def __init__(self, values: dict[str, Tensor]):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["is_observed"] = False
            msg["infer"] = {**msg.get("infer", {}), "intervened": True}


class ReplayNoise(Messenger):
    """Set every site that has no value yet to ``fn.generate(noise[name])``.

    Sites without recorded noise get a fresh draw from ``fn.noise``, expanded to
    ``batch_shape``, which is recorded in ``noise``; so with an empty ``noise`` this samples
    the program and keeps its exogenous noise. With ``strict=False``, sites that are not
    mechanisms are left to Pyro (used to derive the graph of any program).
    """

    def __init__(
        self,
        noise: dict[str, Tensor] | None = None,
        batch_shape: torch.Size = (),
        strict: bool = True,
    ):
        super().__init__()
        self.noise = {} if noise is None else noise
        self.batch_shape = torch.Size(batch_shape)
        self.strict = strict

    def _pyro_sample(self, msg: dict) -> None:
        if msg["value"] is not None or msg["is_observed"]:
            return
        if not self.strict and not isinstance(msg["fn"], MechanismDistribution):
            return
        fn = as_mechanism(msg)
        name = msg["name"]
        if name not in self.noise:
            prior = fn.noise
            shape = torch.broadcast_shapes(self.batch_shape, prior.batch_shape)
            self.noise[name] = prior.expand(shape).sample()
        msg["value"] = fn.generate(self.noise[name])


class ShiftedDistribution(WrappedMechanismDistribution):
    """The mechanism ``x = fn(f(u; pa))``: a site's mechanism followed by a map of its value."""

    def __init__(
        self, base: MechanismDistribution, fn: Callable[[Tensor], Tensor], node: str = "?"
    ):
        super().__init__(base)
        self.fn, self.node = fn, node

    def generate(self, u: Tensor) -> Tensor:
        x = self.base.generate(u)
        return validation.shift_output(self.node, self.fn(x), x, _num_classes(self.base))

    def abduct(self, x: Tensor) -> Tensor:
        raise MechanismError("a shifted mechanism cannot be abducted; abduct before intervening")

    def __call__(self, *args, **kwargs) -> Tensor:
        return self.generate(self.noise.sample(*args, **kwargs))


class Shift(Messenger):
    """Replace each named site's mechanism by ``fn(value)``: ``do(x := fn(x))``.

    Args:
        shifts: node name -> callable mapping the value the mechanism would produce,
            ``(*batch, *event)``, to the intervened value of the same shape.
    """

    def __init__(self, shifts: dict[str, Callable[[Tensor], Tensor]]):
        super().__init__()
        self.shifts = shifts

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.shifts and not isinstance(msg["fn"], ShiftedDistribution):
            msg["fn"] = ShiftedDistribution(
                as_mechanism(msg), self.shifts[msg["name"]], msg["name"]
            )


def _num_classes(fn: MechanismDistribution) -> int | None:
    return fn.event_shape[-1] if fn.mechanism.kind == "categorical" else None


class Stopped(Exception):
    """Raised by :class:`StopAfter` once every wanted site has a value."""


class Record(Messenger):
    """Keep the value of every sample site (or of ``names``): ``values[name] = value``."""

    def __init__(self, names: Iterable[str] | None = None):
        super().__init__()
        self.names = None if names is None else set(names)
        self.values: dict[str, Tensor] = {}
        self.perturbed: dict[str, Tensor] = {}

    def _pyro_post_sample(self, msg: dict) -> None:
        if self.names is None or msg["name"] in self.names:
            self.values[msg["name"]] = msg["value"]
            perturbed = getattr(msg["fn"], "perturbed", None)  # relaxed Gumbel-max sites
            if perturbed is not None:
                self.perturbed[msg["name"]] = perturbed


class StopAfter(Record):
    """Record the values of ``names`` and stop the program (raise :class:`Stopped`) once all of
    them are sampled: the sites after them are never run."""

    def __init__(self, names: Iterable[str]):
        super().__init__(names)

    def _pyro_post_sample(self, msg: dict) -> None:
        super()._pyro_post_sample(msg)
        if self.names is not None and len(self.values) == len(self.names):
            raise Stopped


class Relax(Messenger):
    """Replace every Gumbel-max site by :class:`RelaxedGumbelMax` at ``temperature``."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def _pyro_sample(self, msg: dict) -> None:
        if isinstance(msg["fn"], GumbelMaxDistribution):
            msg["fn"] = RelaxedGumbelMax(msg["fn"], self.temperature)
