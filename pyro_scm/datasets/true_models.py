"""The true SCM of a synthetic data set, written as a pyro_scm program, and learned models for it.

An additive-noise :class:`~pyro_scm.datasets.SyntheticSCM` has equations
``x = loc(pa) + scale · u`` with ``u ~ N(0, I)``; :func:`true_scm` writes each one as a
:class:`~pyro_scm.LocScaleMechanism` with the exact ``loc`` and ``|scale|``. A loc-scale mechanism
needs a positive scale, so a node with a negative scale has its sign folded into the noise: the
model's noise is ``u' = sign(scale) · u``, which has the same N(0, I) law. Abduction then returns
``u'`` (see :func:`noise_signs`), and counterfactuals, which only replay the abducted noise through
the same equations, are exactly the true ones. The true model scores zero counterfactual error:
a check on the benchmark harness.

:func:`learned_scm` builds ``ps.SCM.from_graph`` over a data set's graph, shaped by its data.

Example:
    >>> from pyro_scm.datasets import load_synthetic
    >>> syn = load_synthetic("dcm-chain", "nonlinear")
    >>> model = true_scm(syn)
    >>> x, u = syn.sample_with_noise(5, seed=0)
    >>> cf = model.counterfactual(x, do={"x1": 0.5})
    >>> truth = syn.counterfactual(u, do={"x1": 0.5})
    >>> bool((cf["x3"][0] - truth["x3"]).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from torch import Tensor

from ..errors import MechanismError
from ..mechanisms import LocScaleMechanism
from ..mechanisms.factory import MechanismFactory
from ..scm import GraphSCM, from_graph
from ._scm import SyntheticSCM

__all__ = ["learned_scm", "noise_signs", "true_scm"]


def noise_signs(synthetic: SyntheticSCM) -> dict[str, float]:
    """node -> the sign of its noise scale: the model of :func:`true_scm` abducts ``sign · u``.

    Raises:
        MechanismError: the SCM is not additive (see :attr:`SyntheticSCM.is_additive`).
    """
    _require_additive(synthetic)
    return {v: 1.0 if synthetic.noise_scale(v) > 0 else -1.0 for v in synthetic.nodes}


def true_scm(synthetic: SyntheticSCM) -> GraphSCM:
    """The true SCM of an additive-noise synthetic SCM as a pyro_scm program.

    Every node is ``LocScaleMechanism(loc=loc_fn(node), scale=|noise_scale(node)|)`` over its
    parents in the synthetic SCM's (topological) order, so queries on the returned model are exact:
    ``sample``/``do`` follow the (mutilated) true equations and ``counterfactual`` of observed units
    equals ``synthetic.counterfactual`` of their true noise. Abducted noise is ``sign · u`` where
    ``sign`` is :func:`noise_signs` (a relabelling of N(0, I) noise that changes no query).

    Raises:
        MechanismError: the SCM has a non-additive node or non-Gaussian noise.
    """
    _require_additive(synthetic)
    parents = {v: list(synthetic.parents(v)) for v in synthetic.nodes}
    mechanisms = {
        v: LocScaleMechanism(
            loc=synthetic.loc_fn(v),
            scale=abs(synthetic.noise_scale(v)),
            event_shape=synthetic.event_shapes[v],
        )
        for v in synthetic.nodes
    }
    return GraphSCM(parents, mechanisms).to(synthetic.device)


def learned_scm(
    synthetic: SyntheticSCM,
    data: pd.DataFrame | Mapping[str, Tensor],
    mechanism: str | MechanismFactory | Mapping[str, str | MechanismFactory] = "nsf",
    *,
    hidden: Sequence[int] | None = None,
    transforms: int = 3,
) -> GraphSCM:
    """An untrained ``ps.SCM.from_graph`` model over ``synthetic``'s graph, shaped by ``data``.

    ``hidden`` and ``transforms`` as in ``from_graph`` (None: each kind's default layers).

    ``data`` is a frame from ``synthetic.to_frame`` or a dict node -> ``(n, *event)`` (what
    ``synthetic.sample`` returns). Train it with ``model.fit(data)``.
    """
    return from_graph(synthetic.graph, data, mechanism, hidden=hidden, transforms=transforms)


def _require_additive(synthetic: SyntheticSCM) -> None:
    if not synthetic.is_additive:
        raise MechanismError(
            f"{synthetic.label} is not an additive-noise SCM with Gaussian noise (some node is "
            "x = f(u, pa) with non-additive u, or its noise is uniform); its true model cannot be "
            "written with LocScaleMechanism"
        )
