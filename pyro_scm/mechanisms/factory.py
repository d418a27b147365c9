"""Learned mechanisms by kind name: what ``SCM.from_graph`` builds for each node."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import zuko

from ..data import NodeSpec
from ..errors import MechanismError
from .base import Mechanism
from .categorical import CategoricalMechanism
from .flow import FlowMechanism
from .locscale import LocScaleMechanism

__all__ = ["MechanismFactory", "make_mechanism"]

MechanismFactory = Callable[[str, torch.Size, int], Mechanism]


def make_mechanism(
    kind: str | MechanismFactory,
    node: str,
    spec: NodeSpec,
    context: int,
    hidden: Sequence[int] = (64, 64),
    transforms: int = 3,
) -> Mechanism:
    """A learned mechanism of the given kind for a node with ``context`` parent features.

    Kinds: ``"nsf"`` and ``"maf"`` (zuko flows), ``"locscale"`` (heteroscedastic Gaussian),
    ``"anm"`` (additive Gaussian noise of learned constant scale), or a callable
    ``(node, event_shape, context) -> Mechanism``. Categorical nodes always get a
    :class:`CategoricalMechanism`.
    """
    if spec.num_classes is not None:
        return CategoricalMechanism(spec.num_classes, context, hidden)
    if callable(kind):
        mechanism = kind(node, spec.event_shape, context)
        if not isinstance(mechanism, Mechanism):
            raise MechanismError(
                f"the mechanism factory returned {type(mechanism).__name__} for node {node!r}, "
                "not a pyro_scm Mechanism"
            )
        return mechanism
    features = max(spec.event_shape.numel(), 1)
    flows = {"nsf": zuko.flows.NSF, "maf": zuko.flows.MAF}
    if kind in flows:
        flow = flows[kind](
            features=features, context=context, transforms=transforms, hidden_features=hidden
        )
        return FlowMechanism(flow, context=context, event_shape=spec.event_shape)
    if kind in ("locscale", "anm"):
        return LocScaleMechanism.learned(
            context, spec.event_shape, hidden, heteroscedastic=kind == "locscale"
        )
    raise MechanismError(
        f"unknown mechanism {kind!r} for node {node!r}; use 'auto', 'nsf', 'maf', 'locscale', "
        "'anm' or a callable"
    )
