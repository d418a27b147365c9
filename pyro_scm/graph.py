"""The causal graph of an SCM, derived from its program by provenance tracking.

Each sample site's value is tagged with its name; the parents of a node are the sites whose
tags reach the arguments its mechanism was called with (or, for a plain Pyro distribution, its
log-density). Helpers answer the graph questions queries need: ancestors, descendants,
topological order, mutilation for ``do``; :func:`plot_graph` draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import networkx as nx
import pyro
import torch
from pyro.infer.inspect import TrackProvenance
from pyro.ops.provenance import get_provenance
from pyro.poutine import Trace

from .errors import GraphError

__all__ = [
    "ancestors",
    "check_acyclic",
    "check_matches",
    "descendants",
    "graph_from_trace",
    "mutilate",
    "plot_graph",
    "trace_provenance",
]


def trace_provenance(run: Callable[[], object]) -> Trace:
    """Trace ``run()`` with every sample value tagged by its site's name (no gradients)."""
    with torch.no_grad(), pyro.validation_enabled(False), TrackProvenance():
        return pyro.poutine.trace(run).get_trace()


def graph_from_trace(trace: Trace) -> nx.DiGraph:
    """The DAG of a provenance-tracked trace, with node attributes.

    Node attributes: ``event_shape`` (torch.Size), ``mechanism`` (the mechanism kind, or the
    distribution's class name), ``order`` (position in the program), ``is_mechanism`` (whether
    the site follows the mechanism protocol, which queries need).
    """
    graph = nx.DiGraph()
    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    for order, site in enumerate(sites):
        fn = site["fn"]
        mechanism = getattr(fn, "mechanism", None)
        kind = mechanism.kind if mechanism is not None else type(fn).__name__
        graph.add_node(
            site["name"],
            event_shape=fn.event_shape,
            mechanism=kind,
            order=order,
            is_mechanism=mechanism is not None,
        )
        for parent in sorted(_provenance(fn, site["value"])):
            if parent != site["name"]:
                graph.add_edge(parent, site["name"])
    return graph


def _provenance(fn, value) -> frozenset:
    parents = getattr(fn, "parents", None)
    if parents is not None:
        found: frozenset = frozenset()
        for p in parents:
            found |= get_provenance(p)
        return found
    return get_provenance(fn.log_prob(value))


def check_acyclic(graph: nx.DiGraph) -> None:
    """Raise :class:`GraphError` naming a cycle if ``graph`` is not a DAG."""
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join(str(u) for u, _ in cycle) + f" -> {cycle[0][0]}"
    raise GraphError(f"the causal graph must be acyclic, but it has the cycle {path}")


def check_matches(derived: nx.DiGraph, declared: nx.DiGraph) -> None:
    """Raise :class:`GraphError` listing the differences if the two graphs' edges differ."""
    missing = sorted(set(declared.edges) - set(derived.edges))
    extra = sorted(set(derived.edges) - set(declared.edges))
    if missing or extra:
        raise GraphError(
            "the program's dependencies do not match the declared graph: "
            f"declared but not in the program {missing}; in the program but not declared {extra}"
        )


def descendants(graph: nx.DiGraph, nodes: Iterable[str]) -> set[str]:
    """The nodes reachable from ``nodes`` (``nodes`` themselves excluded unless reachable)."""
    out: set[str] = set()
    for n in nodes:
        out |= nx.descendants(graph, n)
    return out


def ancestors(graph: nx.DiGraph, nodes: Iterable[str]) -> set[str]:
    """The nodes from which ``nodes`` are reachable."""
    out: set[str] = set()
    for n in nodes:
        out |= nx.ancestors(graph, n)
    return out


def mutilate(graph: nx.DiGraph, nodes: Iterable[str]) -> nx.DiGraph:
    """A copy of ``graph`` without the edges into ``nodes`` (the graph under ``do(nodes)``)."""
    out = graph.copy()
    out.remove_edges_from([(p, n) for n in nodes for p in list(graph.predecessors(n))])
    return out


def plot_graph(graph: nx.DiGraph, ax=None, intervened: Iterable[str] = ()):
    """Draw the causal graph with matplotlib, intervened nodes highlighted.

    Returns:
        the matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * graph.number_of_nodes() ** 0.5 * 2, 4))
    else:
        fig = ax.figure
    pos = _layered_layout(graph)
    intervened = set(intervened)
    colours = ["#f4a261" if n in intervened else "#a8dadc" for n in graph.nodes]
    nx.draw_networkx(
        graph, pos, ax=ax, node_color=colours, node_size=1400, font_size=9, arrowsize=15
    )
    ax.set_axis_off()
    return fig


def _layered_layout(graph: nx.DiGraph) -> dict:
    layer = {}
    for n in nx.topological_sort(graph):
        layer[n] = 1 + max((layer[p] for p in graph.predecessors(n)), default=-1)
    for n, depth in layer.items():
        graph.nodes[n]["_layer"] = depth
    pos = nx.multipartite_layout(graph, subset_key="_layer", align="horizontal")
    for n in graph.nodes:
        del graph.nodes[n]["_layer"]
        pos[n] = (pos[n][0], -pos[n][1])
    return pos
