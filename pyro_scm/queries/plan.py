"""Query plans derived from the graph: which nodes a query abducts, recomputes and returns as given.

For interventions on a set I of nodes, only the intervened nodes and their descendants
D(I) can change; every other node keeps its factual value. A counterfactual therefore

- *abducts* u_v = f_v⁻¹(x_v; pa_v) only for the recomputed nodes v ∈ (I ∪ D(I)) \\ I_value
  (a value-intervened node needs no noise; a shifted one does);
- *returns as given* every node outside I ∪ D(I), running no mechanism network for it;
- *predicts* x*_v = f_v(u_v; pa*_v) for v ∈ D(I) in topological order, and may stop the program
  after the last of them.

Mechanisms are lazy (calling one builds a cheap distribution; networks run only in
``abduct``/``generate``/``log_prob``/``loss``), so running the program over untouched nodes
costs only Python overhead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import networkx as nx
import torch
from torch import Tensor

from .. import graph as g
from ..data import NodeSpec, broadcast_intervention
from ..errors import InterventionError, MechanismError, UnknownNodeError

__all__ = [
    "Plan",
    "check_interventions",
    "check_mechanisms",
    "interventions_as_tensors",
    "plan_counterfactual",
]

Interventions = Mapping[str, object]


@dataclass(frozen=True)
class Plan:
    """What a counterfactual computes for each node, in topological order.

    Attributes:
        order: every node, topologically.
        values: nodes set to an intervened value.
        shifts: nodes whose mechanism output is mapped by a callable.
        recomputed: the nodes whose counterfactual may differ from the factual:
            ``values ∪ shifts ∪ descendants``, in topological order.
        abducted: the recomputed nodes that need their noise (all but ``values``).
        given: the nodes returned as their factual values.
    """

    order: tuple[str, ...]
    values: frozenset[str]
    shifts: frozenset[str]
    recomputed: tuple[str, ...]
    abducted: tuple[str, ...]
    given: tuple[str, ...]

    @property
    def last(self) -> str | None:
        """The last recomputed node: the program may stop after it."""
        return self.recomputed[-1] if self.recomputed else None


def plan_counterfactual(graph: nx.DiGraph, interventions: Mapping[str, object]) -> Plan:
    """The plan of a counterfactual under ``interventions`` (node -> tensor or callable).

    Raises:
        MechanismError: a node of the program is not sampled from a mechanism.
    """
    check_mechanisms(graph)
    order = tuple(graph.nodes)
    values = frozenset(k for k, v in interventions.items() if torch.is_tensor(v))
    shifts = frozenset(interventions) - values
    changed = set(interventions) | g.descendants(graph, interventions)
    recomputed = tuple(n for n in order if n in changed)
    return Plan(
        order=order,
        values=values,
        shifts=shifts,
        recomputed=recomputed,
        abducted=tuple(n for n in recomputed if n not in values),
        given=tuple(n for n in order if n not in changed),
    )


def check_mechanisms(graph: nx.DiGraph) -> None:
    """Raise :class:`MechanismError` naming the first node not sampled from a mechanism."""
    for node, attrs in graph.nodes(data=True):
        if not attrs.get("is_mechanism", True):
            raise MechanismError(
                f"node {node!r} is sampled from {attrs['mechanism']}, which is not a mechanism; "
                "sample it from a pyro_scm mechanism (FlowMechanism, LocScaleMechanism, ...)"
            )


def check_interventions(interventions: object, specs: Mapping[str, NodeSpec]) -> dict:
    """``interventions`` as a dict, every node known; raised before any computation.

    Raises:
        InterventionError: not a mapping. UnknownNodeError: a node the model does not have.
    """
    if not isinstance(interventions, Mapping):
        raise InterventionError(
            f"interventions must be a dict node -> value, not {type(interventions).__name__}"
        )
    for node in interventions:
        if node not in specs:
            raise UnknownNodeError(node, list(specs), "do")
    return dict(interventions)


def interventions_as_tensors(
    interventions: Interventions, units: int, specs: Mapping[str, NodeSpec], like: Tensor
) -> dict[str, Tensor | Callable]:
    """Each value broadcast to ``(units, *event)`` on ``like``'s device; callables pass through."""
    out = {}
    for node, value in check_interventions(interventions, specs).items():
        out[node] = broadcast_intervention(node, value, units, specs[node], like)
    return out
