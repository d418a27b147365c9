"""Rung three: counterfactuals by abduction, action and prediction, planned from the graph.

Abduction u = f⁻¹(x_F; pa_F) for the recomputed nodes only, action ``do``, prediction
x* = f(u; pa*) in topological order for the intervened nodes and their descendants; every other
node is returned exactly as given, and its mechanism runs no network (see :mod:`.plan`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping

import pyro.poutine as poutine
import torch
from torch import Tensor

from ..data import to_node_tensors
from ..extrapolation import check_counterfactual
from ..handlers import Abduct, StopAfter, Stopped
from ..results import QueryResult
from .interventional import categorical_classes, run_program
from .plan import Plan, interventions_as_tensors, plan_counterfactual

__all__ = ["abduct", "counterfactual", "predict"]


def abduct(
    scm, factual: Mapping[str, Tensor], nodes: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """The exogenous noise of ``nodes`` (default: every node) given the factual values.

    The program stops after the last wanted node; the other nodes' mechanisms run no network.

    Args:
        factual: node -> ``(*batch, *event)`` tensors, already validated.
        nodes: the nodes to abduct.
    Returns:
        node -> ``(*batch, *noise_event)``.
    """
    order = scm.nodes
    wanted = list(order) if nodes is None else [n for n in order if n in set(nodes)]
    if not wanted:
        return {}
    abduction = Abduct(nodes=wanted)
    with (
        contextlib.suppress(Stopped),
        abduction,
        poutine.condition(data=dict(factual)),
        StopAfter(wanted),
    ):
        scm.model()
    return abduction.noise


def predict(
    scm,
    plan: Plan,
    noise: dict[str, Tensor],
    batch_shape: torch.Size,
    actions: Mapping[str, Tensor | Callable],
    factual: Mapping[str, Tensor],
) -> dict[str, Tensor]:
    """Counterfactual values of every node: the given ones as in ``factual``, the recomputed
    ones from ``noise`` under ``actions`` in topological order (the program stops after the
    last recomputed node)."""
    values = {n: factual[n] for n in plan.given}
    if not plan.recomputed:
        return values
    fixed = {n: factual[n] for n in plan.given}
    record = StopAfter(plan.recomputed)
    with contextlib.suppress(Stopped):
        run_program(scm, noise, batch_shape, actions, fixed, record)
    values.update(record.values)
    return {n: values[n] for n in plan.order}


def counterfactual(
    scm,
    factual: object,
    do: Mapping[str, object] | None = None,
    *,
    num_samples: int = 1,
    chunk_size: int | None = None,
    planned: bool = True,
    extrapolation: bool = True,
) -> QueryResult:
    """Counterfactual values of every node under ``do`` given factual observations.

    See :meth:`pyro_scm.SCM.counterfactual`. ``planned=False`` runs the full computation
    instead (abduct every node, regenerate every node), the reference the plan is tested
    against; ``extrapolation=False`` skips the extrapolation scores.
    """
    specs = scm.specs
    like = scm._like()
    factual_t = to_node_tensors(factual, specs, where="factual", like=like)
    units = next(iter(factual_t.values())).shape[0]
    actions = interventions_as_tensors(do or {}, units, specs, like)
    plan = plan_counterfactual(scm.graph, actions)
    if not planned:
        plan = _unplanned(plan, actions)
    step = chunk_size or units
    parts = [
        _counterfactual_chunk(
            scm,
            {k: v[i : i + step] for k, v in factual_t.items()},
            {k: v[i : i + step] if torch.is_tensor(v) else v for k, v in actions.items()},
            plan,
            num_samples,
        )
        for i in range(0, units, step)
    ]
    if len(parts) == 1:
        values, noise = parts[0]
    else:
        values, noise = (
            {k: torch.cat([p[j][k] for p in parts], dim=1) for k in parts[0][j]} for j in (0, 1)
        )
    result = QueryResult(
        values=values,
        kind="counterfactual",
        factual=factual_t,
        interventions=actions,
        noise=noise,
        categorical=categorical_classes(specs),
    )
    if extrapolation:
        check_counterfactual(scm, result)  # extrapolation p-values in sample_stats, and warnings
    return result


def _counterfactual_chunk(
    scm,
    factual: dict[str, Tensor],
    actions: dict[str, Tensor | Callable],
    plan: Plan,
    num_samples: int,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    expanded = {k: v.expand(num_samples, *v.shape) for k, v in factual.items()}
    batch = next(iter(expanded.values())).shape[:2]
    noise = abduct(scm, expanded, plan.abducted)
    actions = {
        k: v.expand(num_samples, *v.shape) if torch.is_tensor(v) else v for k, v in actions.items()
    }
    values = predict(scm, plan, dict(noise), batch, actions, expanded)
    return values, noise


def _unplanned(plan: Plan, actions: Mapping[str, object]) -> Plan:
    """The plan that abducts and regenerates every node (nothing returned as given)."""
    return Plan(
        order=plan.order,
        values=plan.values,
        shifts=plan.shifts,
        recomputed=plan.order,
        abducted=tuple(n for n in plan.order if n not in plan.values),
        given=(),
    )
