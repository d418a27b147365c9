"""Rungs one and two: observational and interventional samples, and the density of data.

Sampling runs the program once under :class:`~pyro_scm.handlers.ReplayNoise` (fresh noise),
:class:`~pyro_scm.handlers.Intervene` (values) and :class:`~pyro_scm.handlers.Shift`
(callables). An intervened node draws no noise and runs no network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import networkx as nx
import pyro.poutine as poutine
import torch
from torch import Tensor

from .. import graph as g
from .. import validation
from ..data import NodeSpec, to_node_tensors
from ..errors import InterventionError
from ..handlers import Intervene, Record, ReplayNoise, Shift, as_mechanism
from ..results import QueryResult
from .plan import check_interventions, check_mechanisms, interventions_as_tensors

__all__ = ["Intervened", "categorical_classes", "log_prob", "run_program", "sample"]


def run_program(
    scm,
    noise: dict[str, Tensor],
    batch_shape: torch.Size,
    interventions: Mapping[str, Tensor | Callable],
    fixed: Mapping[str, Tensor],
    record: Record | None = None,
) -> dict[str, Tensor]:
    """Run ``scm.model`` generating unvalued nodes from ``noise`` (fresh where absent).

    Args:
        noise: node -> ``(*batch_shape, *noise_event)``; fresh draws are added in place.
        batch_shape: the batch shape of fresh noise.
        interventions: node -> value ``(*batch_shape, *event)`` or a callable (a shift).
        fixed: node -> value the node is conditioned to.
        record: the recorder (a :class:`~pyro_scm.handlers.StopAfter` stops the program early;
            the caller catches :class:`~pyro_scm.handlers.Stopped`).

    Returns:
        node -> value for every node the program sampled.
    """
    values = {k: v for k, v in interventions.items() if torch.is_tensor(v)}
    shifts = {k: v for k, v in interventions.items() if not torch.is_tensor(v)}
    record = Record() if record is None else record
    with (
        ReplayNoise(noise, batch_shape),
        poutine.condition(data=dict(fixed)),
        Intervene(values),
        Shift(shifts),
        record,
    ):
        scm.model()
    return record.values


def sample(
    scm, n: int, interventions: Mapping[str, object], *, return_noise: bool = False
) -> QueryResult:
    """``n`` samples of ``scm`` under ``do(interventions)``: each node ``(n, 1, *event)``.

    Intervention tensors broadcast against ``(n, *event)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InterventionError(f"the number of samples must be a positive int, got {n!r}")
    specs, like = scm.specs, scm._like()
    check_mechanisms(scm.graph)
    actions = interventions_as_tensors(interventions, n, specs, like)
    actions = {k: v.unsqueeze(1) if torch.is_tensor(v) else v for k, v in actions.items()}
    noise: dict[str, Tensor] = {}
    with torch.no_grad():
        values = run_program(scm, noise, torch.Size([n, 1]), actions, {})
    return QueryResult(
        values={k: values[k] for k in scm.nodes},
        kind="interventional" if actions else "observational",
        interventions={k: v[:, 0] if torch.is_tensor(v) else v for k, v in actions.items()},
        noise={k: noise[k] for k in scm.nodes if k in noise} if return_noise else {},
        categorical=categorical_classes(specs),
    )


@torch.no_grad()
def log_prob(scm, data: object) -> Tensor:
    """log p(x) of each unit: the sum of every mechanism's log-density, ``(units,)``."""
    values = to_node_tensors(data, scm.specs, where="data", like=scm._like())
    with poutine.trace() as tracer, poutine.condition(data=values):
        scm.model()
    sites = [s for s in tracer.trace.nodes.values() if s["type"] == "sample"]
    return sum(as_mechanism(s).log_prob(s["value"]) for s in sites)


class Intervened:
    """An SCM under ``do(interventions)``: sample it, or ask counterfactuals of it.

    Interventions are checked against the model's nodes when created.
    """

    def __init__(self, scm, interventions: Mapping[str, object]):
        self.scm = scm
        self.interventions = check_interventions(interventions, scm.specs)

    @property
    def graph(self) -> nx.DiGraph:
        """The mutilated graph: no edges into intervened nodes."""
        return g.mutilate(self.scm.graph, self.interventions)

    @validation.guarded
    def sample(self, n: int, *, return_noise: bool = False) -> QueryResult:
        """``n`` samples from the intervened model: each node ``(n, 1, *event)``.

        Intervention tensors broadcast against ``(n, *event)``.
        """
        validation.check_query(self.scm, n=n)
        return sample(self.scm, n, self.interventions, return_noise=return_noise)

    def counterfactual(self, factual: object, **kwargs) -> QueryResult:
        """``scm.counterfactual(factual, do=interventions, **kwargs)``."""
        return self.scm.counterfactual(factual, do=self.interventions, **kwargs)


def categorical_classes(specs: Mapping[str, NodeSpec]) -> dict[str, int]:
    """Categorical nodes -> number of classes."""
    return {k: s.num_classes for k, s in specs.items() if s.num_classes is not None}
