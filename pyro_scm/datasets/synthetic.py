"""Synthetic SCMs with exact ground truth: the registry, the loader and the benchmark protocols.

Two suites (equations in ``shared/benchmarks/SCMS.md``):

- DCM (Chao et al. 2023): ``dcm-chain``, ``dcm-triangle``, ``dcm-diamond``, ``dcm-y`` (scalar
  nodes), ``dcm-ladder`` and ``dcm-random`` (3-dimensional super-nodes, weights fixed by ``seed``),
  each ``"nonlinear"`` (additive noise) or ``"nonadditive"``.
- Causal-NF (Javaloy et al. 2023): ``cnf-chain-3``, ``cnf-chain-4``, ``cnf-chain-5``,
  ``cnf-collider``, ``cnf-fork``, ``cnf-triangle``, ``cnf-simpson``, ``cnf-large-backdoor``.

Example:
    >>> scm = load_synthetic("dcm-triangle", "nonlinear")
    >>> x, u = scm.sample_with_noise(100, seed=0)
    >>> cf = scm.counterfactual(u, do={"x1": 1.0})
    >>> cf["x2"].shape
    torch.Size([100])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import DataError, UnknownNodeError
from ._causal_nf import CAUSAL_NF_SCMS
from ._dcm import DCM_SCMS, random_dag
from ._scm import UNIFORM_LOW, Equation, SyntheticSCM, Values, additive, general, root

__all__ = [
    "SYNTHETIC_SCMS",
    "SYNTHETIC_VARIANTS",
    "UNIFORM_LOW",
    "Equation",
    "SyntheticSCM",
    "Values",
    "additive",
    "general",
    "intervention_nodes",
    "intervention_quantiles",
    "intervention_values",
    "load_synthetic",
    "random_dag",
    "root",
]

_REGISTRY = {**DCM_SCMS, **CAUSAL_NF_SCMS}

SYNTHETIC_SCMS: list[str] = list(_REGISTRY)
"""Names accepted by :func:`load_synthetic`."""

SYNTHETIC_VARIANTS: dict[str, tuple[str, ...]] = {k: v for k, (v, _) in _REGISTRY.items()}
"""name -> its variants; the first is the default."""


def load_synthetic(
    name: str,
    variant: str | None = None,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> SyntheticSCM:
    """The synthetic SCM ``name`` in ``variant`` (default: the first of ``SYNTHETIC_VARIANTS``).

    ``seed`` fixes the random parts of the instance (ladder/random weights and graph, the random
    protocol's intervened nodes); it does not seed samples (methods take their own ``seed``).

    Raises:
        DataError: unknown ``name`` or ``variant`` (the message lists the valid ones).
    """
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise DataError(f"unknown synthetic SCM {name!r}; available: {SYNTHETIC_SCMS}")
    variants, build = _REGISTRY[key]
    variant = variants[0] if variant is None else variant
    if variant not in variants:
        raise DataError(f"unknown variant {variant!r} of {key!r}; available: {list(variants)}")
    dev = torch.device(device) if device is not None else None
    return build(variant, seed, dtype, dev)


# --------------------------------------------------------------------------- protocols


def intervention_nodes(scm: SyntheticSCM) -> list[str]:
    """The nodes the SCM's benchmark protocol intervenes on.

    DCM: every node with descendants; ladder: ``x1`` and ``x2`` (the super-nodes holding DCM's
    scalar ``x01`` and ``x04``); random: 3 nodes with descendants drawn with the SCM's ``seed``.
    Causal-NF: the lists of its protocol (e.g. chain-3: ``x1``, ``x2``).
    """
    return list(scm.intervention_nodes)


def intervention_quantiles(
    scm: SyntheticSCM,
    node: str,
    q: Sequence[float],
    *,
    seed: int = 0,
    num_samples: int = 10_000,
) -> Tensor:
    """Quantiles ``q`` of ``node``'s true marginal, per component: ``(len(q), *event)``.

    Estimated from ``num_samples`` observational samples drawn with ``seed``. Causal-NF
    intervenes at ``q = (0.25, 0.5, 0.75)``.
    """
    probs = torch.as_tensor(list(q), dtype=scm.dtype, device=scm.device)
    if probs.dim() != 1 or len(probs) == 0 or bool(((probs < 0) | (probs > 1)).any()):
        raise DataError(f"quantile levels must be a non-empty list in [0, 1], got {list(q)}")
    if node not in scm.event_shapes:
        raise UnknownNodeError(node, scm.nodes, "intervention")
    sample = scm.sample(num_samples, seed)[node]
    return torch.quantile(sample, probs, dim=0)


def intervention_values(
    scm: SyntheticSCM,
    node: str,
    num: int = 20,
    seed: int = 0,
    *,
    low: float = 0.1,
    high: float = 0.9,
    num_samples: int = 10_000,
) -> Tensor:
    """DCM's intervention values: ``num`` values evenly spaced between the ``low`` and ``high``
    quantiles of ``node``'s true marginal (per component for super-nodes): ``(num, *event)``.
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise DataError(f"num must be a positive int, got {num!r}")
    lo, hi = intervention_quantiles(scm, node, (low, high), seed=seed, num_samples=num_samples)
    steps = torch.linspace(0, 1, num, dtype=scm.dtype, device=scm.device)
    steps = steps.reshape(num, *([1] * lo.dim()))
    return lo + steps * (hi - lo)
