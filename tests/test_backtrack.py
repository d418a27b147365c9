"""Backtracking counterfactuals: DESIGN.md laws 5-7, solvers, distances, samplers and errors."""

import pytest
import torch
from scms import Flows, Heteroscedastic, Linear

import pyro_scm as ps
from pyro_scm import distances
from pyro_scm.infer import BacktrackingWarning, ReducedForm, solve_gradient, solve_linearized

A, B = 1.5, 0.5  # y = A x + B u_y in scms.Linear


def _factual(scm, n, device, seed=0):
    torch.manual_seed(seed)
    sample = scm.sample(n)
    return {k: v[:, 0].to(device) for k, v in sample.values.items()}


@pytest.mark.parametrize("model", [Linear, Flows])
def test_antecedent_equal_to_factual_returns_the_factual(model, device):
    scm = model().to(device)
    f = _factual(scm, 16, device)
    node = scm.nodes[-2]
    bt = scm.backtrack(f, {node: f[node]})
    assert bt.kind == "backtracking" and bt.num_samples == 1
    for k, v in f.items():
        torch.testing.assert_close(bt[k][0], v, atol=1e-4, rtol=1e-4)
    assert torch.all(bt.sample_stats["converged"] == 1)


def test_non_ancestor_latents_stay_at_the_factual(device):
    scm = Flows().to(device)
    f = _factual(scm, 20, device)
    u_f = scm.abduct(f)
    bt = scm.backtrack(f, {"b": f["b"] + 0.5})
    assert torch.equal(bt.noise["c"][0], u_f["c"]) and torch.equal(bt.noise["d"][0], u_f["d"])
    assert not torch.allclose(bt.noise["a"][0], u_f["a"])  # the ancestor moves
    torch.testing.assert_close(bt["b"][0], f["b"] + 0.5, atol=1e-4, rtol=0)
    assert bt.sample_stats["violation"].max() < 1e-4
    # c and d are recomputed downstream with their factual noise
    assert not torch.allclose(bt["c"][0], f["c"])


@pytest.mark.parametrize("model,node", [(Flows, "a"), (Heteroscedastic, "x"), (Linear, "x")])
def test_root_antecedent_equals_the_interventional_counterfactual(model, node, device):
    scm = model().to(device)
    f = _factual(scm, 25, device)
    value = torch.linspace(-1.5, 1.5, 25, device=device)
    bt = scm.backtrack(f, {node: value})
    cf = scm.counterfactual(f, do={node: value})
    for k in f:
        torch.testing.assert_close(bt[k], cf[k], atol=2e-4, rtol=1e-4)


