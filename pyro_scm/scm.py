"""The SCM: a Pyro program over mechanisms, and the queries of Pearl's ladder on it.

Users subclass :class:`SCM`, create mechanisms in ``__init__`` and write ``model()`` as plain
``pyro.sample(name, self.mechanism(*parents))`` statements, one unit at a time (no plates): the
queries batch over units and samples by running the program on batched values.

Queries are compositions of effect handlers over that program:

- observational: :class:`~pyro_scm.handlers.ReplayNoise` with fresh noise;
- interventional: the same under ``pyro.poutine.do`` (values) and
  :class:`~pyro_scm.handlers.Shift` (callables);
- counterfactual: :class:`~pyro_scm.handlers.Abduct` under ``pyro.poutine.condition`` on the
  factual, then the interventional run replaying the abducted noise, with the non-descendants of
  the intervened nodes conditioned to their factual values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import networkx as nx
import pyro.poutine as poutine
import torch
from torch import Tensor, nn

from . import graph as g
from .data import NodeSpec, broadcast_intervention, to_node_tensors
from .errors import InterventionError, UnknownNodeError
from .extrapolation import SupportStatistics, check_counterfactual
from .handlers import Abduct, ReplayNoise, Shift, as_mechanism
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

    # -- running the program ----------------------------------------------------------------

    def _predict(
        self,
        noise: dict[str, Tensor],
        batch_shape: torch.Size,
        interventions: Mapping[str, Tensor | Callable],
        fixed: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:
        values = {k: v for k, v in interventions.items() if torch.is_tensor(v)}
        shifts = {k: v for k, v in interventions.items() if not torch.is_tensor(v)}
        with (
            ReplayNoise(noise, batch_shape),
            poutine.condition(data=dict(fixed)),
            poutine.do(data=values),
            Shift(shifts),
        ):
            trace = poutine.trace(self.model).get_trace()
        return {
            name: trace.nodes[f"{name}__CF"]["value"] if name in values else site["value"]
            for name, site in trace.nodes.items()
            if site["type"] == "sample" and not name.endswith("__CF")
        }

    def abduct(self, factual: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The exogenous noise of every node given its (and its parents') factual values.

        Args:
            factual: node -> ``(*batch, *event)`` tensors, already validated.
        Returns:
            node -> ``(*batch, *noise_event)``.
        """
        with Abduct() as abduct, poutine.condition(data=dict(factual)):
            self.model()
        return abduct.noise

    @torch.no_grad()
    def log_prob(self, data: object) -> Tensor:
        """log p(x) of each unit: the sum of every mechanism's log-density, ``(units,)``.

        Needs mechanisms with a tractable ``log_prob`` (flows, loc-scale, categorical).
        """
        values = to_node_tensors(data, self.specs, where="data", like=self._like())
        with poutine.trace() as tracer, poutine.condition(data=values):
            self.model()
        sites = [s for s in tracer.trace.nodes.values() if s["type"] == "sample"]
        return sum(as_mechanism(s).log_prob(s["value"]) for s in sites)

    # -- queries ----------------------------------------------------------------------------

    def sample(self, n: int, *, return_noise: bool = False) -> QueryResult:
        """``n`` observational samples: each node ``(n, 1, *event)``."""
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

        Abduction u = f⁻¹(x_F; pa_F) for every node, action ``do``, prediction
        x* = f(u; pa*) in topological order. Only descendants of intervened nodes are
        recomputed; every other node is returned exactly as given.

        Args:
            factual: a DataFrame, a dict node -> ``(units, *event)`` or a :class:`QueryResult`.
            do: interventions as in :meth:`do`; empty returns the factual.
            num_samples: abduction draws per unit (mechanisms with stochastic abduction, e.g.
                categorical nodes, give different draws; invertible ones give copies).
            chunk_size: answer this many units at a time (bounds memory for huge batches).

        Returns:
            a :class:`QueryResult`, each node ``(num_samples, units, *event)``.
        """
        specs = self.specs
        like = self._like()
        factual_t = to_node_tensors(factual, specs, where="factual", like=like)
        units = next(iter(factual_t.values())).shape[0]
        actions = self._interventions(do or {}, units, specs, like)
        changed = set(actions) | g.descendants(self.graph, actions)
        step = chunk_size or units
        parts = [
            self._counterfactual_chunk(
                {k: v[i : i + step] for k, v in factual_t.items()},
                {k: v[i : i + step] if torch.is_tensor(v) else v for k, v in actions.items()},
                changed,
                num_samples,
            )
            for i in range(0, units, step)
        ]
        values, latents = (
            {k: torch.cat([p[j][k] for p in parts], dim=1) for k in parts[0][j]} for j in (0, 1)
        )
        result = QueryResult(
            values=values,
            kind="counterfactual",
            factual=factual_t,
            interventions=actions,
            latents=latents,
            categorical=_categorical(specs),
        )
        check_counterfactual(self, result)  # extrapolation scores and warnings
        return result

    def _counterfactual_chunk(
        self,
        factual: dict[str, Tensor],
        actions: dict[str, Tensor | Callable],
        changed: set[str],
        num_samples: int,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        expanded = {k: v.expand(num_samples, *v.shape) for k, v in factual.items()}
        batch = next(iter(expanded.values())).shape[:2]
        noise = self.abduct(expanded)
        fixed = {k: v for k, v in expanded.items() if k not in changed}
        actions = {
            k: v.expand(num_samples, *v.shape) if torch.is_tensor(v) else v
            for k, v in actions.items()
        }
        values = self._predict(noise, batch, actions, fixed) if changed else expanded
        return values, noise

    def _interventions(
        self, interventions: Interventions, units: int, specs: Mapping[str, NodeSpec], like
    ) -> dict[str, Tensor | Callable]:
        if not isinstance(interventions, Mapping):
            raise InterventionError(
                f"interventions must be a dict node -> value, not {type(interventions).__name__}"
            )
        out = {}
        for node, value in interventions.items():
            if node not in specs:
                raise UnknownNodeError(node, list(specs), "do")
            out[node] = broadcast_intervention(node, value, units, specs[node], like)
        return out

    def backtrack(self, factual: object, antecedent: Mapping[str, object], **kwargs):
        """Backtracking counterfactual; see :func:`pyro_scm.infer.backtrack`."""
        from .infer import backtrack

        return backtrack(self, factual, antecedent, **kwargs)

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
    def from_graph(cls, graph: nx.DiGraph, data: object, mechanism: object = "auto", **kwargs):
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


class Intervened:
    """An SCM under ``do(interventions)``: sample it, or ask counterfactuals of it.

    Interventions are checked against the model's nodes when created.
    """

    def __init__(self, scm: SCM, interventions: Interventions):
        if not isinstance(interventions, Mapping):
            raise InterventionError(
                f"interventions must be a dict node -> value, not {type(interventions).__name__}"
            )
        specs = scm.specs
        for node in interventions:
            if node not in specs:
                raise UnknownNodeError(node, list(specs), "do")
        self.scm, self.interventions = scm, dict(interventions)

    @property
    def graph(self) -> nx.DiGraph:
        """The mutilated graph: no edges into intervened nodes."""
        return g.mutilate(self.scm.graph, self.interventions)

    @torch.no_grad()
    def sample(self, n: int, *, return_noise: bool = False) -> QueryResult:
        """``n`` samples from the intervened model: each node ``(n, 1, *event)``.

        Intervention tensors broadcast against ``(n, *event)``.
        """
        if not isinstance(n, int) or n < 1:
            raise InterventionError(f"the number of samples must be a positive int, got {n!r}")
        scm, specs, like = self.scm, self.scm.specs, self.scm._like()
        actions = scm._interventions(self.interventions, n, specs, like)
        actions = {k: v.unsqueeze(1) if torch.is_tensor(v) else v for k, v in actions.items()}
        noise: dict[str, Tensor] = {}
        values = scm._predict(noise, torch.Size([n, 1]), actions, {})
        return QueryResult(
            values=values,
            kind="interventional" if actions else "observational",
            interventions={k: v[:, 0] if torch.is_tensor(v) else v for k, v in actions.items()},
            latents=noise if return_noise else {},
            categorical=_categorical(specs),
        )

    def counterfactual(self, factual: object, **kwargs) -> QueryResult:
        """``scm.counterfactual(factual, do=interventions, **kwargs)``."""
        return self.scm.counterfactual(factual, do=self.interventions, **kwargs)


def _categorical(specs: Mapping[str, NodeSpec]) -> dict[str, int]:
    return {k: s.num_classes for k, s in specs.items() if s.num_classes is not None}
