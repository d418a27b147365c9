"""The SCM: a Pyro program over mechanisms, its derived graph, and the queries as methods.

Users subclass :class:`SCM`, create mechanisms in ``__init__`` and write ``model()`` as plain
``pyro.sample(name, self.mechanism(*parents))`` statements, one unit at a time (no plates): the
queries batch over units and samples by running the program on batched values.

The class keeps the program, the graph derived from it and the node specs; each query method
delegates in one line to :mod:`pyro_scm.queries` (one module per rung of Pearl's ladder, planned
from the graph), training to :mod:`pyro_scm.fitting`, persistence to :mod:`pyro_scm.persistence`.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import torch
from torch import Tensor, nn

from . import graph as g
from . import queries
from .data import NodeSpec
from .handlers import ReplayNoise
from .queries import Intervened
from .results import QueryResult

__all__ = ["SCM", "Intervened"]

Interventions = Mapping[str, object]


class SCM(nn.Module):
    """A structural causal model written as a Pyro program over mechanisms.

    Subclasses define mechanisms as submodules and the program in :meth:`model`.

    Example:
        >>> import pyro, torch
        >>> import pyro_scm as ps
        >>> class Linear(ps.SCM):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.x = ps.LocScaleMechanism()
        ...         self.y = ps.LocScaleMechanism(loc=lambda x: 2 * x, scale=0.5)
        ...     def model(self):
        ...         x = pyro.sample("x", self.x())
        ...         pyro.sample("y", self.y(x))
        >>> scm = Linear()
        >>> sorted(scm.graph.edges)
        [('x', 'y')]
        >>> cf = scm.counterfactual({"x": [1.0], "y": [2.5]}, do={"x": 0.0})
        >>> cf["y"]
        tensor([[0.5000]])
    """

    def model(self) -> None:
        """The program: one ``pyro.sample`` per node, each from a mechanism of its parents."""
        raise NotImplementedError("subclasses of SCM write their program in model()")

    # -- the graph ---------------------------------------------------------------------------

    @property
    def graph(self) -> nx.DiGraph:
        """The causal graph derived from :meth:`model` (cached).

        Node attributes: ``event_shape``, ``mechanism`` (kind), ``num_classes`` (categorical
        nodes, else None), ``order``.
        """
        if getattr(self, "_graph_cache", None) is None:
            try:
                self._graph_cache = self._derive_graph()
            except AttributeError as e:  # nn.Module would report it as a missing `graph`
                raise RuntimeError(f"running {type(self).__name__}.model() failed: {e}") from e
        return self._graph_cache

    def _derive_graph(self) -> nx.DiGraph:
        def run() -> None:
            with ReplayNoise(batch_shape=(2,), strict=False):
                self.model()

        graph = g.graph_from_trace(g.trace_provenance(run))
        g.check_acyclic(graph)
        for node in graph.nodes:
            mechanism_k = graph.nodes[node]["mechanism"]
            shape = graph.nodes[node]["event_shape"]
            graph.nodes[node]["num_classes"] = shape[-1] if mechanism_k == "categorical" else None
        return graph

    @property
    def nodes(self) -> list[str]:
        """Node names in the program's (topological) order."""
        return list(self.graph.nodes)

    @property
    def specs(self) -> dict[str, NodeSpec]:
        """Node -> :class:`~pyro_scm.data.NodeSpec` (event shape, class count)."""
        nodes = self.graph.nodes
        return {n: NodeSpec(nodes[n]["event_shape"], nodes[n]["num_classes"]) for n in nodes}

    def _like(self) -> Tensor:
        """A tensor with the model's device and floating dtype."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.zeros(())

    # -- queries (pyro_scm.queries) ---------------------------------------------------------

    def abduct(self, factual: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The exogenous noise of every node given its (and its parents') factual values.

        Args:
            factual: node -> ``(*batch, *event)`` tensors, already validated.
        Returns:
            node -> ``(*batch, *noise_event)``.
        """
        return queries.abduct(self, factual)

    def log_prob(self, data: object) -> Tensor:
        """log p(x) of each unit: the sum of every mechanism's log-density, ``(units,)``.

        Needs mechanisms with a tractable ``log_prob`` (flows, loc-scale, categorical).
        """
        return queries.log_prob(self, data)

    def sample(self, n: int, *, return_noise: bool = False) -> QueryResult:
        """``n`` observational samples: each node ``(n, 1, *event)``; with ``return_noise`` the
        drawn noise in ``result.noise``."""
        return queries.sample(self, n, {}, return_noise=return_noise)

    def do(self, interventions: Interventions) -> Intervened:
        """The model under ``do(interventions)``; see :class:`Intervened`.

        Args:
            interventions: node -> a number, a tensor broadcastable to ``(n, *event)`` (or
                ``(units, *event)`` in a counterfactual), or a callable mapping the value the
                node's mechanism would produce to the intervened value (a shift intervention,
                ``do(x := f(x))``).
        """
        return Intervened(self, interventions)

    @torch.no_grad()
    def counterfactual(
        self,
        factual: object,
        do: Interventions | None = None,
        *,
        num_samples: int = 1,
        chunk_size: int | None = None,
    ) -> QueryResult:
        """Counterfactual values of every node under ``do`` given factual observations.

        Abduction u = f⁻¹(x_F; pa_F), action ``do``, prediction x* = f(u; pa*) in topological
        order, planned from the graph: only the intervened nodes and their descendants are
        abducted and recomputed; every other node is returned exactly as given, and its
        mechanism runs no network (:mod:`pyro_scm.queries.plan`).

        Args:
            factual: a DataFrame, a dict node -> ``(units, *event)`` or a :class:`QueryResult`.
            do: interventions as in :meth:`do`; empty returns the factual.
            num_samples: abduction draws per unit (mechanisms with stochastic abduction, e.g.
                categorical nodes, give different draws; invertible ones give copies).
            chunk_size: answer this many units at a time (bounds memory for huge batches).

        Returns:
            a :class:`QueryResult`, each node ``(num_samples, units, *event)``; ``noise`` holds
            the abducted noise of the recomputed nodes.
        """
        return queries.counterfactual(
            self, factual, do, num_samples=num_samples, chunk_size=chunk_size
        )

    def backtrack(self, factual: object, antecedent: Mapping[str, object], **kwargs):
        """Backtracking counterfactual; see :func:`pyro_scm.infer.backtrack`."""
        return queries.backtrack(self, factual, antecedent, **kwargs)

    # -- training and persistence -----------------------------------------------------------

    def fit(self, data: object, **kwargs) -> object:
        """Train every mechanism on its own loss; see :func:`pyro_scm.fitting.fit`."""
        from .fitting import fit

        return fit(self, data, **kwargs)

    def save(self, path) -> None:
        """Save weights, standardisation and metadata; see :func:`pyro_scm.persistence.save`."""
        from .persistence import save

        save(self, path)

    def load(self, path) -> SCM:
        """Load what :meth:`save` wrote into this model; see :func:`pyro_scm.persistence.load`."""
        from .persistence import load

        return load(self, path)

    @classmethod
    def from_graph(cls, graph: nx.DiGraph, data: object, mechanism: object = "nsf", **kwargs):
        """Build an SCM over a declared graph; see :func:`pyro_scm.builders.from_graph`."""
        from .builders import from_graph

        return from_graph(graph, data, mechanism, **kwargs)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        graph = self.graph
        for node in graph.nodes:
            attrs = graph.nodes[node]
            parents = ", ".join(graph.predecessors(node)) or "-"
            lines.append(
                f"  {node}: {attrs['mechanism']}, event {tuple(attrs['event_shape'])}, "
                f"parents ({parents})"
            )
        return "\n".join([*lines, ")"])