def test_linear_mode_matches_the_closed_form(device):
    scm = Linear().to(device)
    f = _factual(scm, 50, device)
    u = scm.abduct(f)
    y_star = torch.linspace(-2, 2, 50, device=device)
    bt = scm.backtrack(f, {"y": y_star})
    a = torch.tensor([A, B], device=device)
    u_f = torch.stack([u["x"], u["y"]], -1)
    expected = u_f + (y_star - u_f @ a)[:, None] * a / a.square().sum()
    torch.testing.assert_close(bt.noise["x"][0], expected[:, 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(bt.noise["y"][0], expected[:, 1], atol=1e-4, rtol=0)
    assert torch.equal(bt.noise["z"][0], u["z"])
    assert bt.sample_stats["iterations"].max() <= 3  # linear: one exact step, one to confirm


def test_weighted_distance_moves_the_cheaper_latent(device):
    scm = Linear().to(device)
    f = _factual(scm, 10, device)
    u = scm.abduct(f)
    stiff_x = scm.backtrack(f, {"y": 2.0}, distance=distances.SquaredL2(weights={"x": 100.0}))
    free_x = scm.backtrack(f, {"y": 2.0})
    move = lambda bt: (bt.noise["x"][0] - u["x"]).abs().mean()  # noqa: E731
    # Δu ∝ W⁻¹ a: Δx = (A/100) r / (A²/100 + B²) against A r / (A² + B²)
    ratio = (A / 100 / (A**2 / 100 + B**2)) / (A / (A**2 + B**2))
    assert abs(move(stiff_x) / move(free_x) - ratio) < 1e-3


def _gaussian_closed_form(u_x, u_y, y_star, sigma, prior):
    """u* ~ N(u_F, ½ I) [N(0, I)] conditioned on A u_x + B u_y = y* observed with noise σ."""
    prec = 3.0 if prior else 2.0
    m0 = torch.tensor([u_x, u_y]) * 2 / prec
    s = torch.eye(2) / prec
    a = torch.tensor([A, B])
    k = s @ a / (a @ s @ a + sigma**2)
    return m0 + k * (y_star - a @ m0), s - torch.outer(k, a @ s)


FACT = {"x": [0.3], "y": [0.2], "z": [-0.1]}


# Many short chains from the mode: each chain mixes slowly along the constraint (R-hat > 1.05
# is reported as a SamplerWarning) while the ensemble of chains matches the closed form.
# Unadjusted Langevin is biased: a few of its 12000 draws miss y* by > 5σ (reported).
@pytest.mark.filterwarnings("ignore::pyro_scm.infer.SamplerWarning")
@pytest.mark.filterwarnings("ignore:.*misses the antecedent by more than")
@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("method", ["mala", "langevin"])
def test_langevin_samples_match_the_linear_gaussian_closed_form(method, prior):
    torch.manual_seed(0)
    scm = Linear()
    u = scm.abduct({k: torch.tensor(v) for k, v in FACT.items()})
    sigma = 0.1
    kw = {"step_size": 0.01} if method == "mala" else {"step_size": 0.004}
    bt = scm.backtrack(
        FACT,
        {"y": 1.2},
        method=method,
        sigma=sigma,
        prior=prior,
        num_chains=300,
        num_samples=40,
        warmup=300,
        **kw,
    )
    assert bt.num_samples == 12000 and bt.num_chains == 300
    draws = torch.stack([bt.noise["x"][:, 0], bt.noise["y"][:, 0]], -1)
    mean, cov = _gaussian_closed_form(u["x"].item(), u["y"].item(), 1.2, sigma, prior)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.04, rtol=0)
    # the σ -> 0 closed form (the exact constraint) is within O(σ²) of it
    mean0, cov0 = _gaussian_closed_form(u["x"].item(), u["y"].item(), 1.2, 0.0, prior)
    torch.testing.assert_close(draws.mean(0), mean0, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov0, atol=0.05, rtol=0)
    # the non-ancestor latent is drawn from P_B directly: N(u_F, ½) (times the prior)
    var_z = 1 / 3 if prior else 1 / 2
    assert abs(bt.noise["z"].var().item() - var_z) < 0.03
    # values are F(u*): z follows its equation with the sampled noise
    z = -0.8 * bt["y"] + 0.7 * bt["x"] + 0.3 * bt.noise["z"]
    torch.testing.assert_close(bt["z"], z)
    if method == "mala":
        assert 0.4 < bt.sample_stats["accept_prob"].mean() < 0.75


def test_nuts_matches_the_closed_form_and_goes_to_arviz():
    torch.manual_seed(1)
    scm = Linear()
    u = scm.abduct({k: torch.tensor(v) for k, v in FACT.items()})
    bt = scm.backtrack(
        FACT,
        {"y": 1.2},
        method="nuts",
        sigma=0.2,
        num_chains=4,
        num_samples=150,
        warmup=75,
    )
    draws = torch.stack([bt.noise["x"][:, 0], bt.noise["y"][:, 0]], -1)
    mean, cov = _gaussian_closed_form(u["x"].item(), u["y"].item(), 1.2, 0.2, False)
    torch.testing.assert_close(draws.mean(0), mean, atol=0.12, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), cov, atol=0.08, rtol=0)
    assert bt.sample_stats["diverging"].sum() == 0
    idata = bt.to_arviz()
    assert {"accept_prob", "step_size", "diverging"} <= set(idata.sample_stats.data_vars)
    assert "noise_x" in idata.posterior.data_vars


def test_gradient_solvers_agree_with_the_linearised_solver():
    scm = Linear()
    f = _factual(scm, 6, "cpu", seed=3)
    rf = ReducedForm(scm, f, {"y": torch.linspace(-1, 1, 6)})
    lin = solve_linearized(rf, distances.SquaredL2())
    lbfgs = solve_gradient(rf, distances.SquaredL2(), optimizer="lbfgs", max_iter=100)
    torch.testing.assert_close(lbfgs.z, lin.z, atol=1e-3, rtol=0)
    # on a non-linear model the linearised solver converges in far fewer steps than Adam
    scm = Flows()
    f = _factual(scm, 6, "cpu", seed=3)
    rf = ReducedForm(scm, f, {"c": torch.tensor([0.5, -0.3]).expand(6, 2)})
    lin = solve_linearized(rf, distances.SquaredL2())
    assert lin.converged.all() and lin.violation.max() < 1e-4
    adam = solve_gradient(rf, distances.SquaredL2(), optimizer="adam", max_iter=40)
    assert not adam.converged.any() and (lin.iterations < 40).sum() >= 4


