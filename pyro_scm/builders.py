"""Building an SCM from a declared graph: one learned mechanism per node, in topological order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import networkx as nx
import pyro
import torch
import zuko
from torch import nn

from . import graph as g
from .data import NodeSpec, node_specs_from_data, to_node_tensors
from .errors import MechanismError, MissingNodeError, UnknownNodeError
from .fitting import prepare
from .mechanisms import CategoricalMechanism, FlowMechanism, LocScaleMechanism, Mechanism
from .scm import SCM
from .selection import CANDIDATE_KINDS, KINDS

__all__ = ["GraphSCM", "from_graph", "make_mechanism"]

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


class GraphSCM(SCM):
    """An SCM whose program samples the nodes of a declared graph in topological order.

    Each node's mechanism receives its parents in the order of ``parents[node]``.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]], mechanisms: Mapping[str, Mechanism]):
        super().__init__()
        self.order = list(parents)
        self.parents = {n: list(p) for n, p in parents.items()}
        self.mechanisms = nn.ModuleList([mechanisms[n] for n in self.order])
        #: the ``mechanism="auto"`` nodes still to select at the next :meth:`fit`, with the kinds
        self.pending_selection: dict | None = None

    def fit(self, data: object, **kwargs) -> object:
        """Train every mechanism; with ``mechanism="auto"`` nodes pending, select their kinds
        first (:func:`pyro_scm.selection.select_mechanisms`, which also takes ``budget_s``).
        """
        if self.pending_selection is None:
            return super().fit(data, **kwargs)
        from .selection import select_mechanisms

        history = select_mechanisms(self, data, **self.pending_selection, **kwargs)
        self.pending_selection = None
        return history

    def model(self) -> None:
        """Sample every node from its mechanism, parents first."""
        values = {}
        for node, mechanism in zip(self.order, self.mechanisms):
            values[node] = pyro.sample(node, mechanism(*(values[p] for p in self.parents[node])))


def from_graph(
    graph: nx.DiGraph,
    data: object,
    mechanism: str | MechanismFactory | Mapping[str, str | MechanismFactory] = "auto",
    *,
    categorical: Mapping[str, int] | None = None,
    hidden: Sequence[int] = (64, 64),
    transforms: int = 3,
    candidates: Sequence[str] = KINDS,
) -> GraphSCM:
    """An SCM over ``graph`` with a learned mechanism per node, shaped by ``data``.

    ``data`` gives each node's event shape (a column ``x`` for a scalar node, ``x[0]``, ``x[1]``,
    ... for a vector node; pandas ``category`` columns and ``categorical`` are categorical nodes)
    and the standardisation statistics. The derived graph of the built program is checked
    against ``graph``. Train with ``scm.fit(data)``.

    Args:
        graph: a DAG over the nodes of ``data``.
        data: a DataFrame or dict node -> ``(units, *event)``.
        mechanism: ``"auto"`` (the default: :func:`~pyro_scm.selection.select_mechanisms`
            picks a kind per node at ``fit``), ``"nsf"``, ``"maf"``, ``"locscale"``, ``"anm"``,
            a callable ``(node, event_shape, context) -> Mechanism``, or a dict node -> one of
            these (a node missing from the dict is ``"auto"``).
        categorical: node -> number of classes, for categorical nodes given as class indices.
        hidden: hidden layer sizes of the networks.
        transforms: number of flow transforms (flows only).
        candidates: the kinds ``"auto"`` chooses from, simplest first.

    Until ``fit`` selects them, ``"auto"`` nodes hold an untrained mechanism of the first
    candidate kind. To load a saved selected model, build it with the chosen kinds
    (``mechanism={n: info["kind"] for n, info in scm.selection.items()}``).
    """
    g.check_acyclic(graph)
    specs = node_specs_from_data(data, categorical)
    for node in graph.nodes:
        if node not in specs:
            raise MissingNodeError(node, "data")
    for node in specs:
        if node not in graph.nodes:
            raise UnknownNodeError(node, list(graph.nodes), "the graph")
    order = list(nx.lexicographical_topological_sort(graph))
    parents = {n: sorted(graph.predecessors(n), key=order.index) for n in order}
    candidates = tuple(candidates) if not isinstance(candidates, str) else candidates
    if (
        isinstance(candidates, str)
        or not candidates
        or any(k not in CANDIDATE_KINDS for k in candidates)
    ):
        raise MechanismError(
            f"candidates must be a non-empty sequence of {CANDIDATE_KINDS}, got {candidates!r}"
        )
    mechanisms, auto = {}, []
    for node in order:
        kind = mechanism.get(node, "auto") if isinstance(mechanism, Mapping) else mechanism
        if isinstance(kind, str) and kind == "auto":
            auto.append(node)
            kind = candidates[0]
        context = sum(max(specs[p].event_shape.numel(), 1) for p in parents[node])
        mechanisms[node] = make_mechanism(kind, node, specs[node], context, hidden, transforms)
    scm = GraphSCM(parents, mechanisms)
    auto = [n for n in auto if specs[n].num_classes is None]
    if auto:
        scm.pending_selection = {
            "nodes": auto,
            "kinds": candidates,
            "hidden": tuple(hidden),
            "transforms": transforms,
        }
    g.check_matches(scm.graph, graph)
    values = to_node_tensors(data, scm.specs, where="data", like=scm._like())
    prepare(scm, values)
    return scm
