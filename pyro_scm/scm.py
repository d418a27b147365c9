"""The SCM: a Pyro program over mechanisms, its derived graph, and the queries as methods.

Users subclass :class:`SCM`, create mechanisms in ``__init__`` and write ``model()`` as plain
``pyro.sample(name, self.mechanism(*parents))`` statements, one unit at a time (no plates): the
queries batch over units and samples by running the program on batched values.

The class keeps the program, the graph derived from it and the node specs; each query method
delegates in one line to :mod:`pyro_scm.queries` (one module per rung of Pearl's ladder, planned
from the graph), training to :mod:`pyro_scm.fitting`, persistence to :mod:`pyro_scm.persistence`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx
import pyro
import torch
from torch import Tensor, nn

from . import fitting, persistence, queries, validation
from . import graph as g
from .data import NodeSpec, node_specs_from_data, to_node_tensors
from .errors import ArgumentError, MechanismError, MissingNodeError, UnknownNodeError
from .extrapolation import SupportStatistics
from .handlers import ReplayNoise
from .mechanisms import Mechanism
from .mechanisms.factory import MechanismFactory, make_mechanism
from .queries import Intervened
from .results import QueryResult
from .selection import CANDIDATE_KINDS, KINDS

__all__ = ["SCM", "GraphSCM", "Intervened", "from_graph"]

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

    def __init__(self):
        super().__init__()
        self.parent_support = SupportStatistics()  # filled at fit time; see extrapolation

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

    @validation.guarded
    def _derive_graph(self) -> nx.DiGraph:
        def run(units: int = 2) -> None:
            with ReplayNoise(batch_shape=(units,), strict=False):
                self.model()

        trace, mechanisms = validation.trace_program(self, run, locate=lambda: run(1))
        graph = g.graph_from_trace(trace)
        graph.graph["mechanisms"] = mechanisms
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

    @validation.guarded
    def abduct(self, factual: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The exogenous noise of every node given its (and its parents') factual values.

        Args:
            factual: node -> ``(*batch, *event)`` tensors, already validated.
        Returns:
            node -> ``(*batch, *noise_event)``.
        """
        return queries.abduct(self, factual)

    @validation.guarded
    def log_prob(self, data: object) -> Tensor:
        """log p(x) of each unit: the sum of every mechanism's log-density, ``(units,)``.

        Needs mechanisms with a tractable ``log_prob`` (flows, loc-scale, categorical).
        """
        validation.check_query(self)
        return queries.log_prob(self, data)

    def sample(self, n: int, *, return_noise: bool = False) -> QueryResult:
        """``n`` observational samples: each node ``(n, 1, *event)``; with ``return_noise`` the
        drawn noise in ``result.noise``."""
        return self.do({}).sample(n, return_noise=return_noise)

    def do(self, interventions: Interventions) -> Intervened:
        """The model under ``do(interventions)``; see :class:`Intervened`.

        Args:
            interventions: node -> a number, a tensor broadcastable to ``(n, *event)`` (or
                ``(units, *event)`` in a counterfactual), or a callable mapping the value the
                node's mechanism would produce to the intervened value (a shift intervention,
                ``do(x := f(x))``).
        """
        return Intervened(self, interventions)

    @validation.guarded
    @torch.no_grad()
    def counterfactual(
        self,
        factual: object,
        do: Interventions | None = None,
        *,
        num_samples: int = 1,
        chunk_size: int | None = None,
        extrapolation: bool = True,
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
            extrapolation: score how far each recomputed node's parents lie from the training
                support (:mod:`pyro_scm.extrapolation`; p-values and flags in ``sample_stats``,
                an ``ExtrapolationWarning``). It costs about as much as the query itself; turn it
                off only for throughput where the flags are not read.

        Returns:
            a :class:`QueryResult`, each node ``(num_samples, units, *event)``; ``noise`` holds
            the abducted noise of the recomputed nodes.
        """
        validation.check_query(self, num_samples=num_samples, chunk_size=chunk_size)
        validation.check_flag("extrapolation", extrapolation)
        return queries.counterfactual(
            self,
            factual,
            do,
            num_samples=num_samples,
            chunk_size=chunk_size,
            extrapolation=extrapolation,
        )

    @validation.guarded
    def backtrack(self, factual: object, antecedent: Mapping[str, object], **kwargs):
        """Backtracking counterfactual; see :func:`pyro_scm.infer.backtrack`."""
        validation.check_query(self)
        return queries.backtrack(self, factual, antecedent, **kwargs)

    # -- training and persistence -----------------------------------------------------------

    def fit(self, data: object, *, trainer: object = None, **kwargs) -> object:
        """Train every mechanism on its own loss; see :func:`pyro_scm.fitting.fit`.

        With ``trainer`` (a ``lightning.Trainer``) the training runs on Lightning; see
        :func:`pyro_scm.lightning.fit`.
        """
        if trainer is not None:
            from .lightning import fit as fit_on_trainer

            return fit_on_trainer(self, data, trainer=trainer, **kwargs)
        return fitting.fit(self, data, **kwargs)

    def mark_fitted(self, *nodes: str) -> SCM:
        """Declare the mechanisms of ``nodes`` (default: all) fitted, e.g. weights set by hand."""
        return validation.mark_fitted(self, nodes)

    def save(self, path) -> None:
        """Save weights, standardisation and metadata; see :func:`pyro_scm.persistence.save`."""
        persistence.save(self, path)

    def load(self, path) -> SCM:
        """Load what :meth:`save` wrote into this model; see :func:`pyro_scm.persistence.load`."""
        return persistence.load(self, path)

    @classmethod
    def from_graph(
        cls,
        graph: nx.DiGraph,
        data: object,
        mechanism: str | MechanismFactory | Mapping[str, str | MechanismFactory] = "auto",
        *,
        categorical: Mapping[str, int] | None = None,
        hidden: Sequence[int] | None = None,
        transforms: int = 3,
        candidates: Sequence[str] = KINDS,
        members: int | Mapping[str, int] = 1,
    ) -> GraphSCM:
        """An SCM over ``graph`` with a learned mechanism per node, shaped by ``data``.

        ``data`` gives each node's event shape (a column ``x`` for a scalar node, ``x[0]``,
        ``x[1]``, ... for a vector node; pandas ``category`` columns and ``categorical`` are
        categorical nodes) and the standardisation statistics. The derived graph of the built
        program is checked against ``graph``. Train with ``scm.fit(data)``.

        Args:
            graph: a DAG over the nodes of ``data``.
            data: a DataFrame or dict node -> ``(units, *event)``.
            mechanism: ``"auto"`` (the default: :func:`~pyro_scm.selection.select_mechanisms`
                picks a kind per node at ``fit``), ``"nsf"``, ``"maf"``, ``"locscale"``,
                ``"anm"``, ``"diffusion"`` (scalar and vector nodes), a callable
                ``(node, event_shape, context) -> Mechanism``, or a dict node -> one of these
                (a node missing from the dict is ``"auto"``).
            categorical: node -> number of classes, for categorical nodes given as class indices.
            hidden: hidden layer sizes of the networks (None: per kind,
                :data:`~pyro_scm.builders.DEFAULT_HIDDEN`: three layers of 64 for ``anm`` and
                ``locscale``, two for the flows and categorical nodes).
            transforms: number of flow transforms (flows only).
            candidates: the kinds ``"auto"`` chooses from, simplest first.
            members: loc networks averaged by the ``"anm"`` nodes with parents (an int for all
                of them, or a dict node -> count): the layout of the ensemble ``auto`` installs
                (:meth:`~pyro_scm.mechanisms.LocScaleMechanism.ensemble`), so that a saved
                selected model loads. ``fit`` trains such a node's networks jointly, as one
                wider network; ``auto`` trains them as independent fits
                (``scm.fit(data, members=...)``).

        Until ``fit`` selects them, ``"auto"`` nodes hold an untrained mechanism of the first
        candidate kind. To load a saved selected model, build it with the chosen kinds and
        ensemble sizes (``mechanism={n: i["kind"] for n, i in scm.selection.items()}``,
        ``members={n: i["members"] for n, i in scm.selection.items()}``).
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
        kinds = {
            n: mechanism.get(n, "auto") if isinstance(mechanism, Mapping) else mechanism
            for n in order
        }
        sizes = _ensemble_sizes(members, kinds, parents)
        mechanisms, auto = {}, []
        for node in order:
            kind = kinds[node]
            if isinstance(kind, str) and kind == "auto":
                auto.append(node)
                kind = candidates[0]
            context = sum(max(specs[p].event_shape.numel(), 1) for p in parents[node])
            mechanisms[node] = make_mechanism(
                kind, node, specs[node], context, hidden, transforms, members=sizes[node]
            )
        scm = GraphSCM(parents, mechanisms)
        auto = [n for n in auto if specs[n].num_classes is None]
        if auto:
            scm.pending_selection = {
                "nodes": auto,
                "kinds": candidates,
                "hidden": None if hidden is None else tuple(hidden),
                "transforms": transforms,
            }
        g.check_matches(scm.graph, graph)
        values = to_node_tensors(data, scm.specs, where="data", like=scm._like())
        fitting.prepare(scm, values)
        return scm

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


