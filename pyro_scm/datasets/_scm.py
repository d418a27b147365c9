"""A synthetic SCM given by explicit structural equations: the exact ground truth of benchmarks.

Every node ``x`` has an exogenous noise ``u`` of shape ``(n, *event)`` and an equation
``x = generate(u, *parents)`` (:class:`~pyro_scm.mechanisms.equation.Equation`). The equations
form an ordinary pyro_scm program, :attr:`SyntheticSCM.scm` (one
:class:`~pyro_scm.mechanisms.EquationMechanism` per node), and every computation here runs that
program through :mod:`pyro_scm.queries`: observational and interventional samples, the true
counterfactual of a unit from its true noise, and (where every equation is invertible in its
noise) abduction and the density. This class adds seeded noise, validation and tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import networkx as nx
import pandas as pd
import torch
from torch import Tensor

from .. import graph as g
from ..errors import (
    DataError,
    GraphError,
    InterventionError,
    MechanismError,
    MissingNodeError,
    NonFiniteError,
    ShapeError,
    UnknownNodeError,
)
from ..mechanisms.equation import (
    UNIFORM_LOW,
    Equation,
    EquationMechanism,
    NoiseKind,
    additive,
    general,
    root,
)
from ..queries import abduct as abduct_noise
from ..queries import log_prob as program_log_prob
from ..queries import run_program
from ..scm import GraphSCM

__all__ = [
    "UNIFORM_LOW",
    "Equation",
    "NoiseKind",
    "SyntheticSCM",
    "Values",
    "additive",
    "general",
    "root",
]

Values = dict[str, Tensor]


# --------------------------------------------------------------------------- the SCM


class SyntheticSCM:
    """A known SCM: exact samples, interventions, counterfactuals, abduction and density.

    Args:
        name: registry name, e.g. ``"dcm-chain"``.
        variant: equation family, e.g. ``"nonlinear"``.
        equations: node -> :class:`Equation`, in topological order.
        event_shapes: node -> event shape; nodes left out are scalars (``torch.Size([])``).
        noise: ``"normal"`` (``N(0, 1)``) or ``"uniform"`` (``U(1e-6, 1)``) for every node.
        intervention_nodes: the nodes the benchmark protocol intervenes on.
        protocol: ``"dcm"`` or ``"causal-nf"``: which paper's protocol the SCM comes from.
        seed: the seed that fixed random parts (weights, graph) of the instance.
    """

    def __init__(
        self,
        name: str,
        variant: str,
        equations: Mapping[str, Equation],
        *,
        event_shapes: Mapping[str, torch.Size] | None = None,
        noise: NoiseKind = "normal",
        intervention_nodes: Iterable[str] = (),
        protocol: str = "",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        self.name = name
        self.variant = variant
        self.protocol = protocol
        self.seed = seed
        self.noise = noise
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._equations = dict(equations)
        self.nodes: list[str] = list(self._equations)
        shapes = dict(event_shapes or {})
        self.event_shapes: dict[str, torch.Size] = {
            node: torch.Size(shapes.get(node, ())) for node in self.nodes
        }
        self._graph = self._build_graph()
        self.scm = self._program()
        self.intervention_nodes: list[str] = [
            self._known(v, "protocol") for v in intervention_nodes
        ]

    def _build_graph(self) -> nx.DiGraph:
        graph = nx.DiGraph()
        graph.add_nodes_from(self.nodes)
        for i, node in enumerate(self.nodes):
            parents = self._equations[node].parents
            ranks = [self.nodes.index(p) if p in self._equations else -1 for p in parents]
            if any(r < 0 or r >= i for r in ranks) or ranks != sorted(ranks):
                raise GraphError(
                    f"parents {parents} of node {node!r} must be earlier nodes in topological "
                    f"order {self.nodes}"
                )
            graph.add_edges_from((p, node) for p in parents)
        return graph

    def _program(self) -> GraphSCM:
        """The equations as a pyro_scm program: one :class:`EquationMechanism` per node."""
        mechanisms = {
            node: EquationMechanism(
                eq,
                self.event_shapes[node],
                [len(self.event_shapes[p]) for p in eq.parents],
                noise=self.noise,
                name=node,
                dtype=self.dtype,
            )
            for node, eq in self._equations.items()
        }
        parents = {node: list(eq.parents) for node, eq in self._equations.items()}
        return GraphSCM(parents, mechanisms).to(self.device)

    def __repr__(self) -> str:
        return f"SyntheticSCM({self.name!r}, {self.variant!r}, nodes={self.nodes})"

    # ------------------------------------------------------------------ structure

    @property
    def label(self) -> str:
        """``name[variant]``, for messages and tables."""
        return f"{self.name}[{self.variant}]"

    @property
    def graph(self) -> nx.DiGraph:
        """The causal graph over node names (a fresh copy)."""
        return nx.DiGraph(self._graph)

    def parents(self, node: str) -> tuple[str, ...]:
        """Parents of ``node`` in topological order: the argument order of its equation."""
        return self._equations[self._known(node)].parents

    def descendants(self, node: str) -> list[str]:
        """Strict descendants of ``node``, in topological order."""
        below = nx.descendants(self._graph, self._known(node))
        return [v for v in self.nodes if v in below]

    def mutilated_graph(self, intervened: Iterable[str]) -> nx.DiGraph:
        """The graph with the edges into ``intervened`` nodes removed."""
        return g.mutilate(self._graph, [self._known(node, "intervention") for node in intervened])

    @property
    def is_additive(self) -> bool:
        """Whether every node is ``loc(parents) + scale * u`` with Gaussian ``u``."""
        return self.noise == "normal" and all(e.scale is not None for e in self._equations.values())

    @property
    def is_identifiable(self) -> bool:
        """Whether every equation is invertible in its noise, so factuals fix counterfactuals."""
        return all(e.abduct is not None for e in self._equations.values())

    def is_invertible(self, node: str) -> bool:
        """Whether ``node``'s equation is invertible in its noise."""
        return self._equations[self._known(node)].abduct is not None

    def loc_fn(self, node: str) -> Callable[..., Tensor]:
        """``loc`` of an additive node: ``x = loc_fn(node)(*parents) + noise_scale(node) * u``.

        Parents are passed in :meth:`parents` order (topological). The result has shape
        ``(n, *event)``; for a root, called with no argument, shape ``event``.
        """
        eq = self._additive(node)
        assert eq.loc is not None
        loc, event = eq.loc, self.event_shapes[node]

        def fn(*parents: Tensor) -> Tensor:
            out = torch.as_tensor(loc(*parents), dtype=self.dtype, device=self.device)
            return out if parents else out.expand(event)

        return fn

    def noise_scale(self, node: str) -> float:
        """``scale`` of an additive node (may be negative: ``x = loc - |scale| * u``)."""
        scale = self._additive(node).scale
        assert scale is not None
        return scale

    def noise_distribution(self, node: str) -> torch.distributions.Distribution:
        """The distribution of ``node``'s noise, event shape ``event``."""
        event = self.event_shapes[self._known(node)]
        zeros = torch.zeros(event, dtype=self.dtype, device=self.device)
        if self.noise == "normal":
            base: torch.distributions.Distribution = torch.distributions.Normal(zeros, 1.0)
        else:
            base = torch.distributions.Uniform(zeros + UNIFORM_LOW, zeros + 1.0)
        return torch.distributions.Independent(base, len(event))

    # ------------------------------------------------------------------ sampling

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> Values:
        """Draw the exogenous noise of ``n`` units: node -> ``(n, *event)``."""
        n = self._check_n(n)
        noise: Values = {}
        for node in self.nodes:
            shape = (n, *self.event_shapes[node])
            kw: dict[str, Any] = {
                "generator": generator,
                "dtype": self.dtype,
                "device": self.device,
            }
            if self.noise == "normal":
                noise[node] = torch.randn(shape, **kw)
            else:
                noise[node] = UNIFORM_LOW + (1.0 - UNIFORM_LOW) * torch.rand(shape, **kw)
        return noise

    def forward(self, noise: Mapping[str, Any], do: Mapping[str, Any] | None = None) -> Values:
        """Node values from noises, under the intervention ``do`` (node -> value).

        An intervened node takes its value (broadcast to ``(n, *event)``) instead of its equation,
        and needs no noise. Returns node -> ``(n, *event)`` in topological order. Runs
        :attr:`scm` under the intervention (:func:`pyro_scm.queries.run_program`).
        """
        skip = frozenset(do or {})
        u = self._check_values(noise, "noise", skip=skip)
        n = next(iter(u.values())).shape[0] if u else self._n_from_do(do)
        actions = self._check_do(do, n)
        values = run_program(self.scm, dict(u), torch.Size([n]), actions, {})
        return {node: values[node] for node in self.nodes}

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def sample_with_noise(self, n: int, seed: int = 0) -> tuple[Values, Values]:
        """``n`` observational units and their true noise, both node -> ``(n, *event)``."""
        noise = self.sample_noise(n, self._generator(seed))
        return self.forward(noise), noise

    def sample(self, n: int, seed: int = 0) -> Values:
        """``n`` observational samples: node -> ``(n, *event)``."""
        return self.sample_with_noise(n, seed)[0]

    def interventional(self, do: Mapping[str, Any], n: int, seed: int = 0) -> Values:
        """``n`` samples from the mutilated SCM under ``do``: node -> ``(n, *event)``."""
        return self.forward(self.sample_noise(n, self._generator(seed)), do)

    def counterfactual(self, factual_noise: Mapping[str, Any], do: Mapping[str, Any]) -> Values:
        """The true counterfactual of units with noise ``factual_noise`` under ``do``.

        The ground truth of counterfactual error: it needs the true noise, so it is exact for
        non-identifiable SCMs too. Equals ``forward(factual_noise, do)``.
        """
        return self.forward(factual_noise, do)

    def rank_preserving_counterfactual(
        self, factual: Mapping[str, Any], do: Mapping[str, Any], grid: int = 4000
    ) -> Values:
        r"""The counterfactual of a perfect rank-preserving model of this SCM (scalar nodes).

        A flow mechanism is monotone in its noise, so the counterfactual it gives, once it has
        learnt the true conditional distributions exactly, keeps each recomputed node's rank
        in its conditional distribution: with F(x | pa) the true conditional CDF,

            q = F(x | pa),   x' = F⁻¹(q | pa'),

        node by node in topological order (pa' the counterfactual parents). Where an equation is
        monotone in its noise this is the true counterfactual; where it is not (a non-identifiable
        node) it is the best any such model can do from observations, a floor for learned flows
        and a reference for ``counterfactual(noise, do)``. F is estimated on ``grid`` evenly
        spaced quantiles of the noise (mid-ranks for ties); a value beyond the extreme
        quantiles takes the extreme one's rank. Memory ``(units, grid)`` per node.

        Args:
            factual: node -> ``(units,)`` observed values.
            do: node -> intervention value, broadcastable to ``(units,)``.
            grid: noise quantiles per unit, at least 100.

        Returns:
            node -> ``(units,)``, in topological order.

        Raises:
            ShapeError: some node is not scalar.
            DataError: ``grid`` is not an int >= 100.
            NonFiniteError: an equation gives NaN or infinity on the noise quantiles.
        """
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 100:
            raise DataError(f"grid must be an int >= 100, got {grid!r}")
        for node in self.nodes:
            if len(self.event_shapes[node]):
                raise ShapeError(
                    f"rank_preserving_counterfactual needs scalar nodes; node {node!r} of "
                    f"{self.label} has event shape {tuple(self.event_shapes[node])}"
                )
        x = self._check_values(factual, "factual")
        n = next(iter(x.values())).shape[0]
        actions = self._check_do(do, n)
        probs = (torch.arange(grid, dtype=self.dtype, device=self.device) + 0.5) / grid
        if self.noise == "normal":
            quantiles = torch.special.ndtri(probs)
        else:
            quantiles = UNIFORM_LOW + (1.0 - UNIFORM_LOW) * probs
        changed = set(actions).union(*(nx.descendants(self._graph, v) for v in actions))
        out: Values = {}
        for node in self.nodes:
            eq = self._equations[node]
            if node in actions:
                out[node] = actions[node]
            elif node not in changed:
                out[node] = x[node]
            else:
                u = quantiles[None, :]  # (1, grid) against (units, 1) parents
                before = eq.generate(u, *(x[p][:, None] for p in eq.parents))
                after = eq.generate(u, *(out[p][:, None] for p in eq.parents))
                if not (torch.isfinite(before).all() and torch.isfinite(after).all()):
                    raise NonFiniteError(
                        f"the equation of node {node!r} gives NaN or infinity on the noise "
                        "quantiles, so its conditional distribution cannot be ranked"
                    )
                below = (before < x[node][:, None]).sum(-1) + (before <= x[node][:, None]).sum(-1)
                index = (below // 2).clamp(max=grid - 1)  # the mid-rank, (units,)
                out[node] = after.sort(-1).values.gather(-1, index[:, None])[:, 0]
        return out

    # ------------------------------------------------------------------ inversion

    def abduct(self, values: Mapping[str, Any]) -> Values:
        """The true noise of observed units: node -> ``(n, *event)``.

        Raises:
            MechanismError: some equation is not invertible in its noise (see ``is_identifiable``).
        """
        self._require_identifiable("abduct")
        x = self._check_values(values, "factual")
        noise = abduct_noise(self.scm, x)
        return {node: noise[node] for node in self.nodes}

    def log_prob(self, values: Mapping[str, Any]) -> Tensor:
        """The true log-density of observed units, shape ``(n,)`` (change of variables).

        Raises:
            MechanismError: some equation is not invertible in its noise.
        """
        self._require_identifiable("log_prob")
        x = self._check_values(values, "values")
        return program_log_prob(self.scm, x)

    def _require_identifiable(self, what: str) -> None:
        for node in self.nodes:
            eq = self._equations[node]
            if eq.abduct is None:
                raise MechanismError(
                    f"{what} needs every equation invertible in its noise, but node {node!r} of "
                    f"{self.label} is not: {eq.not_invertible}. Its counterfactuals are not "
                    "identifiable from observations; keep the true noise from sample_with_noise "
                    "and call counterfactual(noise, do) for the ground truth."
                )

    # ------------------------------------------------------------------ tables

    def columns(self, node: str) -> list[str]:
        """Table columns of ``node``: ``[node]`` for scalars, ``node[0]``, ``node[1]``, ... else."""
        event = self.event_shapes[self._known(node)]
        if len(event) == 0:
            return [node]
        return [f"{node}[{i}]" for i in range(event.numel())]

    def to_frame(self, values: Mapping[str, Any]) -> pd.DataFrame:
        """One row per unit, one column per scalar node or node component (flattened)."""
        x = self._check_values(values, "values")
        data: dict[str, Any] = {}
        for node in self.nodes:
            flat = x[node].detach().reshape(x[node].shape[0], -1).cpu().numpy()
            for j, col in enumerate(self.columns(node)):
                data[col] = flat[:, j]
        return pd.DataFrame(data)

    def from_frame(self, frame: pd.DataFrame) -> Values:
        """Inverse of :meth:`to_frame`: node -> ``(n, *event)``."""
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        out: Values = {}
        for node in self.nodes:
            cols = self.columns(node)
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise DataError(f"frame lacks columns {missing} of node {node!r}")
            block = torch.as_tensor(
                frame[cols].to_numpy(copy=True), dtype=self.dtype, device=self.device
            )
            out[node] = block.reshape(len(frame), *self.event_shapes[node])
        return out

    # ------------------------------------------------------------------ validation

    def _known(self, node: str, where: str = "query") -> str:
        if node not in self._equations:
            raise UnknownNodeError(node, self.nodes, where)
        return node

    def _additive(self, node: str) -> Equation:
        eq = self._equations[self._known(node)]
        if eq.scale is None:
            raise MechanismError(
                f"node {node!r} of {self.label} has no additive-noise equation "
                f"(x = loc(parents) + scale * u); its equation is non-additive"
            )
        return eq

    @staticmethod
    def _check_n(n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"the number of units must be a positive int, got {n!r}")
        return n

    def _check_values(
        self, values: Mapping[str, Any], where: str, skip: frozenset[str] = frozenset()
    ) -> Values:
        if not isinstance(values, Mapping):
            raise DataError(f"{where} must be a dict node -> tensor, got {type(values).__name__}")
        for node in values:
            self._known(node, where)
        out: Values = {}
        n: int | None = None
        for node in self.nodes:
            if node in skip:
                continue
            if node not in values:
                raise MissingNodeError(node, where)
            v = torch.as_tensor(values[node], dtype=self.dtype, device=self.device)
            event = self.event_shapes[node]
            if v.dim() != 1 + len(event) or v.shape[1:] != event:
                raise ShapeError(
                    f"{where} of node {node!r} has shape {tuple(v.shape)}; expected "
                    f"(n, {', '.join(map(str, event))})".replace(", )", ")")
                )
            if n is not None and v.shape[0] != n:
                raise ShapeError(f"{where} of node {node!r} has {v.shape[0]} units, others {n}")
            if v.shape[0] == 0:
                raise DataError(f"{where} of node {node!r} has no units")
            if not torch.isfinite(v).all():
                raise NonFiniteError(f"{where} of node {node!r} contains NaN or infinity")
            n = v.shape[0]
            out[node] = v
        return out

    def _n_from_do(self, do: Mapping[str, Any] | None) -> int:
        shapes = [torch.as_tensor(v).shape for v in (do or {}).values()]
        sizes = {s[0] for s in shapes if len(s) > 0}
        if len(sizes) != 1:
            raise InterventionError(
                "every node is intervened on and no noise is given: the number of units is "
                "ambiguous; pass the noise dict or values with a leading unit dimension"
            )
        return sizes.pop()

    def _check_do(self, do: Mapping[str, Any] | None, n: int) -> Values:
        if do is None:
            return {}
        if not isinstance(do, Mapping):
            raise InterventionError(f"do must be a dict node -> value, got {type(do).__name__}")
        out: Values = {}
        for node, value in do.items():
            self._known(node, "intervention")
            v = torch.as_tensor(value, dtype=self.dtype, device=self.device)
            if not torch.isfinite(v).all():
                raise NonFiniteError(
                    f"intervention value of node {node!r} contains NaN or infinity"
                )
            shape = (n, *self.event_shapes[node])
            try:
                out[node] = torch.broadcast_to(v, shape).clone()
            except RuntimeError as err:
                raise InterventionError(
                    f"intervention value of node {node!r} has shape {tuple(v.shape)}, not "
                    f"broadcastable to {shape}"
                ) from err
        return out