def test_sparse_moves_at_most_k_nodes_and_l1_and_callable_distances(device):
    scm = Flows().to(device)
    f = _factual(scm, 8, device)
    u = scm.abduct(f)
    target = {"c": f["c"] + 0.4}
    bt = scm.backtrack(f, target, sparse=1)
    moved = torch.stack(
        [(bt.noise[n][0] - u[n]).reshape(8, -1).abs().amax(-1) > 1e-6 for n in "abc"], -1
    )
    assert torch.all(moved.sum(-1) <= 1)
    torch.testing.assert_close(bt["c"][0], target["c"], atol=1e-4, rtol=0)
    l1 = scm.backtrack(f, target, distance=distances.L1())
    torch.testing.assert_close(l1["c"][0], target["c"], atol=1e-4, rtol=0)
    custom = scm.backtrack(
        f, target, distance=lambda a, b: (a - b).abs() ** 3, solver="lbfgs", max_iter=200, tol=1e-3
    )
    torch.testing.assert_close(custom["c"][0], target["c"], atol=2e-3, rtol=0)


def test_unmet_antecedent_is_reported():
    scm = Flows()
    f = _factual(scm, 4, "cpu")
    with pytest.warns(BacktrackingWarning, match="did not meet the antecedent"):
        bt = scm.backtrack(f, {"d": f["d"] + 3.0}, max_iter=1)
    assert bt.sample_stats["converged"].min() == 0
    assert bt.sample_stats["violation"].max() > 1e-4


def test_errors():
    scm = Linear()
    f = _factual(scm, 5, "cpu")
    with pytest.raises(ps.errors.UnknownNodeError, match="'w'"):
        scm.backtrack(f, {"w": 1.0})
    with pytest.raises(ps.errors.ShapeError, match="antecedent on 'y'"):
        scm.backtrack(f, {"y": torch.zeros(3)})
    with pytest.raises(ps.errors.NonFiniteError, match="'y'"):
        scm.backtrack(f, {"y": float("nan")})
    with pytest.raises(ps.errors.NonFiniteError, match="'x'"):
        scm.backtrack({**f, "x": f["x"] * float("nan")}, {"y": 0.0})
    with pytest.raises(ps.errors.ArgumentError, match="unknown backtracking method"):
        scm.backtrack(f, {"y": 0.0}, method="gibbs")
    with pytest.raises(ValueError, match="unknown solver"):
        scm.backtrack(f, {"y": 0.0}, solver="sgd")
    with pytest.raises(ValueError, match="non-empty"):
        scm.backtrack(f, {})
    with pytest.raises(ValueError, match="quadratic weights"):
        scm.backtrack(f, {"y": 0.0}, distance=lambda a, b: (a - b) ** 2, solver="linearized")
    with pytest.raises(TypeError, match="distance must be"):
        scm.backtrack(f, {"y": 0.0}, distance=3)
    with pytest.raises(ValueError, match="sparse"):
        scm.backtrack(f, {"y": 0.0}, sparse=0)


def test_callable_antecedent_and_result_layout(device):
    scm = Linear().to(device)
    f = _factual(scm, 7, device)
    bt = scm.backtrack(f, {"y": lambda y: y + 1.0})
    torch.testing.assert_close(bt["y"][0], f["y"] + 1.0, atol=1e-4, rtol=0)
    torch.testing.assert_close(bt.interventions["y"], f["y"] + 1.0)
    assert bt.noise["x"].shape == (1, 7) and bt.sample_stats["iterations"].shape == (1, 7)
    assert bt.factual["y"].device.type == torch.device(device).type


def test_deepbc_metrics():
    from pyro_scm.metrics.backtracking import causal_metric, obs_metric, plausible_metric

    scm = Linear()
    f = _factual(scm, 9, "cpu")
    bt = scm.backtrack(f, {"y": f["y"] + 1.0})
    cf = {k: v[0] for k, v in bt.values.items()}
    u, u_cf = scm.abduct(f), scm.abduct(cf)
    expected = sum((u_cf[n] - u[n]).square() for n in "xyz")
    torch.testing.assert_close(causal_metric(scm, cf, f), expected)
    torch.testing.assert_close(
        obs_metric(cf, f, kind="absolute"), sum((cf[n] - f[n]).abs() for n in "xyz")
    )
    assert torch.all(causal_metric(scm, f, f) == 0) and torch.all(obs_metric(f, f) == 0)
    nll = plausible_metric(scm, f)
    lp = torch.distributions.Normal(0, 1).log_prob(f["x"])
    lp = lp + torch.distributions.Normal(A * f["x"], B).log_prob(f["y"])
    lp = lp + torch.distributions.Normal(-0.8 * f["y"] + 0.7 * f["x"], 0.3).log_prob(f["z"])
    torch.testing.assert_close(nll, -lp)
    with pytest.raises(ValueError, match="unknown distance"):
        obs_metric(cf, f, kind="cosine")
