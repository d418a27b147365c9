"""Learned mechanisms by kind name: what ``SCM.from_graph`` builds for each node."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import zuko

from ..data import NodeSpec
from ..errors import ArgumentError, MechanismError
from .base import Mechanism
from .categorical import CategoricalMechanism
from .flow import FlowMechanism
from .locscale import HIDDEN as LOCSCALE_HIDDEN
from .locscale import LocScaleMechanism

__all__ = ["DEFAULT_HIDDEN", "MechanismFactory", "default_hidden", "make_mechanism"]

MechanismFactory = Callable[[str, torch.Size, int], Mechanism]

#: Hidden layers of each kind's networks when ``hidden`` is None. The regression networks of
#: ``anm`` and ``locscale`` get three layers: on the DCM benchmark a third layer of 64 lowered the
#: counterfactual MSE of off-support parents by a factor of 2 to 30 for the same cost
#: (``docs/accuracy.md``); the flows' conditioners keep two (a third made them slower, not better).
DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {
    "anm": LOCSCALE_HIDDEN,
    "locscale": LOCSCALE_HIDDEN,
    "nsf": (64, 64),
    "maf": (64, 64),
    "diffusion": (64, 64),
    "categorical": (64, 64),
}

#: The diffusion kind's schedule: T = 100 steps, β linear from 1e-4 to 0.1 (DCM's settings).
DIFFUSION_TIMESTEPS, DIFFUSION_BETA_END = 100, 0.1


def default_hidden(kind: str) -> tuple[int, ...]:
    """The hidden layer sizes a ``kind`` gets when ``hidden`` is None (:data:`DEFAULT_HIDDEN`)."""
    return DEFAULT_HIDDEN.get(kind, (64, 64))


def make_mechanism(
    kind: str | MechanismFactory,
    node: str,
    spec: NodeSpec,
    context: int,
    hidden: Sequence[int] | None = None,
    transforms: int = 3,
    members: int = 1,
) -> Mechanism:
    """A learned mechanism of the given kind for a node with ``context`` parent features.

    Kinds: ``"nsf"`` and ``"maf"`` (zuko flows), ``"locscale"`` (heteroscedastic Gaussian),
    ``"anm"`` (additive Gaussian noise of learned constant scale), ``"diffusion"`` (a
    :class:`~pyro_scm.mechanisms.DiffusionMechanism` with a conditional
    :class:`~pyro_scm.nets.diffusion.TimeMLP` ε-network, T = 100, β linear 1e-4 to 0.1 as DCM;
    scalar and vector nodes), or a callable
    ``(node, event_shape, context) -> Mechanism``. Categorical nodes always get a
    :class:`CategoricalMechanism`. ``hidden``: the networks' hidden layer sizes (None: the
    kind's :data:`DEFAULT_HIDDEN`). ``members``: loc networks averaged by an ``"anm"`` of a node
    with parents (the layout of a selected ensemble, :meth:`LocScaleMechanism.ensemble`); other
    kinds take 1.
    """
    if members != 1 and kind != "anm":
        raise ArgumentError(
            f"node {node!r}: members={members!r} is the size of an 'anm' ensemble; "
            f"mechanism {kind!r} takes members=1"
        )
    _check_hidden(hidden)
    if spec.num_classes is not None:
        return CategoricalMechanism(
            spec.num_classes, context, default_hidden("categorical") if hidden is None else hidden
        )
    if callable(kind):
        mechanism = kind(node, spec.event_shape, context)
        if not isinstance(mechanism, Mechanism):
            raise MechanismError(
                f"the mechanism factory returned {type(mechanism).__name__} for node {node!r}, "
                "not a pyro_scm Mechanism"
            )
        return mechanism
    features = max(spec.event_shape.numel(), 1)
    if hidden is None:
        hidden = default_hidden(kind)
    flows = {"nsf": zuko.flows.NSF, "maf": zuko.flows.MAF}
    if kind in flows:
        flow = flows[kind](
            features=features, context=context, transforms=transforms, hidden_features=hidden
        )
        return FlowMechanism(flow, context=context, event_shape=spec.event_shape)
    if kind == "diffusion":
        return _diffusion(node, spec, features, context, hidden)
    if kind in ("locscale", "anm"):
        return LocScaleMechanism.learned(
            context, spec.event_shape, hidden, heteroscedastic=kind == "locscale", members=members
        )
    raise MechanismError(
        f"unknown mechanism {kind!r} for node {node!r}; use 'auto', 'nsf', 'maf', 'locscale', "
        "'anm', 'diffusion' or a callable"
    )


def _diffusion(
    node: str, spec: NodeSpec, features: int, context: int, hidden: Sequence[int]
) -> Mechanism:
    """The ``"diffusion"`` kind: a conditional MLP ε-network over a scalar or vector node."""
    from ..nets.diffusion import TimeMLP
    from .diffusion import DiffusionMechanism

    if len(spec.event_shape) > 1:
        raise MechanismError(
            f"mechanism 'diffusion' of node {node!r} takes scalar and vector nodes; its event "
            f"shape is {tuple(spec.event_shape)} (build a DiffusionMechanism with an image "
            "network, pyro_scm.nets.diffusion.UNet, and pass it as a callable)"
        )
    net = TimeMLP(features, context=context, hidden=tuple(hidden))
    return DiffusionMechanism(
        net,
        spec.event_shape,
        context=context,
        timesteps=DIFFUSION_TIMESTEPS,
        beta_end=DIFFUSION_BETA_END,
    )


def _check_hidden(hidden: object) -> None:
    """Raise :class:`ArgumentError` unless ``hidden`` is None or a sequence of ints >= 1."""
    if hidden is None:
        return
    ok = isinstance(hidden, Sequence) and not isinstance(hidden, str)
    if not ok or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in hidden):
        raise ArgumentError(f"hidden must be a sequence of layer sizes >= 1, got {hidden!r}")
