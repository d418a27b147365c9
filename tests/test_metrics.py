"""Metrics: hand-computed values on tiny inputs, laws (MMD(x, x) = 0, symmetry) and input errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyro_scm.errors import (
    DataError,
    MissingNodeError,
    NonFiniteError,
    ShapeError,
    UnknownNodeError,
)
from pyro_scm.metrics import (
    as_matrix,
    ate_rmse,
    average_treatment_effect,
    counterfactual_mse,
    counterfactual_rmse,
    heldout_nll,
    kl_divergence,
    median_gamma,
    mmd,
    rbf_kernel,
)

E = math.exp

# --------------------------------------------------------------------------- MMD


def test_mmd_by_hand_1d():
    # x = (0, 1), y = (0, 2): squared cross-distances [[0, 4], [1, 1]], positive median 1.
    x, y = np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]])
    assert median_gamma(x, y) == 1.0
    kxx = (1 + E(-1)) / 2  # mean of [[1, e^-1], [e^-1, 1]]
    kyy = (1 + E(-4)) / 2
    kxy = (1 + E(-4) + E(-1) + E(-1)) / 4
    assert mmd(x, y) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12)
    assert mmd([0.0, 1.0], [0.0, 2.0]) == pytest.approx(0.31606, abs=1e-5)  # (n,) accepted


def test_mmd_dcm_upper_triangle_median():
    # DCM keeps entries i <= j of the cross-distance matrix: [[0, 4], [., 1]] -> median of (4, 1).
    x, y = [0.0, 1.0], [0.0, 2.0]
    gamma = median_gamma(x, y, upper_triangle=True)
    assert gamma == pytest.approx(1 / 2.5)
    g = gamma
    expected = (1 + E(-g)) / 2 + (1 + E(-4 * g)) / 2 - (1 + E(-4 * g) + 2 * E(-g)) / 2
    assert mmd(x, y, gamma=gamma) == pytest.approx(expected, rel=1e-12)


def test_mmd_by_hand_2d_with_explicit_gamma():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0]])
    # Kxx mean: (2 + 2 e^{-0.5}) / 4; Kyy: 1; Kxy: (e^{-0.5} + e^{-1}) / 2 with gamma = 0.5
    expected = (2 + 2 * E(-0.5)) / 4 + 1 - (E(-0.5) + E(-1.0))
    assert mmd(x, y, gamma=0.5) == pytest.approx(expected, rel=1e-12)
    k = rbf_kernel(x, y, 0.5)
    assert k.shape == (2, 1) and k[1, 0].item() == pytest.approx(E(-1.0))


def test_mmd_laws():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = torch.randn(200, 3, generator=g)
    z = torch.randn(200, 3, generator=g) + 2.0
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-12)
    assert mmd(x, y) == pytest.approx(mmd(y, x), rel=1e-12)
    assert 0 <= mmd(x, y) < 0.05 < mmd(x, z)
    assert mmd(x[:, :1], y[:, :1]) == pytest.approx(mmd(x[:, 0], y[:, 0]), rel=1e-12)
    assert mmd(np.ones((3, 2)), np.ones((4, 2))) == pytest.approx(0.0, abs=1e-12)  # no bandwidth
    assert median_gamma(np.ones((3, 2)), np.ones((4, 2))) == 1.0


def test_mmd_errors():
    with pytest.raises(ShapeError, match="columns"):
        mmd(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ShapeError):
        mmd(np.zeros((3, 2, 1)), np.zeros((3, 2, 1)))
    with pytest.raises(NonFiniteError):
        mmd([0.0, float("nan")], [0.0, 1.0])
    with pytest.raises(DataError, match="empty"):
        mmd(np.zeros((0, 2)), np.zeros((3, 2)))
    with pytest.raises(DataError, match="gamma"):
        mmd([0.0, 1.0], [0.0, 2.0], gamma=0.0)
    with pytest.raises(DataError, match="real"):
        mmd(torch.zeros(2, dtype=torch.complex64), [0.0, 1.0])


# --------------------------------------------------------------------------- counterfactual errors

PRED = {"x2": torch.tensor([1.0, 2.0]), "x3": torch.tensor([0.0, 0.0])}
TRUE = {"x2": torch.tensor([0.0, 0.0]), "x3": torch.tensor([1.0, 3.0])}


def test_counterfactual_mse_by_hand():
    # squared errors: x2 -> 1, 4; x3 -> 1, 9
    assert counterfactual_mse(PRED, TRUE) == pytest.approx(15 / 4)
    assert counterfactual_mse(PRED, TRUE, first_column=True) == pytest.approx(5 / 2)
    assert counterfactual_mse(PRED, TRUE, ["x3"]) == pytest.approx(10 / 2)
    assert counterfactual_mse(PRED, TRUE, ["x3", "x2"], first_column=True) == pytest.approx(5)
    assert counterfactual_mse({**PRED, "x1": torch.ones(2)}, TRUE) == pytest.approx(15 / 4)
    arrays = counterfactual_mse(np.array([[1.0, 0.0], [2.0, 0.0]]), [[0.0, 1.0], [0.0, 3.0]])
    assert arrays == pytest.approx(15 / 4)


def test_counterfactual_mse_flattens_vector_nodes():
    pred = {"a": torch.tensor([[1.0, 2.0, 3.0]]), "b": torch.tensor([0.0])}
    true = {"a": torch.zeros(1, 3), "b": torch.tensor([4.0])}
    assert counterfactual_mse(pred, true) == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert counterfactual_mse(pred, true, first_column=True) == pytest.approx(1.0)
    assert as_matrix(pred).tolist() == [[1.0, 2.0, 3.0, 0.0]]


def test_counterfactual_rmse_by_hand():
    per_unit = (math.sqrt(1 + 1) + math.sqrt(4 + 9)) / 2  # Causal-NF: L2 per unit, then mean
    assert counterfactual_rmse(PRED, TRUE) == pytest.approx(per_unit)
    assert counterfactual_rmse(PRED, TRUE, per_unit=False) == pytest.approx(math.sqrt(15 / 4))


def test_counterfactual_errors():
    with pytest.raises(MissingNodeError, match="x3"):
        counterfactual_mse({"x2": PRED["x2"]}, TRUE)
    with pytest.raises(UnknownNodeError, match="x9"):
        counterfactual_mse(PRED, TRUE, ["x9"])
    with pytest.raises(ShapeError):
        counterfactual_mse({**PRED, "x3": torch.zeros(3)}, TRUE)
    with pytest.raises(ShapeError, match="units"):
        counterfactual_mse({"x2": torch.zeros(2), "x3": torch.zeros(3)}, TRUE)
    with pytest.raises(DataError, match="both"):
        counterfactual_mse(PRED, torch.zeros(2, 2))
    with pytest.raises(NonFiniteError):
        counterfactual_rmse({**PRED, "x2": torch.tensor([1.0, float("inf")])}, TRUE)
    with pytest.raises(ShapeError, match="scalar"):
        counterfactual_mse({"x2": 1.0}, {"x2": 1.0})


def test_ate_by_hand():
    ate = average_treatment_effect([[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0]])
    assert ate.tolist() == [2.0, 3.0]
    assert ate_rmse(ate, [2.0, 0.0]) == pytest.approx(3.0)
    assert ate_rmse([1.0, 1.0], [0.0, 0.0]) == pytest.approx(math.sqrt(2))
    with pytest.raises(ShapeError):
        ate_rmse([1.0, 2.0], [1.0])
    with pytest.raises(ShapeError, match="columns"):
        average_treatment_effect([[1.0, 2.0]], [[1.0]])


# --------------------------------------------------------------------------- likelihoods


def test_nll_and_kl_by_hand():
    assert heldout_nll(torch.tensor([-1.0, -3.0])) == pytest.approx(2.0)
    assert kl_divergence([0.0, -1.0], [-1.0, -1.0]) == pytest.approx(0.5)
    with pytest.raises(NonFiniteError, match="density"):
        heldout_nll([-1.0, float("-inf")])
    with pytest.raises(ShapeError):
        heldout_nll(np.zeros((2, 2)))
    with pytest.raises(ShapeError):
        kl_divergence([0.0], [0.0, 1.0])
