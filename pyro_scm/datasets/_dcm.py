"""The SCMs of DCM (Chao et al. 2023): chain, triangle, diamond, Y, ladder and random graphs.

Equations exactly as in ``shared/benchmarks/SCMS.md`` and DCM's ``structural_equations.py``,
standardising divisors included; ``1 / (1 + e^{-a})`` is written ``sigmoid(a)``. Ladder and random
graphs have 3-dimensional super-nodes whose MLP weights (and, for random, whose graph) are drawn
from ``numpy.random.default_rng(seed)``: they are part of the instance. Draw order: (random only)
the graph, then for each non-root super-node in topological order ``W1 ~ U(-1, 1)^{16 x d_in}``
then ``W2 ~ U(-1, 1)^{3 x 16}``, then (random only) the 3 intervened nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import silu

from ..errors import DataError
from ._scm import Equation, SyntheticSCM, additive, general, root

VARIANTS = ("nonlinear", "nonadditive")
SUPER_DIM = 3
HIDDEN = 16
ABS_NOISE = "it depends on |u| (the sign of the noise is lost)"

Builder = Callable[[str, int, torch.dtype, torch.device | None], SyntheticSCM]


def _scm(
    name: str,
    variant: str,
    equations: dict[str, Equation],
    seed: int,
    dtype: torch.dtype,
    device: torch.device | None,
    **kwargs: Any,
) -> SyntheticSCM:
    graph = nx.DiGraph([(p, v) for v, e in equations.items() for p in e.parents])
    kwargs.setdefault("intervention_nodes", [v for v in equations if graph.out_degree(v) > 0])
    return SyntheticSCM(
        name, variant, equations, protocol="dcm", seed=seed, dtype=dtype, device=device, **kwargs
    )


# --------------------------------------------------------------------------- small graphs


def _chain(variant: str) -> dict[str, Equation]:
    if variant == "nonlinear":
        return {
            "x1": root(),
            "x2": additive(["x1"], lambda x1: torch.exp(x1 / 2) / 0.65, 0.25 / 0.65),
            "x3": additive(["x2"], lambda x2: (x2 - 5) ** 3 / 15 / 2.13, 1 / 2.13),
        }
    return {
        "x1": root(),
        "x2": general(
            ["x1"],
            lambda u, x1: 1 / ((u + x1) ** 2 + 0.5) / 0.63,
            not_invertible="it is symmetric in u2 + x1",
        ),
        "x3": general(
            ["x2"],
            lambda u, x2: torch.sqrt(x2 + u.abs()) / (0.1 + x2),
            not_invertible=ABS_NOISE,
        ),
    }


def _triangle(variant: str) -> dict[str, Equation]:
    if variant == "nonlinear":
        return {
            "x1": root(),
            "x2": additive(["x1"], lambda x1: 2 * x1**2 / 3, 1 / 3),
            "x3": additive(
                ["x1", "x2"], lambda x1, x2: 20 * torch.sigmoid(x2**2 - x1) / 2.41, 1 / 2.41
            ),
        }
    return {
        "x1": root(),
        "x2": general(
            ["x1"],
            lambda u, x1: (x1 / ((u + x1) ** 2 + 1) + u / 4) / 0.47,
            not_invertible="it is not monotone in u2 once |x1| > 0.39",
        ),
        "x3": general(
            ["x1", "x2"],
            lambda u, x1, x2: (u.abs() + 0.3) * (-x1 + x2 / 2 + u.abs() / 5) ** 2 / 0.93,
            not_invertible=ABS_NOISE,
        ),
    }


def _diamond(variant: str) -> dict[str, Equation]:
    if variant == "nonlinear":
        return {
            "x1": root(),
            "x2": additive(["x1"], lambda x1: x1**2 / 1.5, 0.5 / 1.5),
            "x3": additive(
                ["x1", "x2"], lambda x1, x2: (x2**2 - 2 * torch.sigmoid(x1)) / 1.27, 0.5 / 1.27
            ),
            "x4": additive(
                ["x2", "x3"], lambda x2, x3: x3 / ((x2 + x3).abs() + 0.5) / 0.54, 0.2 / 0.54
            ),
        }
    return {
        "x1": root(),
        "x2": general(
            ["x1"],
            lambda u, x1: (x1.abs().sqrt() * (u.abs() + 0.1) / 2 + x1.abs() + u / 5) / 0.83,
            not_invertible=ABS_NOISE,
        ),
        "x3": general(
            ["x1", "x2"],
            lambda u, x1, x2: 6 / (1 + (u.abs() + 0.5) * torch.exp(-x2 + x1)),
            not_invertible=ABS_NOISE,
        ),
        "x4": general(
            ["x2", "x3"],
            lambda u, x2, x3: ((x3 + x2 + u / 4 - 7) ** 2 - 20) / 7.27,
            not_invertible="it is a square in u4",
        ),
    }


def _y(variant: str) -> dict[str, Equation]:
    if variant == "nonlinear":
        return {
            "x1": root(),
            "x2": root(),
            "x3": additive(
                ["x1", "x2"],
                lambda x1, x2: (-(x2**2) + 4 * torch.sigmoid(x1 + x2)) / 1.83,
                0.5 / 1.83,
            ),
            "x4": additive(["x3"], lambda x3: 20 * torch.sigmoid(x3 - x3**2 / 2) / 3.26, 1 / 3.26),
        }
    return {
        "x1": root(),
        "x2": root(),
        "x3": general(
            ["x1", "x2"],
            lambda u, x1, x2: (x1 - 2 * x2 - 2) * (u.abs() + 0.2) / 2.87,
            not_invertible=ABS_NOISE,
        ),
        "x4": general(
            ["x3"],
            lambda u, x3: 1 / ((u + 2 * x3).abs() + 0.5) / 0.43,
            not_invertible="it depends on |u4 + 2 x3|",
        ),
    }


def _small(name: str, equations: Callable[[str], dict[str, Equation]]) -> Builder:
    def build(
        variant: str, seed: int, dtype: torch.dtype, device: torch.device | None
    ) -> SyntheticSCM:
        return _scm(name, variant, equations(variant), seed, dtype, device)

    return build


# --------------------------------------------------------------------------- super-node graphs

LADDER_EDGES = [(1, 2), (1, 3), (2, 4), (3, 4), (3, 5), (4, 6), (5, 6), (5, 7), (6, 8), (7, 8),
                (7, 9), (8, 10), (9, 10)]  # fmt: skip
LADDER_INTERVENTIONS = ["x1", "x2"]
"""DCM intervenes on scalar x01 and x04, first components of super-nodes 1 and 2; here the
super-nodes themselves are intervened on (all 3 components)."""


def _mlp_loc(w1: Tensor, w2: Tensor) -> Callable[..., Tensor]:
    """``0.75 W2 silu(W1 pa)`` with the parents concatenated: ``(n, 3)``."""

    def loc(*parents: Tensor) -> Tensor:
        return 0.75 * silu(torch.cat(parents, dim=-1) @ w1.T) @ w2.T

    return loc


def _mlp_nonadditive(w1: Tensor, w2: Tensor) -> Callable[..., Tensor]:
    """Component ``j`` is ``[0.75 W2 silu(W1 [u_j, pa])]_j``: ``(n, 3)``."""

    def generate(u: Tensor, *parents: Tensor) -> Tensor:
        pa = torch.cat(parents, dim=-1)
        inputs = torch.cat([u[..., None], pa[:, None, :].expand(-1, SUPER_DIM, -1)], dim=-1)
        out = 0.75 * silu(inputs @ w1.T) @ w2.T  # (n, 3 components, 3 outputs)
        return torch.diagonal(out, dim1=-2, dim2=-1)

    return generate


def _super_equations(
    edges: list[tuple[int, int]],
    num: int,
    variant: str,
    rng: np.random.Generator,
    dtype: torch.dtype,
    device: torch.device | None,
) -> dict[str, Equation]:
    equations: dict[str, Equation] = {}
    for j in range(1, num + 1):
        parents = [f"x{i}" for i in sorted(i for i, k in edges if k == j)]
        if not parents:
            equations[f"x{j}"] = root()
            continue
        d_in = SUPER_DIM * len(parents) + (variant == "nonadditive")
        w1 = torch.as_tensor(rng.uniform(-1, 1, (HIDDEN, d_in)), dtype=dtype, device=device)
        w2 = torch.as_tensor(rng.uniform(-1, 1, (SUPER_DIM, HIDDEN)), dtype=dtype, device=device)
        if variant == "nonlinear":
            equations[f"x{j}"] = additive(parents, _mlp_loc(w1, w2))
        else:
            equations[f"x{j}"] = general(
                parents,
                _mlp_nonadditive(w1, w2),
                not_invertible="its noise enters a random MLP, not monotone in general",
            )
    return equations


def random_dag(
    num: int, p: float, rng: np.random.Generator, tries: int = 50
) -> list[tuple[int, int]]:
    """Edges ``(i, j)``, ``i < j`` of a weakly connected Erdős–Rényi DAG over ``1..num``."""
    for _ in range(tries):
        upper = np.triu(rng.random((num, num)) < p, k=1)
        edges = [(int(i) + 1, int(j) + 1) for i, j in zip(*np.nonzero(upper))]
        graph = nx.DiGraph(edges)
        graph.add_nodes_from(range(1, num + 1))
        if nx.is_weakly_connected(graph):
            return edges
    raise DataError(f"no weakly connected DAG over {num} nodes with p={p} in {tries} tries")


def _super_scm(
    name: str,
    variant: str,
    edges: list[tuple[int, int]],
    rng: np.random.Generator,
    seed: int,
    dtype: torch.dtype,
    device: torch.device | None,
    interventions: list[str] | None,
) -> SyntheticSCM:
    equations = _super_equations(edges, 10, variant, rng, dtype, device)
    shapes = {v: torch.Size([SUPER_DIM]) for v in equations}
    if interventions is None:
        has_children = [f"x{i}" for i in sorted({i for i, _ in edges})]
        picked = rng.choice(len(has_children), min(3, len(has_children)), replace=False)
        interventions = [has_children[i] for i in sorted(picked)]
    return _scm(
        name, variant, equations, seed, dtype, device,
        event_shapes=shapes, intervention_nodes=interventions,
    )  # fmt: skip


def _ladder(
    variant: str, seed: int, dtype: torch.dtype, device: torch.device | None
) -> SyntheticSCM:
    rng = np.random.default_rng(seed)
    return _super_scm(
        "dcm-ladder", variant, LADDER_EDGES, rng, seed, dtype, device, LADDER_INTERVENTIONS
    )


def _random(
    variant: str, seed: int, dtype: torch.dtype, device: torch.device | None
) -> SyntheticSCM:
    rng = np.random.default_rng(seed)
    edges = random_dag(10, 0.3, rng)
    return _super_scm("dcm-random", variant, edges, rng, seed, dtype, device, None)


DCM_SCMS: dict[str, tuple[tuple[str, ...], Builder]] = {
    "dcm-chain": (VARIANTS, _small("dcm-chain", _chain)),
    "dcm-triangle": (VARIANTS, _small("dcm-triangle", _triangle)),
    "dcm-diamond": (VARIANTS, _small("dcm-diamond", _diamond)),
    "dcm-y": (VARIANTS, _small("dcm-y", _y)),
    "dcm-ladder": (VARIANTS, _ladder),
    "dcm-random": (VARIANTS, _random),
}
"""name -> (variants, builder(variant, seed, dtype, device))."""
