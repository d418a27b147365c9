"""Metrics against ground truth: distribution distances, counterfactual and effect errors, NLL.

Sections: input handling; distribution distances (MMD); counterfactual and effect errors;
likelihoods. Every metric returns a Python float and validates its inputs with typed errors.
Inputs are tensors or arrays ``(n, d)`` (``(n,)`` is one column), or dicts node -> ``(n, *event)``
flattened to columns in node order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError, MissingNodeError, NonFiniteError, ShapeError, UnknownNodeError

__all__ = [
    "as_matrix",
    "ate_rmse",
    "average_treatment_effect",
    "counterfactual_mse",
    "counterfactual_rmse",
    "heldout_nll",
    "kl_divergence",
    "median_gamma",
    "mmd",
    "rbf_kernel",
]

ArrayLike = Any
NodeValues = Mapping[str, ArrayLike]


# --------------------------------------------------------------------------- input handling


def _tensor(x: ArrayLike, what: str) -> Tensor:
    t = torch.as_tensor(x)
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise DataError(f"{what} must be real numbers, got dtype {t.dtype}")
    t = t.detach().to(torch.float64)
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"{what} contains NaN or infinity")
    return t


def as_matrix(
    values: ArrayLike | NodeValues, nodes: Sequence[str] | None = None, what: str = "input"
) -> Tensor:
    """Float64 matrix ``(n, d)`` from ``(n,)``, ``(n, d)`` or a dict node -> ``(n, *event)``.

    A dict is flattened to columns node by node, in the order of ``nodes`` (default: its keys).
    """
    if isinstance(values, Mapping):
        keys = list(values) if nodes is None else list(nodes)
        if not keys:
            raise DataError(f"{what} has no nodes")
        for node in keys:
            if node not in values:
                raise MissingNodeError(node, what)
        blocks = [_tensor(values[k], f"{what}[{k!r}]") for k in keys]
        for k, b in zip(keys, blocks, strict=True):
            if b.dim() == 0:
                raise ShapeError(f"{what}[{k!r}] is a scalar; expected (n, *event)")
        sizes = {b.shape[0] for b in blocks}
        if len(sizes) != 1:
            raise ShapeError(f"{what} nodes have different numbers of units: {sorted(sizes)}")
        matrix = torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1)
    else:
        if nodes is not None:
            raise DataError(f"nodes={list(nodes)} given but {what} is not a dict")
        matrix = _tensor(values, what)
        if matrix.dim() == 1:
            matrix = matrix[:, None]
        if matrix.dim() != 2:
            raise ShapeError(f"{what} has shape {tuple(matrix.shape)}; expected (n,) or (n, d)")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise DataError(f"{what} is empty: shape {tuple(matrix.shape)}")
    return matrix


def _pair(
    pred: ArrayLike | NodeValues, true: ArrayLike | NodeValues, nodes: Sequence[str] | None
) -> tuple[Tensor, Tensor]:
    """Prediction and truth as matrices of the same shape."""
    if isinstance(true, Mapping) and isinstance(pred, Mapping):
        keys = list(true) if nodes is None else list(nodes)  # extra predicted nodes ignored
        for node in keys:
            if node not in true:
                raise UnknownNodeError(node, list(true), "truth")
        p, t = as_matrix(pred, keys, "prediction"), as_matrix(true, keys, "truth")
    elif isinstance(true, Mapping) or isinstance(pred, Mapping):
        raise DataError("prediction and truth must both be dicts or both be arrays")
    else:
        p, t = as_matrix(pred, nodes, "prediction"), as_matrix(true, nodes, "truth")
    if p.shape != t.shape:
        raise ShapeError(f"prediction has shape {tuple(p.shape)}, truth {tuple(t.shape)}")
    return p, t


# --------------------------------------------------------------------------- distances


def _sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances ``(n, m)``, without the cancellation of ``|x|² + |y|² - 2xy``."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist") ** 2


def median_gamma(x: ArrayLike, y: ArrayLike, *, upper_triangle: bool = False) -> float:
    """``1 / median`` of the positive squared distances between rows of ``x`` and of ``y``.

    ``upper_triangle=True`` keeps only entries ``i <= j`` of the ``(n, m)`` cross-distance matrix,
    as DCM's code does (``tmp - np.tril(tmp, -1)``). With no positive distance (all rows equal),
    returns 1.0: every kernel value is then 1 and the MMD 0 whatever the bandwidth.
    """
    a, b = as_matrix(x, what="x"), as_matrix(y, what="y")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"x has {a.shape[1]} columns, y {b.shape[1]}")
    d = _sq_dists(a, b)
    if upper_triangle:
        d = torch.triu(d)
    positive = d[d > 0].sort().values
    k = positive.numel()
    if k == 0:
        return 1.0
    median = (positive[(k - 1) // 2] + positive[k // 2]) / 2  # numpy's median
    return float(1.0 / median)


def rbf_kernel(x: ArrayLike, y: ArrayLike, gamma: float) -> Tensor:
    """``exp(-gamma ‖x_i - y_j‖²)``: ``(n, m)`` float64."""
    a, b = as_matrix(x, what="x"), as_matrix(y, what="y")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"x has {a.shape[1]} columns, y {b.shape[1]}")
    return torch.exp(-gamma * _sq_dists(a, b))


def mmd(x: ArrayLike, y: ArrayLike, gamma: float | None = None) -> float:
    """Biased squared MMD ``mean(Kxx) + mean(Kyy) - 2 mean(Kxy)`` with an RBF kernel.

    Args:
        x: samples ``(n, d)`` or ``(n,)``.
        y: samples ``(m, d)`` or ``(m,)``.
        gamma: kernel precision; default :func:`median_gamma` of ``x`` and ``y`` (all positive
            cross-distances; pass ``median_gamma(x, y, upper_triangle=True)`` to copy DCM's code).

    Example:
        >>> round(mmd([0.0, 1.0], [0.0, 2.0]), 4)  # gamma = 1: (1 + e^-1)/2 + (1 + e^-4)/2 - ...
        0.3161
    """
    a, b = as_matrix(x, what="x"), as_matrix(y, what="y")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"x has {a.shape[1]} columns, y {b.shape[1]}")
    g = median_gamma(a, b) if gamma is None else float(gamma)
    if not (math.isfinite(g) and g > 0):
        raise DataError(f"gamma must be positive and finite, got {gamma}")
    kxx, kyy, kxy = rbf_kernel(a, a, g), rbf_kernel(b, b, g), rbf_kernel(a, b, g)
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())


# --------------------------------------------------------------------------- counterfactual errors


def counterfactual_mse(
    pred: ArrayLike | NodeValues,
    true: ArrayLike | NodeValues,
    nodes: Sequence[str] | None = None,
    *,
    first_column: bool = False,
) -> float:
    """Mean squared error over units and all columns of ``nodes`` (default: the keys of ``true``).

    ``first_column=True`` scores only the first column, as DCM's published numbers do (its code
    averages only the first descendant's first column).
    """
    p, t = _pair(pred, true, nodes)
    if first_column:
        p, t = p[:, :1], t[:, :1]
    return float(((p - t) ** 2).mean())


def counterfactual_rmse(
    pred: ArrayLike | NodeValues,
    true: ArrayLike | NodeValues,
    nodes: Sequence[str] | None = None,
    *,
    per_unit: bool = True,
) -> float:
    """Counterfactual root-squared error.

    ``per_unit=True`` (Causal-NF's RMSE-CF): the L2 norm over columns of each unit's error,
    averaged over units. ``per_unit=False``: ``sqrt(counterfactual_mse(pred, true, nodes))``.
    """
    p, t = _pair(pred, true, nodes)
    if per_unit:
        return float(((p - t) ** 2).sum(1).sqrt().mean())
    return math.sqrt(float(((p - t) ** 2).mean()))


def average_treatment_effect(
    treated: ArrayLike | NodeValues,
    control: ArrayLike | NodeValues,
    nodes: Sequence[str] | None = None,
) -> Tensor:
    """``mean(treated) - mean(control)`` per column: ``(d,)`` float64 (sample sizes may differ)."""
    a, b = as_matrix(treated, nodes, "treated"), as_matrix(control, nodes, "control")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"treated has {a.shape[1]} columns, control {b.shape[1]}")
    return a.mean(0) - b.mean(0)


def ate_rmse(pred_ate: ArrayLike, true_ate: ArrayLike) -> float:
    """Causal-NF's RMSE-ATE: the L2 norm of the error of an ATE vector ``(d,)``.

    Pass only the non-intervened columns, as its protocol does.
    """
    p, t = _tensor(pred_ate, "pred_ate"), _tensor(true_ate, "true_ate")
    if p.dim() > 1 or p.shape != t.shape or p.numel() == 0:
        raise ShapeError(
            "ATEs must be non-empty vectors of equal length; "
            f"got {tuple(p.shape)}, {tuple(t.shape)}"
        )
    return float(((p - t) ** 2).sum().sqrt())


# --------------------------------------------------------------------------- likelihoods


def _log_probs(values: ArrayLike, what: str) -> Tensor:
    t = torch.as_tensor(values).detach().to(torch.float64)
    if t.dim() != 1 or t.numel() == 0:
        raise ShapeError(f"{what} must be a non-empty vector (n,), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"{what} contains NaN or infinity (a zero or infinite density)")
    return t


def heldout_nll(log_prob_values: ArrayLike) -> float:
    """Mean negative log-likelihood of held-out units from their log-densities ``(n,)``."""
    return float(-_log_probs(log_prob_values, "log_prob_values").mean())


def kl_divergence(log_p_true: ArrayLike, log_q: ArrayLike) -> float:
    """Causal-NF's KL estimate ``mean(log p(x) - log q(x))`` over test units ``x ~ p``: ``(n,)``."""
    p, q = _log_probs(log_p_true, "log_p_true"), _log_probs(log_q, "log_q")
    if p.shape != q.shape:
        raise ShapeError(f"log_p_true has shape {tuple(p.shape)}, log_q {tuple(q.shape)}")
    return float((p - q).mean())