def _ensemble_sizes(
    members: object, kinds: Mapping[str, object], parents: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Node -> loc networks of its mechanism (``from_graph(members=...)``), checked."""

    def count(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"{where} must be an int >= 1, got {value!r}")
        return value

    if not isinstance(members, Mapping):
        n = count(members, "members")
        return {node: n if kinds[node] == "anm" and parents[node] else 1 for node in kinds}
    sizes = dict.fromkeys(kinds, 1)
    for node, value in members.items():
        if node not in kinds:
            raise UnknownNodeError(node, list(kinds), "from_graph(members=...)")
        sizes[node] = count(value, f"members[{node!r}]")
        if sizes[node] > 1 and not (kinds[node] == "anm" and parents[node]):
            raise ArgumentError(
                f"node {node!r}: members={value} is the size of an 'anm' ensemble of a node "
                f"with parents; it has mechanism {kinds[node]!r} and "
                f"{len(parents[node])} parents"
            )
    return sizes


class GraphSCM(SCM):
    """An SCM whose program samples the nodes of a declared graph in topological order.

    Each node's mechanism receives its parents in the order of ``parents[node]``.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]], mechanisms: Mapping[str, Mechanism]):
        super().__init__()
        validation.check_parents(parents)
        self.order = list(parents)
        self.parents = {n: list(p) for n, p in parents.items()}
        self.mechanisms = nn.ModuleList([mechanisms[n] for n in self.order])
        #: the ``mechanism="auto"`` nodes still to select at the next :meth:`fit`, with the kinds
        self.pending_selection: dict | None = None

    def fit(self, data: object, **kwargs) -> object:
        """Train every mechanism; with ``mechanism="auto"`` nodes pending, select their kinds
        first (:func:`pyro_scm.selection.select_mechanisms`, which also takes ``budget_s``,
        ``workers``, ``restarts`` and ``members``)."""
        if self.pending_selection is None:
            return super().fit(data, **kwargs)
        if kwargs.get("trainer") is not None:
            raise ArgumentError(
                f"nodes {self.pending_selection['nodes']} have mechanism='auto', which selects "
                "kinds in a one-process fit; run scm.fit(data) (or select on a sample) first, or "
                "build the model with named kinds (mechanism={node: 'nsf', ...}) to train on a "
                "Trainer"
            )
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
    **kwargs,
) -> GraphSCM:
    """An SCM over ``graph`` with a learned mechanism per node, shaped by ``data``.

    The same as :meth:`SCM.from_graph` (keyword arguments ``categorical``, ``hidden``,
    ``transforms`` as there).
    """
    return SCM.from_graph(graph, data, mechanism, **kwargs)
