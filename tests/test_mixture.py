"""The Gaussian mixture of the extrapolation diagnostics: EM against closed forms, errors."""

import math

import pytest
import torch

import pyro_scm as ps
from pyro_scm.mixture import MAX_COMPONENTS, GaussianMixture, components_for


def _two_clusters(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    pick = torch.rand(n, generator=g) < 0.3
    a = torch.randn(n, 2, generator=g) * 0.3 + torch.tensor([-3.0, 1.0])
    b = torch.randn(n, 2, generator=g) @ torch.tensor([[1.0, 0.0], [0.5, 0.5]]) + 2.0
    return torch.where(pick[:, None], a, b).double(), pick


def test_one_component_is_the_gaussian_of_the_sample_moments():
    x, _ = _two_clusters(500)
    ridge = 1e-3
    mixture = GaussianMixture(2).fit(x, 1, ridge=ridge)
    centred = x - x.mean(0)
    cov = centred.T @ centred / len(x) + ridge * torch.eye(2, dtype=x.dtype)
    truth = torch.distributions.MultivariateNormal(x.mean(0), cov)
    query = torch.randn(50, 2, dtype=x.dtype) * 3
    torch.testing.assert_close(mixture.log_prob(query), truth.log_prob(query))


def test_em_recovers_two_clusters():
    x, pick = _two_clusters()
    mixture = GaussianMixture(2).fit(x, 2, seed=1)
    order = mixture.loc[:, 0].argsort()
    loc, weight = mixture.loc[order], mixture.logits[order].exp()
    torch.testing.assert_close(
        loc, torch.tensor([[-3.0, 1.0], [2.0, 2.0]]).double(), atol=0.06, rtol=0
    )
    assert abs(float(weight[0]) - float(pick.double().mean())) < 0.01


def test_the_density_integrates_to_one():
    x, _ = _two_clusters(2000)
    mixture = GaussianMixture(2).fit(x, 6)
    grid = torch.linspace(-8, 8, 321, dtype=x.dtype)
    points = torch.cartesian_prod(grid, grid)
    step = float(grid[1] - grid[0])
    total = mixture.log_prob(points, chunk=7000).exp().sum() * step**2
    assert abs(float(total) - 1.0) < 1e-3
    assert mixture.log_prob(points[:5].reshape(5, 1, 2)).shape == (5, 1)


def test_duplicated_points_get_a_finite_density():
    x = torch.randint(0, 3, (600, 2), generator=torch.Generator().manual_seed(0)).double()
    mixture = GaussianMixture(2).fit(x, 9)
    assert bool(torch.isfinite(mixture.log_prob(x)).all())
    assert float(mixture.log_prob(torch.tensor([[0.0, 0.0]]).double())) > float(
        mixture.log_prob(torch.tensor([[0.5, 0.5]]).double())
    )


def test_the_number_of_components_follows_the_points_per_parameter():
    assert components_for(3000, 2) == min(MAX_COMPONENTS, 3000 // 60)
    assert components_for(3000, 9) == 3000 // (10 * (1 + 9 + 45))
    assert components_for(10, 5) == 1 and components_for(10**6, 2) == MAX_COMPONENTS


def test_a_fitted_mixture_round_trips_through_its_state_dict():
    x, _ = _two_clusters(800)
    mixture = GaussianMixture(2).fit(x, 4)
    loaded = GaussianMixture(2).double()
    loaded.load_state_dict(mixture.state_dict())
    assert loaded.components == 4
    torch.testing.assert_close(loaded.log_prob(x[:20]), mixture.log_prob(x[:20]))


def test_bad_input_is_refused_before_any_work():
    with pytest.raises(ps.errors.NotFittedError, match="call fit"):
        GaussianMixture(2).log_prob(torch.zeros(3, 2))
    mixture = GaussianMixture(2)
    for bad in (torch.zeros(5, 3), torch.zeros(5)):
        with pytest.raises(ps.errors.ShapeError, match=r"\(n, 2\)"):
            mixture.fit(bad, 2)
    with pytest.raises(ps.errors.NonFiniteError, match="finite"):
        mixture.fit(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    for k in (0, 6):
        with pytest.raises(ps.errors.ArgumentError, match="components"):
            mixture.fit(torch.zeros(5, 2), k)
    mixture.fit(torch.randn(50, 2), 2)
    with pytest.raises(ps.errors.ShapeError, match=r"\(\*batch, 2\)"):
        mixture.log_prob(torch.zeros(4, 1))
    assert math.isfinite(float(mixture.log_prob(torch.zeros(1, 2))))
    assert math.isfinite(
        float(GaussianMixture(2).fit(torch.ones(1, 2), 1).log_prob(torch.ones(1, 2)))
    )
